//! The drill's shoppers: workers that browse, register, log in, read and update their profile
//! and place orders through the proxy the whole time, and the ledger of every write a client was
//! told succeeded (or failed), with counts per kind of request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

/// A kind of request the shoppers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Browse,
    Product,
    Me,
    /// The caller's orders (a read of the orders domain).
    History,
    Profile,
    Register,
    Login,
    Order,
}

impl Kind {
    /// Whether the request only reads: a 5xx on one is a failure of the migration, as the
    /// proxy may always serve it from the monolith. (A write the service owns fails while the
    /// service is down: it must not reach the monolith.)
    pub fn read_only(self) -> bool {
        matches!(
            self,
            Kind::Browse | Kind::Product | Kind::Me | Kind::History
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Browse => "browse",
            Kind::Product => "product",
            Kind::Me => "me",
            Kind::History => "history",
            Kind::Profile => "profile",
            Kind::Register => "register",
            Kind::Login => "login",
            Kind::Order => "order",
        }
    }
}

/// How one kind of request went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    /// 4xx answers (a declined card, an expired token: reported to the client as such).
    pub client_errors: u64,
    pub server_errors: u64,
    /// No answer at all.
    pub transport_errors: u64,
    /// How many of each error status.
    pub statuses: BTreeMap<u16, u64>,
}

/// A registration the shop acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub email: String,
    pub id: u64,
}

/// What the drill knows a client was told.
#[derive(Debug, Default)]
pub struct Ledger {
    pub counts: BTreeMap<Kind, Counts>,
    pub registered: Vec<Registered>,
    /// User id → the last profile name acknowledged, or `None` once a later update failed (it
    /// may or may not have landed, and its client was told it failed).
    pub profiles: BTreeMap<u64, Option<String>>,
    pub orders: Vec<u64>,
    /// Writes answered with an error, as `kind status`.
    pub failed_writes: Vec<String>,
}

/// The shoppers' settings.
#[derive(Debug, Clone)]
pub struct Shoppers {
    pub proxy: String,
    pub workers: u32,
    /// Pause between one worker's requests.
    pub pace: Duration,
    /// A tag making this run's e-mails unique.
    pub run: String,
    pub products: u64,
}

/// A tiny deterministic generator per worker (no shared state, no extra crate).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Account {
    email: String,
    id: u64,
    token: Option<String>,
}

/// Starts the workers; they stop when `running` turns false.
pub fn start(
    s: Shoppers,
    ledger: Arc<Mutex<Ledger>>,
    running: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..s.workers)
        .map(|w| {
            let (s, ledger, running) = (s.clone(), ledger.clone(), running.clone());
            tokio::spawn(async move { worker(w, s, ledger, running).await })
        })
        .collect()
}

const PASSWORD: &str = "drill-password-1";

