//! The control page end to end in headless Chromium (driven over the DevTools protocol): sign in,
//! read the routes, flip one with a confirmation and a reason, see real traffic move and the
//! change in the audit trail; a viewer's click is refused on the page.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::release::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::{ProcessGuard, TempDir};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One browser tab under remote control.
struct Browser {
    socket: Socket,
    next_id: u64,
    _process: ProcessGuard,
    _dir: TempDir,
}

impl Browser {
    async fn start() -> Self {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is not installed: `./dev test` installs Debian's chromium package");
        let dir = TempDir::new("chromium").unwrap();
        let profile = dir.path().join("profile");
        let process = ProcessGuard::spawn_with_env(
            Path::new(binary),
            &[
                "--headless".into(),
                "--no-sandbox".into(),
                "--disable-gpu".into(),
                "--disable-background-networking".into(),
                "--disable-dev-shm-usage".into(),
                "--no-first-run".into(),
                "--remote-debugging-port=0".into(),
                format!("--user-data-dir={}", profile.display()),
                "about:blank".into(),
            ],
            &[],
            &dir.path().join("chromium.pid"),
            &dir.path().join("chromium.log"),
        )
        .unwrap();
        // Chromium writes its DevTools port into the profile once it listens.
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
                && let Some(port) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromium did not start: {}",
                std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        Self {
            socket,
            next_id: 1,
            _process: process,
            _dir: dir,
        }
    }

