//! The `strangler` CLI as an operator runs it: rendering, phase status, plans and history, in
//! human and JSON form, and its answers to mistakes (exit 2) and an unreachable store (exit 1).

use std::process::{Command, Output};

use phases::{Move, Phase, PhaseStore};

fn strangler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strangler"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .expect("strangler runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn domains_render_both_directions() {
    let back = stdout(&strangler(&[
        "domains",
        "streams",
        "--direction",
        "services-to-monolith",
        "--domain",
        "orders",
    ]));
    assert_eq!(back.matches("[[tables]]").count(), 3, "{back}");
    assert!(back.contains("source = \"order_svc.orders\"\ntarget = \"shop.orders\""));
    let forward = stdout(&strangler(&[
        "domains",
        "streams",
        "--direction",
        "monolith-to-services",
    ]));
    assert_eq!(forward.matches("[[tables]]").count(), 7, "{forward}");
    let routes = stdout(&strangler(&["domains", "routes"]));
    assert!(routes.contains("name = \"users.login\""));
    let bad = strangler(&["--domains", "nowhere.toml", "domains", "routes"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nowhere.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_plan_and_history_read_the_store() {
    let db = testkit::monolith_server()
        .create_database("strangler")
        .await
        .unwrap();
    let store = PhaseStore::open(&db.url).await.unwrap();
    let users = store.states(&["users"]).await.unwrap().remove(0);
    store
        .record(Move {
            domain: "users",
            from: &users,
            to: Phase::Backfilling,
            actor: "ops@shop",
            reason: "copy the users",
            gates: serde_json::json!({"replication-lag": {"seconds": 0.2}}),
            forced: false,
        })
        .await
        .unwrap();
    let url = db.url.as_str();
    // The proxy's flag table, where someone put users on a canary outside the phases.
    let pool = mysql_async::Pool::new(url);
    let flags_table = flags::source::mysql::MysqlSource::new(pool.clone(), "strangler_flags");
    flags_table.ensure_table().await.unwrap();
    flags_table
        .seed(
            &flags::FlagSet::new([
                flags::RouteMode::Canary { percent: 10.0 }.to_flag("route.users", 0, "salt"),
                flags::RouteMode::Monolith.to_flag("route.orders", 0, "salt"),
            ])
            .unwrap(),
            "test",
        )
        .await
        .unwrap();

    let out = strangler(&["phase", "--database-url", url, "status"]);
    let table = stdout(&out);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains(
            "warning: users: the flag route.users serves canary 10% but the phase backfilling fixes monolith"
        ),
        "{warnings}"
    );
    assert!(!warnings.contains("orders"), "{warnings}");
    let users_line = table.lines().find(|l| l.starts_with("users")).unwrap();
    assert!(
        users_line.contains("backfilling") && users_line.contains("ops@shop"),
        "{table}"
    );
    assert!(users_line.contains("monolith-to-service"), "{table}");
    let orders_line = table.lines().find(|l| l.starts_with("orders")).unwrap();
    assert!(orders_line.contains("never"), "{table}");

    let json: serde_json::Value = serde_json::from_str(&stdout(&strangler(&[
        "phase",
        "--database-url",
        url,
        "status",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert_eq!(json[0]["domain"], "users");
    assert_eq!(json[0]["phase"], "backfilling");
    assert_eq!(json[0]["owner"], "monolith");
    assert_eq!(json[0]["route_mode_now"]["mode"], "canary");
    assert_eq!(json[2]["route_mode_now"]["mode"], "monolith");
    assert!(json[1]["route_mode_now"].is_null());

    let plan: serde_json::Value = serde_json::from_str(&stdout(&strangler(&[
        "phase",
        "--database-url",
        url,
        "plan",
        "users",
        "--canary-steps",
        "5,25",
        "--json",
    ])))
    .unwrap();
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "verified",
            "shadow",
            "canary 5%",
            "canary 25%",
            "service-primary"
        ]
    );
    assert_eq!(plan["steps"][2]["effect"]["reads_only"], true);
    assert_eq!(
        plan["steps"][4]["effect"]["replication"],
        "service-to-monolith"
    );
    let human = stdout(&strangler(&[
        "phase",
        "--database-url",
        url,
        "plan",
        "users",
        "--to",
        "monolith",
    ]));
    assert!(
        human.contains("backfilling → monolith") && human.contains("replication-lag"),
        "{human}"
    );

    let history = stdout(&strangler(&[
        "phase",
        "--database-url",
        url,
        "history",
        "users",
    ]));
    assert!(
        history.contains("monolith → backfilling by ops@shop: copy the users"),
        "{history}"
    );

    // Mistakes name what is wrong.
    let unknown = strangler(&["phase", "--database-url", url, "plan", "payments"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no domain \"payments\""));
    let skip = strangler(&[
        "phase",
        "--database-url",
        url,
        "plan",
        "users",
        "--to",
        "canary 0%",
    ]);
    assert_eq!(skip.status.code(), Some(2));
    let down = strangler(&[
        "phase",
        "--database-url",
        "mysql://root@127.0.0.1:1/strangler",
        "status",
    ]);
    assert_eq!(down.status.code(), Some(1));
}

#[test]
fn switch_refuses_bad_input_before_touching_anything() {
    let dir = testkit::TempDir::new("switch-cli").unwrap();
    let config = dir.path().join("strangler.toml");
    let good = "proxies = [\"http://127.0.0.1:1\"]\nmonolith_url = \"mysql://root@127.0.0.1:1\"\nservices_url = \"mysql://root@127.0.0.1:1\"\nto_services_stream = \"m2s\"\nto_monolith_stream = \"s2m\"\n";
    let run = |args: &[&str]| {
        let mut all = vec!["switch"];
        all.extend_from_slice(args);
        strangler(&all)
    };
    let path = config.to_str().unwrap();
    std::fs::write(&config, format!("{good}[bounds]\nhold_ms = 1000\n")).unwrap();
    let out = run(&[
        "users", "--to", "service", "--config", path, "--reason", "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hold_ms"));
    std::fs::write(&config, good).unwrap();
    let out = run(&[
        "payments", "--to", "service", "--config", path, "--reason", "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "users", "--to", "service", "--config", path, "--reason", " ",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // A proxy that does not answer: nothing held, nothing flipped, exit 1 naming it.
    let out = run(&[
        "users", "--to", "service", "--config", path, "--reason", "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy http://127.0.0.1:1"));
}
