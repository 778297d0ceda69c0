//! Deterministic data generator for the `shop` schema: the same `--seed` gives the same rows, in
//! chunks written by parallel connections with bulk multi-row INSERTs; reports rows per second.
//! User 1 is `admin@example.com`; customers are `user<ID>@example.com`; all share one password.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Pool, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::money::format_cents;

/// `legacy-monolith seed` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedOptions {
    /// Customers to create (user 1, the administrator, comes on top).
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Products to create, each with an inventory row.
    #[arg(long, default_value_t = 200)]
    pub products: u64,
    /// Historical orders to create, each with 1–4 items, a payment and a notification.
    #[arg(long, default_value_t = 2000)]
    pub orders: u64,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 1000)]
    pub batch: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    pub connections: u64,
    /// Password of every seeded user.
    #[arg(long, default_value = "password123")]
    pub password: String,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            users: 1000,
            products: 200,
            orders: 2000,
            seed: 42,
            batch: 1000,
            connections: 4,
            password: "password123".into(),
        }
    }
}

/// What was written, and how fast.
#[derive(Debug, Default)]
pub struct SeedReport {
    /// (tables written together, rows, time taken).
    pub tables: Vec<(&'static str, u64, Duration)>,
    pub elapsed: Duration,
}

impl SeedReport {
    /// Rows written in all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (table, rows, took) in &self.tables {
            writeln!(
                f,
                "{table:<44} {rows:>10} rows in {:>7.2}s ({:>9.0} rows/s)",
                took.as_secs_f64(),
                *rows as f64 / took.as_secs_f64().max(1e-9)
            )?;
        }
        write!(
            f,
            "{:<44} {:>10} rows in {:>7.2}s ({:>9.0} rows/s)",
            "total",
            self.rows(),
            self.elapsed.as_secs_f64(),
            self.rows() as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("table `{0}` already has rows; seed an empty schema (drop and re-create the database)")]
    NotEmpty(&'static str),
    #[error("invalid seed options: {0}")]
    Options(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] mysql_async::Error),
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Sophie",
    "Niklaus",
    "Hedy",
    "John",
    "Katherine",
    "Donald",
    "Joan",
    "Leslie",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Wilson",
    "Wirth",
    "Lamarr",
    "McCarthy",
    "Johnson",
    "Knuth",
    "Clarke",
    "Lamport",
];
const CITIES: &[&str] = &[
    "Berlin", "Lisbon", "Austin", "Osaka", "Nairobi", "Toronto", "Lyon", "Perth",
];
const ADJ: &[&str] = &[
    "Classic",
    "Modern",
    "Rugged",
    "Compact",
    "Deluxe",
    "Vintage",
    "Smart",
    "Organic",
    "Wireless",
    "Ergonomic",
    "Portable",
    "Premium",
];
const MATERIAL: &[&str] = &[
    "Cotton", "Steel", "Bamboo", "Leather", "Ceramic", "Wool", "Oak", "Carbon", "Glass", "Linen",
];
const NOUN: &[&str] = &[
    "Backpack",
    "Kettle",
    "Headphones",
    "Lamp",
    "Chair",
    "Sneakers",
    "Watch",
    "Blanket",
    "Mug",
    "Keyboard",
    "Jacket",
    "Notebook",
    "Speaker",
    "Bottle",
    "Tent",
];
const CATEGORIES: &[&str] = &[
    "bags",
    "kitchen",
    "audio",
    "lighting",
    "furniture",
    "shoes",
    "accessories",
    "home",
    "electronics",
    "clothing",
    "stationery",
    "outdoor",
];
const COLORS: &[&str] = &["black", "white", "red", "blue", "green", "grey", "sand"];
const WORDS: &[&str] = &[
    "durable",
    "lightweight",
    "handmade",
    "everyday",
    "travel",
    "gift",
    "sustainable",
    "quiet",
    "water-resistant",
    "adjustable",
    "soft",
    "bright",
    "warm",
    "fast",
    "reliable",
    "elegant",
];

/// 2024-01-01T00:00:00Z; seeded rows are dated after it, one step per id.
const EPOCH_2024: i64 = 1_704_067_200;

fn datetime(secs: i64) -> Value {
    let dt = chrono::DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .naive_utc();
    dt.into()
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// A chunk's own generator: independent of how chunks are spread over connections.
fn chunk_rng(seed: u64, table: u64, chunk: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ table.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ chunk,
    )
}

/// One multi-row INSERT: `rows` rows of `cols` columns.
struct Batch {
    sql: String,
    params: Vec<Value>,
}

fn batch(table: &str, columns: &str, ncols: usize, rows: usize, params: Vec<Value>) -> Batch {
    let row = format!("({})", vec!["?"; ncols].join(","));
    batch_of_rows(table, columns, &row, rows, params)
}