    /// Sends a DevTools command and returns its result.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("devtools answered in time")
                .expect("devtools socket open")
                .unwrap();
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy.
    async fn until(&mut self, what: &str, expression: &str) {
        let started = Instant::now();
        loop {
            let v = self.eval(expression).await;
            if v.as_bool() == Some(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "page never showed {what}; body: {}",
                self.eval("document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sign_in(&mut self, admin_url: &str, token: &str) {
        self.command("Page.navigate", json!({"url": admin_url}))
            .await;
        self.until(
            "the sign-in box",
            "document.querySelector('#token') !== null && document.readyState === 'complete'",
        )
        .await;
        self.eval(&format!(
            "document.querySelector('#token').value = {}; document.querySelector('#login').click(); true",
            Value::from(token)
        ))
        .await;
    }

    /// Clicks a route's mode button, types the reason, confirms.
    async fn flip(&mut self, route: &str, mode: &str, reason: &str) {
        self.eval(&format!(
            "document.querySelector('button[data-route=\"{route}\"][data-mode=\"{mode}\"]').click(); true"
        ))
        .await;
        self.until(
            "the confirmation",
            "document.querySelector('#confirm-dialog').open",
        )
        .await;
        self.eval(&format!(
            "document.querySelector('#confirm-reason').value = {}; document.querySelector('#confirm-ok').click(); true",
            Value::from(reason)
        ))
        .await;
    }
}

#[tokio::test]
async fn a_release_manager_flips_a_route_from_the_page() {
    let s = stack("release_page", "").await;
    let p = &s.proxy;
    let mut browser = Browser::start().await;

    // A wrong token is refused on the page.
    browser
        .sign_in(&p.admin_url("/ui"), "not-a-token-at-all-000")
        .await;
    browser
        .until(
            "the refusal",
            "document.querySelector('#error').textContent.includes('not valid')",
        )
        .await;

    // A viewer sees the routes, but a change is refused and nothing moves.
    browser.sign_in(&p.admin_url("/ui"), VIEWER).await;
    browser
        .until("the routes", "document.body.dataset.loaded === 'true' && !!document.querySelector('[data-mode-of=\"orders\"]')")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#status').textContent")
            .await
            .as_str()
            .map(|s| s.contains("victor (viewer)")),
        Some(true)
    );
    browser
        .until(
            "read-only buttons",
            "[...document.querySelectorAll('button[data-route], button[data-kill]')].every(b => b.disabled)",
        )
        .await;
    assert_eq!(served_by(p, "/api/orders/1", "u1").await, "monolith");

    // An operator moves orders to the service: the page, the traffic and the audit agree.
    browser.eval("sessionStorage.clear(); true").await;
    browser.sign_in(&p.admin_url("/ui"), OPERATOR).await;
    browser
        .until(
            "the operator view",
            "document.querySelector('#status').textContent.includes('alice (operator)')",
        )
        .await;
    for i in 0..20 {
        served_by(p, "/api/orders/1", &format!("warm-{i}")).await;
    }
    browser
        .flip("orders", "service", "order-service passed shadow")
        .await;
    let started = Instant::now();
    while served_by(p, "/api/orders/1", "u1").await != "order" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "traffic never moved:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    browser
        .until(
            "the new mode",
            "document.querySelector('[data-mode-of=\"orders\"]').textContent === 'service'",
        )
        .await;
    browser
        .until("the audit row", "[...document.querySelectorAll('#audit tbody tr')].some(r => r.innerText.includes('order-service passed shadow') && r.innerText.includes('page') && r.innerText.includes('alice'))")
        .await;
    // The live figures are drawn (a sparkline per side).
    browser
        .until(
            "sparklines",
            "document.querySelectorAll('[data-route-row=\"orders\"] svg.spark').length === 2",
        )
        .await;
    let (_, audit) = call(
        p,
        reqwest::Method::GET,
        "/admin/audit?route=orders&limit=1",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(audit["entries"][0]["source"], "page", "{audit}");
    assert_eq!(audit["entries"][0]["after"]["mode"], "service");

    // A canary with a percentage from the dialog.
    browser
        .eval("document.querySelector('#confirm-percent').value = '25'; true")
        .await;
    browser.flip("users", "canary", "quarter of users").await;
    browser
        .until(
            "the canary",
            "document.querySelector('[data-mode-of=\"users\"]').textContent === 'canary 25%'",
        )
        .await;
}

/// A workspace binary next to this test's folder.
fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} is missing: cargo build --workspace",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_phases_view_shows_each_gate_and_a_refused_move() {
    // The phase controller behind the proxy's /admin/phases, on a domain whose streams do not
    // run: its next move's gate fails, and says why.
    let dir = TempDir::new("phases-page").unwrap();
    let domains = dir.path().join("domains.toml");
    std::fs::write(
        &domains,
        "monolith_schema = \"shop\"\nmonolith_upstream = \"monolith\"\n\n[[domains]]\nname = \"users\"\n\
         service = \"user\"\nflag = \"route.users\"\ntables = { users = \"user_svc.users\" }\n\n\
         [[domains.routes]]\nname = \"users\"\nmethods = [\"GET\"]\npath = \"/api/users/{id}\"\n",
    )
    .unwrap();
    let api_port = testkit::free_port();
    let api_token = "controller-api-token-0123456789";
    let s = stack(
        "phases_page",
        &format!(
            "\n[phases]\ncontroller = \"http://127.0.0.1:{api_port}\"\ntoken = \"{api_token}\"\n"
        ),
    )
    .await;
    let p = &s.proxy;
    let config = dir.path().join("strangler.toml");
    std::fs::write(
        &config,
        format!(
            "proxies = [\"{}\"]\nadmin_token = \"{OPERATOR}\"\napi_token = \"{api_token}\"\n\
             monolith_url = \"{}\"\nservices_url = \"{}\"\n\
             to_services_stream = \"page-m2s\"\nto_monolith_stream = \"page-s2m\"\n\n[gates]\nmax_lag_ms = 300\n",
            p.admin_url("").trim_end_matches('/'),
            testkit::monolith_server().root_url(),
            testkit::services_server().root_url()
        ),
    )
    .unwrap();
    let _controller = ProcessGuard::spawn(
        &workspace_binary("strangler"),
        &[
            "--domains".into(),
            domains.display().to_string(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
            "--database-url".into(),
            s.db_url.clone(),
            "--listen".into(),
            format!("127.0.0.1:{api_port}"),
        ],
        &dir.path().join("serve.pid"),
        &dir.path().join("serve.log"),
    )
    .unwrap();

    let mut browser = Browser::start().await;
    // A viewer sees the phase and the gate's figure, with no button to press.
    browser.sign_in(&p.admin_url("/ui"), VIEWER).await;
    browser
        .until(
            "the users phase",
            "document.querySelector('[data-phase-of=\"users\"]')?.textContent === 'monolith'",
        )
        .await;
    browser
        .until(
            "the gate's figure",
            "document.querySelector('[data-phase-row=\"users\"] .gate.fail[data-gate=\"replication-lag\"]')?.textContent.includes('page-m2s had not applied')",
        )
        .await;
    browser
        .until(
            "disabled phase buttons",
            "[...document.querySelectorAll('button[data-phase-domain]')].every(b => b.disabled)",
        )
        .await;

    // An operator presses advance: the controller refuses, naming the gate, and nothing moves.
    browser.eval("sessionStorage.clear(); true").await;
    browser.sign_in(&p.admin_url("/ui"), OPERATOR).await;
    browser
        .until(
            "the advance button",
            "!!document.querySelector('button[data-phase-domain=\"users\"][data-phase-way=\"advance\"]:not([disabled])')",
        )
        .await;
    browser
        .eval("document.querySelector('button[data-phase-domain=\"users\"][data-phase-way=\"advance\"]').click(); true")
        .await;
    browser
        .until(
            "the confirmation",
            "document.querySelector('#confirm-dialog').open",
        )
        .await;
    browser
        .eval("document.querySelector('#confirm-reason').value = 'start the users migration'; document.querySelector('#confirm-ok').click(); true")
        .await;
    browser
        .until(
            "the refusal",
            "document.querySelector('#error').textContent.includes('users cannot go to backfilling: replication-lag')",
        )
        .await;
    let (status, phases) = call(p, reqwest::Method::GET, "/admin/phases", Some(VIEWER), None).await;
    assert_eq!(status, 200, "{phases}");
    assert_eq!(phases["domains"][0]["phase"], "monolith", "{phases}");
    assert_eq!(phases["domains"][0]["history"], json!([]), "{phases}");
}