async fn worker(w: u32, s: Shoppers, ledger: Arc<Mutex<Ledger>>, running: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ ((u64::from(w) + 1) * 0x1000_0001));
    let mut accounts: Vec<Account> = Vec::new();
    let mut n = 0u64;
    while running.load(Ordering::SeqCst) {
        n += 1;
        let roll = dice.roll(100);
        let kind = if accounts.is_empty() || roll < 8 {
            Kind::Register
        } else if roll < 35 {
            Kind::Browse
        } else if roll < 50 {
            Kind::Product
        } else if roll < 60 {
            Kind::Me
        } else if roll < 70 {
            Kind::History
        } else if roll < 85 {
            Kind::Profile
        } else if roll < 92 {
            Kind::Login
        } else {
            Kind::Order
        };
        let pick = dice.roll(accounts.len().max(1) as u64) as usize;
        let product = 1 + dice.roll(s.products);
        match kind {
            Kind::Register => {
                let email = format!("drill-{}-{w}-{n}@example.com", s.run);
                let body =
                    json!({"email": email, "password": PASSWORD, "name": format!("Drill {w}-{n}")});
                let (status, v) = send(
                    &ledger,
                    kind,
                    http.post(format!("{}/api/users/register", s.proxy))
                        .json(&body),
                )
                .await;
                if status == Some(201) {
                    let id = v["id"].as_u64().unwrap_or(0);
                    ledger.lock().expect("ledger").registered.push(Registered {
                        email: email.clone(),
                        id,
                    });
                    accounts.push(Account {
                        email,
                        id,
                        token: None,
                    });
                }
            }
            Kind::Browse => {
                let url = format!(
                    "{}/api/products?per_page=5&page={}",
                    s.proxy,
                    1 + dice.roll(5)
                );
                send(&ledger, kind, http.get(url)).await;
            }
            Kind::Product => {
                let url = format!("{}/api/products/{product}", s.proxy);
                send(&ledger, kind, http.get(url)).await;
            }
            Kind::Login => {
                let a = &mut accounts[pick];
                login(&http, &ledger, &s.proxy, a).await;
            }
            Kind::Me | Kind::History | Kind::Profile | Kind::Order => {
                let a = &mut accounts[pick];
                if a.token.is_none() && !login(&http, &ledger, &s.proxy, a).await {
                    continue;
                }
                // A token from one side may not be taken by the other: log in again once.
                for attempt in 0..2 {
                    let token = a.token.clone().unwrap_or_default();
                    let name = format!("Drill {w} update {n}");
                    let req = match kind {
                        Kind::Me => http.get(format!("{}/api/users/me", s.proxy)),
                        Kind::History => http.get(format!("{}/api/orders?per_page=5", s.proxy)),
                        Kind::Profile => http
                            .put(format!("{}/api/users/me", s.proxy))
                            .json(&json!({"name": name})),
                        _ => http.post(format!("{}/api/orders", s.proxy)).json(&json!({
                            "items": [{"product_id": product, "quantity": 1}],
                            "payment_token": "tok_visa",
                            "shipping_address": "1 Drill Street",
                        })),
                    };
                    let (status, v) = send(&ledger, kind, req.bearer_auth(token)).await;
                    if status == Some(401) && attempt == 0 {
                        a.token = None;
                        if !login(&http, &ledger, &s.proxy, a).await {
                            break;
                        }
                        continue;
                    }
                    let mut l = ledger.lock().expect("ledger");
                    match (kind, status) {
                        (Kind::Profile, Some(200)) => {
                            l.profiles.insert(a.id, Some(name));
                        }
                        (Kind::Profile, Some(s)) if s >= 500 => {
                            l.profiles.insert(a.id, None);
                        }
                        (Kind::Profile, None) => {
                            l.profiles.insert(a.id, None);
                        }
                        (Kind::Order, Some(201)) => {
                            if let Some(id) = v["id"].as_u64() {
                                l.orders.push(id);
                            }
                        }
                        _ => {}
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(s.pace).await;
    }
}

async fn login(
    http: &reqwest::Client,
    ledger: &Mutex<Ledger>,
    proxy: &str,
    a: &mut Account,
) -> bool {
    let body = json!({"email": a.email, "password": PASSWORD});
    let (status, v) = send(
        ledger,
        Kind::Login,
        http.post(format!("{proxy}/api/users/login")).json(&body),
    )
    .await;
    a.token = v["token"].as_str().map(str::to_string);
    status == Some(200) && a.token.is_some()
}

/// Sends one request, counts how it went; its status (none: no answer) and JSON body.
async fn send(
    ledger: &Mutex<Ledger>,
    kind: Kind,
    req: reqwest::RequestBuilder,
) -> (Option<u16>, serde_json::Value) {
    let answer = req.send().await;
    let (status, body) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            (
                Some(status),
                r.json().await.unwrap_or(serde_json::Value::Null),
            )
        }
        Err(_) => (None, serde_json::Value::Null),
    };
    let mut l = ledger.lock().expect("ledger");
    let c = l.counts.entry(kind).or_default();
    c.sent += 1;
    if let Some(s) = status.filter(|s| *s >= 400) {
        *c.statuses.entry(s).or_default() += 1;
    }
    match status {
        Some(s) if s < 300 => c.ok += 1,
        Some(s) if s < 500 => c.client_errors += 1,
        Some(_) => c.server_errors += 1,
        None => c.transport_errors += 1,
    }
    let write = matches!(kind, Kind::Register | Kind::Profile | Kind::Order);
    if write && status.is_none_or(|s| s >= 500) {
        l.failed_writes.push(format!(
            "{} {}",
            kind.name(),
            status.map_or("no answer".to_string(), |s| s.to_string())
        ));
    }
    (status, body)
}
