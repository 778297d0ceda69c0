//! `cdc-sync verify` against real servers: a target kept in step by a running stream verifies
//! clean even while writes continue; rows deliberately corrupted on the target (missing, extra,
//! changed) are found by key, `--repair` fixes them, and the exit code tells which.

use std::time::Duration;

mod common;
use common::{burst, exec};

fn run_verify(config: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args([
            "verify",
            "--table",
            "orders",
            "--json",
            "--chunk-size",
            "250",
            "--config",
        ])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "exit {code}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_and_repairs_corruption_and_stays_clean_under_writes() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("verify_src").await.unwrap();
    let dst = s.create_database("verify_dst").await.unwrap();
    exec(&src.url, "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, note VARCHAR(80) NOT NULL)").await;
    // The target renames `note` and keeps it upper-case.
    exec(&dst.url, "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, label VARCHAR(80) NOT NULL, origin VARCHAR(20) NOT NULL)").await;
    let dir = testkit::TempDir::new("cdc-verify").unwrap();
    let config_text = format!(
        "name = \"verify{}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = 4901\nlisten = \"127.0.0.1:{}\"\n\n\
         [[tables]]\nsource = \"{}.orders\"\ntarget = \"{}.orders\"\nrename = {{ note = \"label\" }}\ntransform = {{ note = \"upper\" }}\ndefaults = {{ origin = \"monolith\" }}\n",
        std::process::id(),
        m.root_url(),
        s.root_url(),
        testkit::free_port(),
        src.name,
        dst.name
    );
    let config = dir.path().join("stream.toml");
    std::fs::write(&config, &config_text).unwrap();
    let parsed = cdc_sync::config::StreamConfig::parse(&config_text).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = cdc_sync::metrics::Metrics::new(&parsed.name);
    let task =
        tokio::spawn(async move { cdc_sync::transport::direct::run(&parsed, metrics, rx).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    burst(src.url.clone(), 1, 1200).await;
    // Source and target differ by mapping, so compare through verify itself.
    let mut clean = false;
    for _ in 0..100 {
        let (code, _) = run_verify(&config, &[]);
        if code == 0 {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(clean, "the streamed copy never verified clean");

    // Clean while writes go on: changes in flight are re-checked, not reported.
    let writer = tokio::spawn(burst(src.url.clone(), 1200, 1700));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, report) = run_verify(&config, &[]);
    writer.await.unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(report["source_rows"].as_u64().unwrap() > 1000, "{report}");
    assert!(report["chunks"].as_u64().unwrap() >= 4, "{report}");

    // Let the stream finish, stop it, then corrupt the target.
    converge_verify(&config).await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    exec(&dst.url, "DELETE FROM orders WHERE id IN (6, 500)").await;
    exec(
        &dst.url,
        "UPDATE orders SET amount = amount + 1 WHERE id = 10",
    )
    .await;
    exec(
        &dst.url,
        "UPDATE orders SET label = 'tampered' WHERE id = 1000",
    )
    .await;
    exec(
        &dst.url,
        "INSERT INTO orders VALUES (99999, 1.00, 'GHOST', 'x')",
    )
    .await;
    let (code, report) = run_verify(&config, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["missing"],
        serde_json::json!(["500", "6"]),
        "{report}"
    );
    assert_eq!(
        report["different"],
        serde_json::json!(["10", "1000"]),
        "{report}"
    );
    assert_eq!(report["extra"], serde_json::json!(["99999"]), "{report}");
    // Each run is recorded in the target for the migration gates: the last one, unclean.
    let stream = format!("verify{}", std::process::id());
    let table = format!("{}.orders", src.name);
    let last = cdc_sync::verify::last_result(&s.root_url(), "strangler_cdc", &stream, &table)
        .await
        .unwrap()
        .expect("a recorded verify");
    assert!(!last.clean && last.differences == 5, "{last:?}");

    let (code, report) = run_verify(&config, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["repaired"], 5, "{report}");
    let (code, report) = run_verify(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let last = cdc_sync::verify::last_result(&s.root_url(), "strangler_cdc", &stream, &table)
        .await
        .unwrap()
        .expect("a recorded verify");
    assert!(last.clean && last.differences == 0, "{last:?}");
    assert!(
        last.age_seconds < 60.0 && last.backfill_since.is_none(),
        "{last:?}"
    );
    let other =
        cdc_sync::verify::last_result(&s.root_url(), "strangler_cdc", "no-such-stream", &table)
            .await
            .unwrap();
    assert!(other.is_none());

    // An unknown table is refused with the tables the config maps.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(["verify", "--table", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}.orders", src.name)));
}

async fn converge_verify(config: &std::path::Path) {
    for _ in 0..100 {
        if run_verify(config, &[]).0 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never clean");
}
