//! Both sides sell at once (a write canary) and the last unit is never sold twice: the real
//! monolith takes orders and the real product-service takes reservations for the same products,
//! on their own MariaDB servers, while cdc-sync carries the stock both ways as deltas; the stock
//! escrow (`strangler escrow split|rebalance|status`) gives each side its share and
//! `strangler serve` keeps it rebalanced while the domain is in a write canary. Afterwards:
//! stock = start − every accepted sale on both sides, never negative, no sale accepted without
//! stock, refusals counted, no conflict, both streams still running.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::*;

fn spawn(
    bin: &Path,
    args: &[&str],
    env: &[(&str, String)],
    dir: &Path,
    name: &str,
) -> testkit::ProcessGuard {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    testkit::ProcessGuard::spawn_with_env(
        bin,
        &args,
        env,
        &dir.join(format!("{name}.pid")),
        &dir.join(format!("{name}.log")),
    )
    .unwrap()
}

async fn wait_ok(url: &str) {
    for _ in 0..600 {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

async fn stock(url: &str) -> BTreeMap<u64, i64> {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let v: Vec<(u64, i64)> = c
        .query("SELECT product_id, available FROM inventory ORDER BY product_id")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    v.into_iter().collect()
}

fn escrow_cli(domains: &Path, config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .arg("--domains")
        .arg(domains)
        .arg("escrow")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// product-service's development internal token (its default).
const DEV_INTERNAL_TOKEN: &str = "strangler-dev-internal-token-0123456789";

/// Accepted units per product, by side.
type Sales = Arc<Mutex<BTreeMap<u64, i64>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sides_sell_at_once_and_the_last_unit_is_never_sold_twice() {
    let opts = |name: &str, id| testkit::MariaDbOptions::new(name, id);
    let m = testkit::MariaDb::start(opts("esc-monolith", 51)).unwrap();
    let s = testkit::MariaDb::start(opts("esc-services", 52)).unwrap();
    m.execute("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 1")
        .await
        .unwrap();
    s.execute("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 2")
        .await
        .unwrap();
    let dir = testkit::TempDir::new("escrow").unwrap();
    let d = dir.path();
    let shop_url = format!("{}/shop", m.root_url().trim_end_matches('/'));
    let svc_url = format!("{}/product_svc", s.root_url().trim_end_matches('/'));

    // The monolith, seeded with customers and six products; small stocks, some run out.
    let monolith_bin = testkit::workspace_binary("legacy-monolith");
    let shop_port = testkit::free_port();
    let shop_env = vec![
        ("SHOP_DATABASE_URL", shop_url.clone()),
        ("SHOP_LISTEN", format!("127.0.0.1:{shop_port}")),
        ("SHOP_ID_STEP", "2".into()),
        ("SHOP_ID_OFFSET", "1".into()),
    ];
    for args in [
        vec!["migrate"],
        vec!["seed", "--users", "40", "--products", "6", "--orders", "0"],
    ] {
        let mut cmd = std::process::Command::new(&monolith_bin);
        cmd.args(&args);
        for (k, v) in &shop_env {
            cmd.env(k, v);
        }
        testkit::assert_success(&cmd.output().unwrap(), &format!("legacy-monolith {args:?}"));
    }
    let start: BTreeMap<u64, i64> = [(1, 12), (2, 12), (3, 30), (4, 30), (5, 60), (6, 5)]
        .into_iter()
        .collect();
    let mut c = mysql_async::Conn::from_url(shop_url.as_str())
        .await
        .unwrap();
    for (p, n) in &start {
        c.exec_drop(
            "UPDATE inventory SET available = ? WHERE product_id = ?",
            (n, p),
        )
        .await
        .unwrap();
        c.exec_drop("UPDATE products SET active = 1 WHERE id = ?", (p,))
            .await
            .unwrap();
    }
    c.disconnect().await.unwrap();
    let _shop = spawn(&monolith_bin, &["serve"], &shop_env, d, "monolith");
    let shop = format!("http://127.0.0.1:{shop_port}");
    wait_ok(&format!("{shop}/readyz")).await;

    // product-service on the services' server.
    let svc_port = testkit::free_port();
    let _svc = spawn(
        &testkit::workspace_binary("product-service"),
        &["serve"],
        &[
            ("PRODUCT_SVC_DATABASE_URL", svc_url.clone()),
            ("PRODUCT_SVC_LISTEN", format!("127.0.0.1:{svc_port}")),
            ("PRODUCT_SVC_ID_STEP", "2".into()),
            ("PRODUCT_SVC_ID_OFFSET", "2".into()),
        ],
        d,
        "product-service",
    );
    let svc = format!("http://127.0.0.1:{svc_port}");
    wait_ok(&format!("{svc}/readyz")).await;

    // Both streams of the products domain, from the declaration (inventory.available as a
    // counter, updated_at not compared); the catalog backfilled to the service.
    let domains = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shop-domains.toml");
    let decl = phases::Declaration::load(&domains).unwrap();
    let pid = std::process::id();
    let cdc = testkit::workspace_binary("cdc-sync");
    let stream = |name: &str,
                  from: &testkit::MariaDb,
                  to: &testkit::MariaDb,
                  reader: u32,
                  port: u16,
                  dir: phases::Direction| {
        let path = d.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader}\nlisten = \"127.0.0.1:{port}\"\n{}",
                from.root_url(),
                to.root_url(),
                decl.cdc_tables_toml(dir, &["products"])
            ),
        )
        .unwrap();
        path
    };
    let (m2s_port, s2m_port) = (testkit::free_port(), testkit::free_port());
    let m2s = stream(
        &format!("esc-m2s-{pid}"),
        &m,
        &s,
        5051,
        m2s_port,
        phases::Direction::MonolithToServices,
    );
    let s2m = stream(
        &format!("esc-s2m-{pid}"),
        &s,
        &m,
        5052,
        s2m_port,
        phases::Direction::ServicesToMonolith,
    );
    let arg = |p: &Path| p.display().to_string();
    let _m2s = spawn(&cdc, &["stream", "--config", &arg(&m2s)], &[], d, "m2s");
    let _s2m = spawn(&cdc, &["stream", "--config", &arg(&s2m)], &[], d, "s2m");
    wait_ok(&format!("http://127.0.0.1:{m2s_port}/readyz")).await;
    wait_ok(&format!("http://127.0.0.1:{s2m_port}/readyz")).await;
    for table in ["shop.products", "shop.inventory"] {
        let out = std::process::Command::new(&cdc)
            .args(["backfill", "--table", table, "--config", &arg(&m2s)])
            .output()
            .unwrap();
        testkit::assert_success(&out, &format!("backfill {table}"));
    }
    for _ in 0..200 {
        if stock(&svc_url).await == start {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stock(&svc_url).await,
        start,
        "the service's copy of the stock"
    );

    // The split: half of every product's stock to each side.
    let config = d.join("strangler.toml");
    std::fs::write(
        &config,
        format!(
            "proxies = [\"http://127.0.0.1:1\"]\nmonolith_url = \"{}\"\nservices_url = \"{}\"\n\
             to_services_stream = \"esc-m2s-{pid}\"\nto_monolith_stream = \"esc-s2m-{pid}\"\n",
            m.root_url(),
            s.root_url()
        ),
    )
    .unwrap();
    let (ok, out, err) = escrow_cli(
        &domains,
        &config,
        &["split", "products", "--service-share", "0.5", "--json"],
    );
    assert!(ok, "{out}{err}");
    let split: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(split["monolith"]["escrow"]["1"], 6, "{split}");
    assert_eq!(split["service"]["escrow"]["1"], 6, "{split}");
    assert_eq!(split["service"]["escrow"]["6"], 2, "{split}");

    // The domain is in a write canary at 50% (its moves recorded as the controller records
    // them); `strangler serve` keeps the escrow rebalanced every 200 ms.
    m.execute("CREATE DATABASE strangler").await.unwrap();
    let strangler_url = format!("{}/strangler", m.root_url().trim_end_matches('/'));
    let store = phases::PhaseStore::open(&strangler_url).await.unwrap();
    for to in [
        phases::Phase::Backfilling,
        phases::Phase::Verified,
        phases::Phase::Shadow,
        phases::Phase::Canary { percent: 50 },
        phases::Phase::WriteCanary { percent: 50 },
    ] {
        let from = store.states(&["products"]).await.unwrap().pop().unwrap();
        store
            .record(phases::store::Move {
                domain: "products",
                from: &from,
                to,
                actor: "escrow test",
                reason: "setting the scene",
                gates: serde_json::json!({}),
                forced: false,
            })
            .await
            .unwrap();
    }
    std::fs::write(
        &config,
        format!(
            "{}\n[escrow]\nrebalance_every_ms = 200\nlow_units = 3\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let serve_port = testkit::free_port();
    let _serve = spawn(
        &testkit::workspace_binary("strangler"),
        &[
            "--domains",
            &arg(&domains),
            "serve",
            "--config",
            &arg(&config),
            "--database-url",
            &strangler_url,
            "--listen",
            &format!("127.0.0.1:{serve_port}"),
        ],
        &[],
        d,
        "serve",
    );
    let serve = format!("http://127.0.0.1:{serve_port}");
    wait_ok(&format!("{serve}/readyz")).await;
    // While products' write canary splits the stock, orders (which sells the same stock) may
    // not start one: its writes-ready gate names the other canary.
    let controller = phases::Controller::new(
        phases::ControllerConfig::load(&config).unwrap(),
        decl.clone(),
        store.clone(),
    );
    assert_eq!(
        controller
            .same_stock_canaries(decl.domain("orders").unwrap())
            .await
            .unwrap(),
        vec!["products".to_string()]
    );
    assert!(
        controller
            .same_stock_canaries(decl.domain("products").unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // Sales on both sides at once: customers ordering on the monolith, reservations on the
    // service, 1–3 units of random products, until every product refuses every buyer.
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for id in 2..=21 {
        let r: serde_json::Value = http
            .post(format!("{shop}/api/users/login"))
            .json(&serde_json::json!({"email": format!("user{id}@example.com"), "password": "password123"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_string());
    }
    let monolith_sales: Sales = Arc::default();
    let service_sales: Sales = Arc::default();
    let mut tasks = Vec::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let (http, shop, sales) = (http.clone(), shop.clone(), monolith_sales.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let product = (n as u64 * 7 + i * 5) % 6 + 1;
                let quantity = (i % 3 + 1) as i64;
                let r = http
                    .post(format!("{shop}/api/orders"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"items": [{"product_id": product, "quantity": quantity}], "payment_token": "tok_visa"}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => *sales.lock().unwrap().entry(product).or_default() += quantity,
                    409 => {}
                    other => panic!("monolith order: {other} {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    for n in 0..20u64 {
        let (http, svc, sales) = (http.clone(), svc.clone(), service_sales.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let product = (n * 3 + i * 7) % 6 + 1;
                let quantity = (i % 3 + 1) as i64;
                let r = http
                    .post(format!("{svc}/internal/reservations"))
                    .bearer_auth(DEV_INTERNAL_TOKEN)
                    .json(&serde_json::json!({"id": format!("r-{n}-{i}"), "items": [{"product_id": product, "quantity": quantity}]}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => *sales.lock().unwrap().entry(product).or_default() += quantity,
                    409 => {}
                    other => panic!("service reservation: {other} {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Meanwhile the controller's upkeep made the escrow follow the sales: a side that ran low
    // got units from the other.
    let upkeep = reqwest::get(format!("{serve}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let moved = testkit::prometheus::sum(&upkeep, "strangler_escrow_rebalanced_units_total");
    assert!(moved > 0.0, "the upkeep moved nothing:\n{upkeep}");
    assert!(
        !upkeep.contains("strangler_escrow_upkeep_errors_total 1"),
        "{upkeep}"
    );
    // An operator can rebalance by hand too.
    let (ok, out, err) = escrow_cli(
        &domains,
        &config,
        &["rebalance", "products", "--service-share", "0.5"],
    );
    assert!(ok && out.contains("moved"), "{out}{err}");

    // Both sides agree, and every sale counted once.
    let sold = |p: u64| {
        monolith_sales.lock().unwrap().get(&p).copied().unwrap_or(0)
            + service_sales.lock().unwrap().get(&p).copied().unwrap_or(0)
    };
    let want: BTreeMap<u64, i64> = start.iter().map(|(p, n)| (*p, n - sold(*p))).collect();
    for _ in 0..300 {
        if stock(&shop_url).await == want && stock(&svc_url).await == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (on_m, on_s) = (stock(&shop_url).await, stock(&svc_url).await);
    assert_eq!(on_m, want, "monolith stock = start − every accepted sale");
    assert_eq!(on_s, want, "service stock = start − every accepted sale");
    assert!(
        want.values().all(|n| *n >= 0),
        "sold more than there was: {want:?}"
    );
    // Both sides really sold, and the small products ran out.
    assert!(monolith_sales.lock().unwrap().values().sum::<i64>() > 0);
    assert!(service_sales.lock().unwrap().values().sum::<i64>() > 0);
    assert_eq!(want[&6], 0, "product 6 sold out: {want:?}");
    // The escrow never promised more than the stock.
    let (ok, out, err) = escrow_cli(&domains, &config, &["status", "products", "--json"]);
    assert!(ok, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["overcommitted"], serde_json::json!([]), "{status}");
    // Refusals because a side's share ran out are counted on each side.
    let metric = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let shop_metrics = reqwest::get(format!("{shop}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let svc_metrics = reqwest::get(format!("{svc}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = metric(&shop_metrics, "shop_stock_escrow_refusals_total")
        + metric(&svc_metrics, "product_service_stock_escrow_refusals_total");
    eprintln!(
        "sold: monolith {:?}, service {:?}; escrow refusals {refused}; rebalances:\n{moved}",
        monolith_sales.lock().unwrap(),
        service_sales.lock().unwrap()
    );
    assert!(
        refused > 0.0,
        "no refusal was counted:\n{shop_metrics}\n{svc_metrics}"
    );
    // Each side's tally (what the controller's escrow-refusals gate reads) counts them too.
    let (_, ms, ss) = phases::escrow::sides(
        &decl,
        decl.domain("products").unwrap(),
        &m.root_url(),
        &s.root_url(),
    )
    .unwrap();
    let tally = phases::escrow::tally(&ms, &ss).await.unwrap();
    assert_eq!(tally.refused as f64, refused, "{tally:?}");
    assert!(tally.taken > 0 && tally.refusal_rate() < 1.0, "{tally:?}");
    // No conflict either way, and both streams still run (no CHECK violation stopped one).
    for port in [m2s_port, s2m_port] {
        let st: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(st["running"], true, "{st}");
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!metrics.contains("cdc_conflicts_total{"), "{metrics}");
    }
    // The end of the write canary: the escrow cleared, one side owns the stock again.
    let (ok, out, err) = escrow_cli(&domains, &config, &["clear", "products"]);
    assert!(ok && out.contains("cleared"), "{out}{err}");
}
