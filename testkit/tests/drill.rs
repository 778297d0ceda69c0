//! The migration drill, reduced: the whole dev stack (`strangler-dev`: private MariaDB servers,
//! the monolith, the four services, both cdc-sync streams and the proxy, supervised) with
//! shoppers loading the proxy while `users` goes monolith → … → service-primary → monolith and
//! `orders` the same way through a write canary (10%, 50%: both sides take orders, the stock in
//! escrow), cdc-sync and each service killed with SIGKILL on the way (`strangler-drill`). It
//! passes only if every acknowledged write is on both sides, the stock agrees and never went
//! below zero, no conflict is open, verify is clean and no idempotent request failed. The full
//! drill (1M users, 2M orders) is `bench/drill.sh`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A base port with `base..=base+12` all free (the stack's services sit at fixed offsets).
fn free_block(salt: u16) -> u16 {
    let pid = std::process::id() as u16;
    for i in 0..200u16 {
        let base = 30_000 + (pid.wrapping_mul(7).wrapping_add(salt).wrapping_add(i * 37)) % 25_000;
        if (0..=12).all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return base;
        }
    }
    panic!("no block of 13 free ports");
}

/// Stops the stack as Ctrl-C would (it stops its servers and processes), killing it if it hangs.
struct Stack(Child);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
    }
}

#[test]
fn users_and_orders_move_there_and_back_under_load_with_kills_and_nothing_is_lost() {
    let exe = Path::new(env!("CARGO_BIN_EXE_strangler-dev"));
    let bin_dir = exe.parent().unwrap();
    let dir = testkit::TempDir::new("drill").unwrap();
    let state = dir.path().join("stack");
    let (web, admin_and_cdc) = (free_block(0), free_block(10_000));
    let log = std::fs::File::create(dir.path().join("strangler-dev.log")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let child = Command::new(exe)
        .current_dir(root)
        .args(["--bin-dir", &bin_dir.display().to_string()])
        .args(["--state-dir", &state.display().to_string()])
        .args(["--monolith-db-port", "0", "--services-db-port", "0"])
        .args(["--monolith-port", &web.to_string()])
        .args(["--proxy-port", &(admin_and_cdc).to_string()])
        .args(["--proxy-admin-port", &(admin_and_cdc + 1).to_string()])
        .args(["--cdc-port", &(admin_and_cdc + 5).to_string()])
        .args(["--users", "1000", "--orders", "2000"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stack = Stack(child);
    let started = Instant::now();
    while !state.join("stack.json").exists() {
        if let Ok(Some(status)) = stack.0.try_wait() {
            panic!(
                "strangler-dev exited ({status}): {}",
                std::fs::read_to_string(dir.path().join("strangler-dev.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the stack was not up within 300 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The stack's gates, scaled to four shoppers on a debug build on a shared machine: fewer
    // comparisons and canary requests to judge on, a p99 bound it can meet.
    let stack_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("stack.json")).unwrap()).unwrap();
    let controller = dir.path().join("strangler.toml");
    let text = std::fs::read_to_string(stack_json["controller_config"].as_str().unwrap()).unwrap();
    std::fs::write(
        &controller,
        format!(
            "{text}\n[gates]\ncanary_max_p99_ms = 5000.0\nshadow_min_compared = 30\ncanary_min_requests = 15\n"
        ),
    )
    .unwrap();
    let report = dir.path().join("drill.md");
    let out = Command::new(env!("CARGO_BIN_EXE_strangler-drill"))
        .args(["--stack", &state.display().to_string()])
        .args(["--domain", "users", "--domain", "orders"])
        .args(["--workers", "4", "--dwell-secs", "3"])
        .args(["--controller-config", &controller.display().to_string()])
        .args(["--report", &report.display().to_string()])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    // Every auto-rollback the proxy made, and why (a service killed while it owned writes).
    let proxy_log =
        std::fs::read_to_string(state.join("logs/strangler-proxy.log")).unwrap_or_default();
    for line in proxy_log.lines().filter(|l| l.contains("auto-rollback")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "drill failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    for line in [
        "| users | canary 50% → service-primary |",
        "`kill -9` cdc-sync",
        "`kill -9` user-service",
        "acknowledged registrations are on both sides",
        "verify shop.users clean",
        "| orders | canary 10% → write-canary 10% |",
        "| orders | write-canary 10% → write-canary 50% |",
        "| orders | write-canary 50% → service-primary |",
        "| orders | write-canary 50% | ",
        "acknowledged orders are on both sides",
        "agrees on both sides after both sold, none below zero",
        "no open conflict in either stream",
        "verify shop.orders clean",
        "- pass: 0 of",
    ] {
        assert!(
            text.contains(line),
            "{line:?} missing from the report:\n{text}"
        );
    }
    // Back to the monolith: by the drill, or first by the proxy's auto-rollback through the
    // controller when the killed service burned the route's SLO.
    for domain in ["users", "orders"] {
        assert!(
            text.contains(&format!("| {domain} | service-primary → "))
                || text.contains(&format!(
                    "| {domain} | (rolled back by the proxy's auto-rollback) → "
                )),
            "{domain} never went back:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    drop(stack);
}
