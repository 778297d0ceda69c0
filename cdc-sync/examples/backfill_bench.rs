//! Backfill and verify benchmark, side by side in one run on two private MariaDB servers: the
//! monolith's `shop.users` (filled by `legacy-monolith seed`) copied by `cdc-sync backfill` while
//! the stream runs, against `mysqldump --single-transaction | mysql` of the same table; then
//! `cdc-sync verify` of the copy. Prints a Markdown report. Run through `bench/backfill.sh`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("BIN_DIR").expect("BIN_DIR: the release binaries");
    PathBuf::from(dir).join(name)
}

async fn query_u64(url: &str, sql: &str) -> u64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let v: Option<u64> = c.query_first(sql).await.unwrap();
    c.disconnect().await.unwrap();
    v.unwrap_or(0)
}

async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    testkit::assert_success(&out, &format!("{cmd:?}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let server = |name: &str, id: u32| {
        let mut o = testkit::MariaDbOptions::new(name, id);
        o.buffer_pool_mb = 1024;
        testkit::MariaDb::start(o).unwrap()
    };
    let source = server("bf-bench-source", 41);
    let target = server("bf-bench-target", 42);
    exec(&source.root_url(), "CREATE DATABASE shop").await;
    let seeded = Instant::now();
    run(Command::new(bin("legacy-monolith"))
        .env("SHOP_DATABASE_URL", source.url("shop"))
        .env(
            "SHOP_JWT_SECRET",
            "bench-secret-bench-secret-bench-secret!!",
        )
        .args([
            "seed",
            "--users",
            &users.to_string(),
            "--products",
            "10",
            "--orders",
            "10",
        ]));
    let seed_secs = seeded.elapsed().as_secs_f64();
    let rows = query_u64(&source.url("shop"), "SELECT COUNT(*) FROM users").await;
    let bytes = query_u64(
        &source.root_url(),
        "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'users'",
    )
    .await;
    let ddl: (String, String) = {
        let mut c = mysql_async::Conn::from_url(source.url("shop").as_str())
            .await
            .unwrap();
        let r = c
            .query_first("SHOW CREATE TABLE users")
            .await
            .unwrap()
            .unwrap();
        c.disconnect().await.unwrap();
        r
    };
    for db in ["copy_dump", "copy_cdc"] {
        exec(&target.root_url(), &format!("CREATE DATABASE {db}")).await;
        exec(&target.url(db), &ddl.1).await;
    }

    // Baseline: mysqldump --single-transaction | mysql, data only, same table, same servers.
    let dumped = Instant::now();
    run(Command::new("bash").arg("-c").arg(format!(
        "set -o pipefail; mysqldump --protocol=tcp -h127.0.0.1 -P{} -uroot --single-transaction --no-create-info --skip-add-locks shop users | mysql --protocol=tcp -h127.0.0.1 -P{} -uroot copy_dump",
        source.port(),
        target.port()
    )));
    let dump_secs = dumped.elapsed().as_secs_f64();

    // cdc-sync: the stream runs, the backfill copies through it.
    let dir = testkit::TempDir::new("bf-bench").unwrap();
    let config = dir.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"bench\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = 4999\nlisten = \"127.0.0.1:{}\"\n\n[[tables]]\nsource = \"shop.users\"\ntarget = \"copy_cdc.users\"\n",
            source.root_url(),
            target.root_url(),
            testkit::free_port()
        ),
    )
    .unwrap();
    let stream = testkit::ProcessGuard::spawn(
        &bin("cdc-sync"),
        &[
            "stream".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &dir.path().join("stream.pid"),
        &dir.path().join("stream.log"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copied = Instant::now();
    let out = run(Command::new(bin("cdc-sync"))
        .args([
            "backfill",
            "--table",
            "shop.users",
            "--chunk-size",
            "20000",
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::null()));
    let cdc_secs = copied.elapsed().as_secs_f64();
    let verified = Instant::now();
    let report = run(Command::new(bin("cdc-sync"))
        .args([
            "verify",
            "--table",
            "shop.users",
            "--json",
            "--chunk-size",
            "50000",
            "--config",
        ])
        .arg(&config));
    let verify_secs = verified.elapsed().as_secs_f64();
    // The same copy again over two key ranges at once, into the emptied target.
    exec(&target.root_url(), "TRUNCATE TABLE copy_cdc.users").await;
    let parallel = Instant::now();
    run(Command::new(bin("cdc-sync"))
        .args([
            "backfill",
            "--table",
            "shop.users",
            "--chunk-size",
            "20000",
            "--parallel",
            "2",
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::null()));
    let parallel_secs = parallel.elapsed().as_secs_f64();
    drop(stream);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["source_rows"].as_u64(), Some(rows), "{report}");

    let gb = bytes as f64 / 1e9;
    let rate = |secs: f64| rows as f64 / secs;
    println!("# Backfill and verify benchmark\n");
    println!(
        "Table `shop.users` from `legacy-monolith seed --users {users}`: {rows} rows, {gb:.2} GB on disk (data + indexes), seeded in {seed_secs:.1} s. Both copies go from the monolith server to the services server; the cdc-sync backfill runs through a live stream.\n"
    );
    println!("| copy | seconds | rows/s | MB/s (on-disk size) | vs mysqldump |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `mysqldump --single-transaction \\| mysql` | {dump_secs:.1} | {:.0} | {:.1} | 1.00× |",
        rate(dump_secs),
        bytes as f64 / 1e6 / dump_secs
    );
    println!(
        "| `cdc-sync backfill` (stream running) | {cdc_secs:.1} | {:.0} | {:.1} | {:.2}× |",
        rate(cdc_secs),
        bytes as f64 / 1e6 / cdc_secs,
        dump_secs / cdc_secs
    );
    println!(
        "| `cdc-sync backfill --parallel 2` (stream running) | {parallel_secs:.1} | {:.0} | {:.1} | {:.2}× |",
        rate(parallel_secs),
        bytes as f64 / 1e6 / parallel_secs,
        dump_secs / parallel_secs
    );
    println!(
        "\n`cdc-sync verify` of the copy: {verify_secs:.1} s, {:.0} rows/s per side, result {}.\n",
        rate(verify_secs),
        if report["missing"].as_array().is_some_and(|a| a.is_empty())
            && report["different"].as_array().is_some_and(|a| a.is_empty())
            && report["extra"].as_array().is_some_and(|a| a.is_empty())
        {
            "clean"
        } else {
            "NOT clean"
        }
    );
    let per_gb = |secs: f64| secs / gb.max(1e-9);
    println!(
        "Extrapolated to 500 GB at these rates: backfill {:.1} h ({:.1} h with --parallel 2), verify {:.1} h, mysqldump | mysql {:.1} h (linear in size; the real table's row width and the servers' disks change this).\n",
        per_gb(cdc_secs) * 500.0 / 3600.0,
        per_gb(parallel_secs) * 500.0 / 3600.0,
        per_gb(verify_secs) * 500.0 / 3600.0,
        per_gb(dump_secs) * 500.0 / 3600.0
    );
    println!("cdc-sync's own summary: {}", out.trim());
}
