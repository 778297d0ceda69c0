//! Streams under control, as a controller drives them: `POST /pause` holds the stream at its
//! committed offset, the pause survives a restart of the process, `cdc-sync resume` lets it
//! catch up with nothing lost; `GET /status` reports it; bad requests are refused.

use std::time::Duration;

mod common;
use common::{exec, spawn_stream};
use mysql_async::prelude::Queryable;

async fn count(url: &str) -> u64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM orders").await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap_or(0)
}

async fn wait_count(url: &str, expected: u64) {
    common::eventually(&format!("{expected} rows in the target"), || async move {
        count(url).await == expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stream_holds_its_offset_across_restarts_and_resumes_without_loss() {
    let common::OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    } = common::orders_stream("ctl", 4601).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let status = || async {
        let r = http.get(format!("{base}/status")).send().await.ok()?;
        r.json::<serde_json::Value>().await.ok()
    };
    let mut process = spawn_stream(&config, dir.path(), 1, "cdc.log");
    common::eventually("the stream running", || async {
        status().await.is_some_and(|s| s["running"] == true)
    })
    .await;
    exec(&src.url, "INSERT INTO orders VALUES (1, 1.00, 'before')").await;
    wait_count(&dst.url, 1).await;

    // Pause over HTTP: the stream stops; rows written meanwhile wait in the binlog.
    let paused = http
        .post(format!("{base}/pause"))
        .json(&serde_json::json!({"actor": "controller-test", "reason": "switching owners"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 202);
    common::eventually("the stream paused", || async {
        status()
            .await
            .is_some_and(|s| s["paused"] == true && s["running"] == false)
    })
    .await;
    let report = status().await.unwrap();
    assert_eq!(report["desired"], "paused");
    assert_eq!(report["changed_by"], "controller-test");
    assert_eq!(report["reason"], "switching owners");
    exec(
        &src.url,
        "INSERT INTO orders VALUES (2, 2.00, 'while paused'), (3, 3.00, 'while paused')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&dst.url).await, 1, "a paused stream applied rows");

    // A restart (a crash, a redeploy) keeps the pause.
    process.kill();
    process = spawn_stream(&config, dir.path(), 2, "cdc.log");
    common::eventually("the restarted stream reporting paused", || async {
        status().await.is_some_and(|s| s["paused"] == true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        count(&dst.url).await,
        1,
        "a restarted paused stream applied rows"
    );

    // Bad requests change nothing.
    let bad = http
        .post(format!("{base}/resume"))
        .json(&serde_json::json!({"actor": "", "reason": "no one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let malformed = http
        .post(format!("{base}/resume"))
        .header("content-type", "application/json")
        .body("{\"actor\": 1}")
        .send()
        .await
        .unwrap();
    assert!(malformed.status().is_client_error());
    assert_eq!(status().await.unwrap()["desired"], "paused");

    // The CLI resumes it (it writes the control row; no HTTP needed): it catches up from the
    // committed offset, each row once.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args([
            "resume",
            "--reason",
            "switch done",
            "--actor",
            "ops",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let out = testkit::assert_success(&out, "cdc-sync resume");
    assert!(out.contains("running (by ops: switch done)"), "{out}");
    wait_count(&dst.url, 3).await;
    common::eventually("the stream running again", || async {
        status()
            .await
            .is_some_and(|s| s["running"] == true && s["paused"] == false)
    })
    .await;
    exec(&src.url, "INSERT INTO orders VALUES (4, 4.00, 'after')").await;
    wait_count(&dst.url, 4).await;
    let no_reason = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(["pause", "--reason", " ", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!no_reason.status.success());
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_table_leaves_the_stream_for_good_and_the_others_flow_on() {
    let common::OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    } = common::orders_stream("ret", 4602).await;
    // A second table in the same stream: it keeps flowing after `orders` is retired.
    for url in [&src.url, &dst.url] {
        exec(
            url,
            "CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(40) NOT NULL)",
        )
        .await;
    }
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[tables]]\nsource = \"{}.notes\"\ntarget = \"{}.notes\"\n",
        src.name, dst.name
    ));
    std::fs::write(&config, text).unwrap();
    let notes = |url: String| async move {
        let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM notes").await.unwrap();
        n.unwrap_or(0)
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let status = || async {
        let r = http.get(format!("{base}/status")).send().await.ok()?;
        r.json::<serde_json::Value>().await.ok()
    };
    let process = spawn_stream(&config, dir.path(), 1, "cdc.log");
    common::wait_ready(port).await;
    exec(&src.url, "INSERT INTO orders VALUES (1, 1.00, 'before')").await;
    wait_count(&dst.url, 1).await;

    // Refused: a table the stream does not carry, and no reason.
    let unknown = http
        .post(format!("{base}/retire"))
        .json(&serde_json::json!({"table": "shop.nope", "actor": "t", "reason": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    assert!(unknown.text().await.unwrap().contains("not a source table"));
    let no_reason = http
        .post(format!("{base}/retire"))
        .json(&serde_json::json!({"table": format!("{}.orders", src.name), "actor": "t", "reason": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_reason.status(), 422);

    let retired = http
        .post(format!("{base}/retire"))
        .json(&serde_json::json!({
            "table": format!("{}.orders", src.name), "actor": "phase-controller",
            "reason": "orders decommissioned"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(retired.status(), 202);
    common::eventually("the stream running without orders", || async {
        status().await.is_some_and(|s| {
            s["running"] == true
                && s["retired"] == serde_json::json!([format!("{}.orders", src.name)])
        })
    })
    .await;
    // Give the restart its poll, then: orders' changes stay behind, notes' go on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    exec(&src.url, "INSERT INTO orders VALUES (2, 2.00, 'after')").await;
    exec(&src.url, "INSERT INTO notes VALUES (1, 'after')").await;
    common::eventually("notes flowing", || async {
        notes(dst.url.clone()).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&dst.url).await,
        1,
        "a retired table's change was applied"
    );

    // For good: a restart keeps it retired; the CLI says so too.
    drop(process);
    let process = spawn_stream(&config, dir.path(), 2, "cdc.log");
    common::wait_ready(port).await;
    exec(&src.url, "INSERT INTO notes VALUES (2, 'after restart')").await;
    common::eventually("notes after restart", || async {
        notes(dst.url.clone()).await == 2
    })
    .await;
    assert_eq!(count(&dst.url).await, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(["retire", "--table"])
        .arg(format!("{}.orders", src.name))
        .args(["--reason", "again", "--actor", "ops", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let out = testkit::assert_success(&out, "cdc-sync retire");
    assert!(
        out.contains(&format!("retired now: {}.orders", src.name)),
        "{out}"
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_kept_with_both_images_and_resolved_from_the_cli() {
    let common::OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    } = common::orders_stream("dlq", 4603).await;
    let process = spawn_stream(&config, dir.path(), 1, "cdc.log");
    common::wait_ready(port).await;
    exec(&src.url, "INSERT INTO orders VALUES (1, 1.00, 'placed')").await;
    wait_count(&dst.url, 1).await;
    // The target changes the row on its own, then the source changes it too: a conflict.
    exec(
        &dst.url,
        "UPDATE orders SET note = 'changed on the target' WHERE id = 1",
    )
    .await;
    exec(
        &src.url,
        "UPDATE orders SET note = 'changed on the source' WHERE id = 1",
    )
    .await;
    exec(&src.url, "INSERT INTO orders VALUES (2, 2.00, 'after')").await;
    wait_count(&dst.url, 2).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["conflicts", "--json"]);
    assert!(ok, "{err}");
    let open: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    let c = &open[0];
    assert_eq!(c["target_table"], format!("{}.orders", dst.name));
    assert_eq!(
        (c["op"].as_str(), c["winner"].as_str()),
        (Some("update"), Some("source"))
    );
    assert_eq!(c["row_key"], serde_json::json!([1]));
    assert_eq!(c["source_before"]["note"], "placed", "{c}");
    assert_eq!(c["source_after"]["note"], "changed on the source", "{c}");
    assert_eq!(c["target_row"]["note"], "changed on the target", "{c}");
    let id = c["id"].as_u64().unwrap().to_string();
    let open_conflicts = || {
        let (ok, out, err) = cli(&["status", "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["tables"][0]["open_conflicts"].as_u64()
    };
    assert_eq!(open_conflicts(), Some(1), "status counts the open conflict");
    let (ok, out, _) = cli(&["conflicts"]);
    assert!(
        ok && out.contains("target row:") && out.contains("source won"),
        "{out}"
    );
    // Settled by an operator: resolved with who and how; only once.
    let (ok, out, err) = cli(&[
        "conflicts",
        "resolve",
        "--id",
        &id,
        "--reason",
        "source version confirmed",
        "--actor",
        "ops",
    ]);
    assert!(ok && out.contains("resolved by ops"), "{out}{err}");
    let (_, out, _) = cli(&["conflicts"]);
    assert!(out.contains("no open conflicts"), "{out}");
    assert_eq!(open_conflicts(), Some(0));
    let (ok, _, err) = cli(&["conflicts", "resolve", "--id", &id, "--reason", "again"]);
    assert!(!ok && err.contains("no open conflict"), "{err}");
    let (_, out, _) = cli(&["conflicts", "--all", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all[0]["resolved_by"], "ops", "{all}");
    drop(process);
}
