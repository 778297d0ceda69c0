//! A fixed-rate, open-loop shop load in the mix of Online Boutique's load generator — browse 10
//! (catalog pages, searches, product pages), cart 3 (stock checks), checkout 1 (a paid order) —
//! against one base URL; prints p50/p95/p99 per endpoint as a Markdown table. Latency counts from
//! when a request was due, not when it left, so a stall shows up instead of hiding.
//!
//! `shop_load BASE_URL RATE SECONDS [PRODUCTS]` (customers `user2@example.com`… log in first;
//! product pages, stock checks and orders spread over products 1..=PRODUCTS, 200 by default).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// Latency (ms) and success of each request, by endpoint.
type Samples = Arc<Mutex<BTreeMap<&'static str, Vec<(f64, bool)>>>>;

const WORDS: &[&str] = &[
    "backpack", "tent", "stove", "mug", "lamp", "jacket", "bottle",
];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or("http://127.0.0.1:8000".into());
    let rate: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let secs: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(30);
    let products: usize = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Tokens of 20 customers, for checkouts.
    let mut tokens = Vec::new();
    for id in 2..22 {
        let r = client
            .post(format!("{base}/api/users/login"))
            .json(&json!({"email": format!("user{id}@example.com"), "password": "password123"}))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        tokens.push(v["token"].as_str().expect("login").to_string());
    }
    let samples: Samples = Arc::default();
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total = rate * secs;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut seed: u64 = 0x5eed;
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 33) as usize;
        let product = (r / 14) % products + 1;
        let (name, req) = match r % 14 {
            0..=3 => (
                "GET /api/products?page",
                client.get(format!("{base}/api/products?page={}&per_page=20", r % 10 + 1)),
            ),
            4..=6 => (
                "GET /api/products?q",
                client.get(format!("{base}/api/products?q={}", WORDS[r % WORDS.len()])),
            ),
            7..=9 => ("GET /api/products/{id}", client.get(format!("{base}/api/products/{product}"))),
            10..=12 => (
                "GET /api/products/{id}/inventory",
                client.get(format!("{base}/api/products/{product}/inventory")),
            ),
            _ => (
                "POST /api/orders",
                client
                    .post(format!("{base}/api/orders"))
                    .bearer_auth(&tokens[r % tokens.len()])
                    .json(&json!({"items": [{"product_id": product, "quantity": 1}], "payment_token": "tok_visa"})),
            ),
        };
        let samples = samples.clone();
        tasks.push(tokio::spawn(async move {
            // The shop's business refusals are answers: 409 (out of stock) and 422 (a product
            // not for sale: the catalog has inactive products).
            let ok = matches!(req.send().await, Ok(r) if r.status().is_success() || [409, 422].contains(&r.status().as_u16()));
            let ms = due.elapsed().as_secs_f64() * 1000.0;
            samples.lock().unwrap().entry(name).or_default().push((ms, ok));
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed().as_secs_f64();
    let samples = samples.lock().unwrap();
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    };
    println!("| endpoint | requests | failed | p50 ms | p95 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    let mut failed_all = 0;
    for (name, s) in samples.iter() {
        let mut ms: Vec<f64> = s.iter().map(|x| x.0).collect();
        let failed = s.iter().filter(|x| !x.1).count();
        failed_all += failed;
        all.extend(ms.iter().copied());
        println!(
            "| `{name}` | {} | {failed} | {:.1} | {:.1} | {:.1} |",
            s.len(),
            pct(&mut ms, 0.50),
            pct(&mut ms, 0.95),
            pct(&mut ms, 0.99)
        );
    }
    println!(
        "| **all** | {} | {failed_all} | {:.1} | {:.1} | {:.1} |",
        all.len(),
        pct(&mut all.clone(), 0.50),
        pct(&mut all.clone(), 0.95),
        pct(&mut all, 0.99)
    );
    println!(
        "\n{} requests in {took:.1} s = {:.0} req/s offered {rate}/s (409 insufficient stock and 422 not for sale count as answered).",
        samples.values().map(Vec::len).sum::<usize>(),
        samples.values().map(Vec::len).sum::<usize>() as f64 / took
    );
}