/// Like [`batch`] with a row template that may hold constants, e.g. `('email',?,?)`.
fn batch_of_rows(table: &str, columns: &str, row: &str, rows: usize, params: Vec<Value>) -> Batch {
    Batch {
        sql: format!(
            "INSERT INTO {table} ({columns}) VALUES {}",
            vec![row; rows].join(",")
        ),
        params,
    }
}

/// Runs `make(chunk)` for chunks `0..chunks` on `connections` parallel connections.
async fn parallel<F>(
    pool: &Pool,
    connections: u64,
    chunks: u64,
    make: F,
) -> Result<(), mysql_async::Error>
where
    F: Fn(u64) -> Vec<Batch> + Send + Sync + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1).min(chunks.max(1)) {
        let pool = pool.clone();
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get_conn().await?;
            conn.query_drop("SET SESSION unique_checks = 0").await?;
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    break;
                }
                for b in make(chunk) {
                    conn.exec_drop(b.sql, b.params).await?;
                }
            }
            Ok::<(), mysql_async::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("seed worker panicked")?;
    }
    Ok(())
}

/// Seeds an empty schema.
pub async fn run(pool: &Pool, opts: &SeedOptions) -> Result<SeedReport, SeedError> {
    if opts.batch == 0 || opts.batch > 5000 {
        return Err(SeedError::Options(
            "--batch must be between 1 and 5000".into(),
        ));
    }
    if opts.orders > 0 && opts.products == 0 {
        return Err(SeedError::Options("--orders needs --products > 0".into()));
    }
    let mut conn = pool.get_conn().await?;
    for table in [
        "users",
        "products",
        "inventory",
        "orders",
        "order_items",
        "payments",
        "notifications",
    ] {
        let any: Option<u8> = conn
            .query_first(format!("SELECT 1 FROM {table} LIMIT 1"))
            .await?;
        if any.is_some() {
            return Err(SeedError::NotEmpty(table));
        }
    }
    drop(conn);
    let started = Instant::now();
    let mut report = SeedReport::default();
    let b = opts.batch;

    // Users: one hash for all (argon2 per row would take hours for millions of users).
    let salt = format!("seed{:012}", opts.seed % 1_000_000_000_000);
    let password = opts.password.clone();
    let hash =
        tokio::task::spawn_blocking(move || crate::auth::hash_password_with_salt(&password, &salt))
            .await
            .expect("hash task")
            .map_err(|e| SeedError::Hash(e.to_string()))?;
    let t = Instant::now();
    let total_users = opts.users + 1;
    let seed = opts.seed;
    parallel(
        pool,
        opts.connections,
        total_users.div_ceil(b),
        move |chunk| {
            let mut rng = chunk_rng(seed, 1, chunk);
            let from = chunk * b + 1;
            let to = (from + b - 1).min(total_users);
            let mut params = Vec::with_capacity(((to - from + 1) * 8) as usize);
            for id in from..=to {
                let (email, name, role) = if id == 1 {
                    (
                        "admin@example.com".to_string(),
                        "Shop Admin".to_string(),
                        "admin",
                    )
                } else {
                    (
                        format!("user{id}@example.com"),
                        format!("{} {}", pick(&mut rng, FIRST), pick(&mut rng, LAST)),
                        "customer",
                    )
                };
                let phone: Option<String> = rng
                    .random_bool(0.6)
                    .then(|| format!("+1 555 {:07}", rng.random_range(0..10_000_000)));
                let address: Option<String> = rng.random_bool(0.8).then(|| {
                    format!(
                        "{} Market Street, {}",
                        rng.random_range(1..999),
                        pick(&mut rng, CITIES)
                    )
                });
                let created = datetime(EPOCH_2024 + id as i64 * 7);
                params.extend([
                    id.into(),
                    email.into(),
                    hash.as_str().into(),
                    name.into(),
                    phone.into(),
                    address.into(),
                    role.into(),
                    created.clone(),
                    created,
                ]);
            }
            vec![batch(
                "users",
                "id, email, password_hash, name, phone, address, role, created_at, updated_at",
                9,
                (to - from + 1) as usize,
                params,
            )]
        },
    )
    .await?;
    report.tables.push(("users", total_users, t.elapsed()));

    let t = Instant::now();
    let products = opts.products;
    parallel(pool, opts.connections, products.div_ceil(b), move |chunk| {
        let mut rng = chunk_rng(seed, 2, chunk);
        let from = chunk * b + 1;
        let to = (from + b - 1).min(products);
        let mut p = Vec::new();
        let mut inv = Vec::new();
        for id in from..=to {
            let noun = pick(&mut rng, NOUN);
            let name = format!("{} {} {noun}", pick(&mut rng, ADJ), pick(&mut rng, MATERIAL));
            let description = format!(
                "A {} and {} {} for {} use. Made to last, easy to clean, {}.",
                pick(&mut rng, WORDS),
                pick(&mut rng, WORDS),
                noun.to_lowercase(),
                pick(&mut rng, WORDS),
                pick(&mut rng, WORDS)
            );
            let attributes = serde_json::json!({
                "color": pick(&mut rng, COLORS),
                "weight_g": rng.random_range(50..5000),
            })
            .to_string();
            let created = datetime(EPOCH_2024 + id as i64 * 60);
            p.extend([
                id.into(),
                format!("SKU-{id:08}").into(),
                name.into(),
                description.into(),
                pick(&mut rng, CATEGORIES).into(),
                format_cents(rng.random_range(100..50_000)).into(),
                attributes.into(),
                i8::from(!rng.random_bool(0.02)).into(),
                created.clone(),
                created.clone(),
            ]);
            inv.extend([
                id.into(),
                rng.random_range(0..1000i64).into(),
                created,
            ]);
        }
        let n = (to - from + 1) as usize;
        vec![
            batch(
                "products",
                "id, sku, name, description, category, price, attributes, active, created_at, updated_at",
                10,
                n,
                p,
            ),
            batch("inventory", "product_id, available, updated_at", 3, n, inv),
        ]
    })
    .await?;
    report
        .tables
        .push(("products, inventory", 2 * products, t.elapsed()));

    let t = Instant::now();
    let orders = opts.orders;
    let customers = opts.users;
    let item_rows = Arc::new(AtomicU64::new(0));
    let item_count = item_rows.clone();
    parallel(pool, opts.connections, orders.div_ceil(b), move |chunk| {
        let mut rng = chunk_rng(seed, 3, chunk);
        let from = chunk * b + 1;
        let to = (from + b - 1).min(orders);
        let (mut o, mut items, mut pay, mut notes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut nitems = 0usize;
        for id in from..=to {
            let user_id = if customers == 0 { 1 } else { rng.random_range(2..=customers + 1) };
            let lines = rng.random_range(1..=4u64).min(products);
            let mut chosen: Vec<u64> = Vec::new();
            while (chosen.len() as u64) < lines {
                let p = rng.random_range(1..=products);
                if !chosen.contains(&p) {
                    chosen.push(p);
                }
            }
            let mut total = 0i64;
            for p in &chosen {
                let q = rng.random_range(1..=3i64);
                let price = rng.random_range(100..50_000i64);
                total += q * price;
                items.extend([id.into(), (*p).into(), q.into(), format_cents(price).into()]);
                nitems += 1;
            }
            let cancelled = rng.random_bool(0.1);
            let created = datetime(EPOCH_2024 + 86_400 + id as i64 * 30);
            o.extend([
                id.into(),
                user_id.into(),
                (if cancelled { "cancelled" } else { "paid" }).into(),
                format_cents(total).into(),
                format!("{} Market Street, {}", rng.random_range(1..999), pick(&mut rng, CITIES)).into(),
                created.clone(),
                created.clone(),
            ]);
            pay.extend([
                id.into(),
                id.into(),
                format_cents(total).into(),
                (if cancelled { "refunded" } else { "captured" }).into(),
                "simulated".into(),
                format!("sim_order-{id}").into(),
                format!("order-{id}").into(),
                created.clone(),
                created.clone(),
            ]);
            notes.extend([
                id.into(),
                user_id.into(),
                "order_confirmation".into(),
                serde_json::json!({"order_id": id, "total": format_cents(total)}).to_string().into(),
                created.clone(),
                created,
            ]);
        }
        item_count.fetch_add(nitems as u64, Ordering::Relaxed);
        let n = (to - from + 1) as usize;
        vec![
            batch(
                "orders",
                "id, user_id, status, total, shipping_address, created_at, updated_at",
                7,
                n,
                o,
            ),
            batch("order_items", "order_id, product_id, quantity, unit_price", 4, nitems, items),
            batch(
                "payments",
                "id, order_id, amount, status, provider, provider_ref, idempotency_key, created_at, updated_at",
                9,
                n,
                pay,
            ),
            // Seeded notifications were delivered long ago.
            batch_of_rows(
                "notifications",
                "channel, status, id, user_id, template, payload, created_at, sent_at",
                "('email','sent',?,?,?,?,?,?)",
                n,
                notes,
            ),
        ]
    })
    .await?;
    let took = t.elapsed();
    report.tables.push((
        "orders, order_items, payments, notifications",
        3 * orders + item_rows.load(Ordering::Relaxed),
        took,
    ));
    report.elapsed = started.elapsed();
    Ok(report)
}
