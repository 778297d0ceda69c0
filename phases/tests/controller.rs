//! `strangler phase advance|rollback` against real parts: two private MariaDB servers, the real
//! cdc-sync binary streaming both ways (with its admin API), the real proxy binary (flags in
//! MySQL, operator and viewer tokens), and a monolith and a service stand-in that read and write
//! their own copy of `users`. A domain goes monolith → backfilling → verified → shadow →
//! canary → service-primary and back to monolith; on the way every gate refuses once, naming
//! its figure, the lease and the operator role are enforced, and a forced move is audited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use mysql_async::prelude::Queryable;

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const API_TOKEN: &str = "controller-api-token-0123456789";

async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

/// A statement the streams do not see (kept out of the binlog): a corruption, not a write.
async fn exec_unlogged(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop("SET SESSION sql_log_bin = 0").await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

async fn names(url: &str) -> Vec<(u64, String)> {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let rows = c
        .query("SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    rows
}

/// The shop's `users` API on one side: register writes a row, `me` reads it.
fn side(pool: mysql_async::Pool) -> Router {
    async fn me(State(pool): State<mysql_async::Pool>, h: HeaderMap) -> (StatusCode, String) {
        let id: u64 = h
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut c = pool.get_conn().await.unwrap();
        let name: Option<String> = c
            .exec_first("SELECT name FROM users WHERE id = ?", (id,))
            .await
            .unwrap();
        match name {
            Some(n) => (
                StatusCode::OK,
                serde_json::json!({"id": id, "name": n}).to_string(),
            ),
            None => (StatusCode::NOT_FOUND, "{\"error\":\"not_found\"}".into()),
        }
    }
    async fn register(
        State(pool): State<mysql_async::Pool>,
        Json(body): Json<serde_json::Value>,
    ) -> (StatusCode, String) {
        let mut c = pool.get_conn().await.unwrap();
        c.exec_drop(
            "INSERT INTO users (name) VALUES (?)",
            (body["name"].as_str().unwrap_or("?"),),
        )
        .await
        .unwrap();
        let id = c.last_insert_id().unwrap_or(0);
        (
            StatusCode::CREATED,
            serde_json::json!({"id": id}).to_string(),
        )
    }
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/api/users/me", axum::routing::get(me))
        .route("/api/users/register", axum::routing::post(register))
        .with_state(pool)
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn wait_ok(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

struct Cli {
    domains: PathBuf,
    database_url: String,
}

impl Cli {
    /// `strangler phase …`: exit code, stdout, stderr.
    fn phase(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .arg("--domains")
            .arg(&self.domains)
            .args(["phase", "--database-url", &self.database_url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A move that must succeed; its JSON transition.
    fn moved(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.phase(&[args, &["--json"]].concat());
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// A move that must be refused with a message naming each of `needles`.
    fn refuses(&self, args: &[&str], needles: &[&str]) {
        let err = self.refused(args);
        for n in needles {
            assert!(err.contains(n), "{n:?} not in: {err}");
        }
    }

    /// A move that must be refused; its message.
    fn refused(&self, args: &[&str]) -> String {
        let (code, out, err) = self.phase(args);
        assert_ne!(code, 0, "{args:?} was not refused: {out}");
        err
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn spawn(bin: &Path, args: &[&str], dir: &Path, name: &str) -> testkit::ProcessGuard {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    testkit::ProcessGuard::spawn(
        bin,
        &args,
        &dir.join(format!("{name}.pid")),
        &dir.join(format!("{name}.log")),
    )
    .unwrap()
}

/// GET /api/users/me as `users` through the proxy; the backends that answered.
async fn browse(port: u16, users: impl Iterator<Item = u64>) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut backends = Vec::new();
    for u in users {
        let r = http
            .get(format!("http://127.0.0.1:{port}/api/users/me"))
            .header("x-user-id", u.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "user {u}");
        backends.push(r.headers()["x-strangler-backend"].to_str().unwrap().into());
    }
    backends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_moves_through_every_phase_and_back_and_each_gate_refuses() {
    let opts = |name: &str, id| testkit::MariaDbOptions::new(name, id);
    let m = testkit::MariaDb::start(opts("ctl-monolith", 41)).unwrap();
    let s = testkit::MariaDb::start(opts("ctl-services", 42)).unwrap();
    let src = m.create_database("ctl_shop").await.unwrap();
    let dst = s.create_database("ctl_user_svc").await.unwrap();
    let strangler = m.create_database("ctl_strangler").await.unwrap();
    let table =
        "CREATE TABLE users (id BIGINT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(80) NOT NULL)";
    exec(&src.url, table).await;
    exec(&dst.url, table).await;
    let mut c = mysql_async::Conn::from_url(src.url.as_str()).await.unwrap();
    for id in 1..=200u64 {
        c.exec_drop(
            "INSERT INTO users (id, name) VALUES (?, ?)",
            (id, format!("user {id}")),
        )
        .await
        .unwrap();
    }
    c.disconnect().await.unwrap();

    let dir = testkit::TempDir::new("controller").unwrap();
    let d = dir.path();
    let domains = d.join("domains.toml");
    std::fs::write(
        &domains,
        format!(
            "monolith_schema = \"{}\"\nmonolith_upstream = \"monolith\"\n\n[[domains]]\nname = \"users\"\nservice = \"svc\"\n\
             flag = \"route.users\"\ntables = {{ users = \"{}.users\" }}\nowner_key = {{ users = \"id\" }}\n\n\
             [[domains.routes]]\nname = \"users.me\"\nmethods = [\"GET\"]\npath = \"/api/users/me\"\n\n\
             [[domains.routes]]\nname = \"users.register\"\nmethods = [\"POST\"]\npath = \"/api/users/register\"\n",
            src.name, dst.name
        ),
    )
    .unwrap();
    let decl = phases::Declaration::load(&domains).unwrap();

    // Both streams, from the declaration, each with its admin API.
    let pid = std::process::id();
    let (m2s, s2m) = (format!("ctl-m2s-{pid}"), format!("ctl-s2m-{pid}"));
    let (m2s_port, s2m_port) = (testkit::free_port(), testkit::free_port());
    let stream_config = |name: &str,
                         from: &testkit::MariaDb,
                         to: &testkit::MariaDb,
                         reader: u32,
                         port: u16,
                         dir: phases::Direction| {
        // Each stream tells a stray write (a user's row written on the side that does not own
        // the user) by the proxy's flag.
        let side = match dir {
            phases::Direction::MonolithToServices => "monolith",
            phases::Direction::ServicesToMonolith => "service",
        };
        format!(
            "name = \"{name}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader}\nlisten = \"127.0.0.1:{port}\"\n\n\
             [ownership]\nflags_url = \"{}\"\nsource_side = \"{side}\"\n\n{}",
            from.root_url(),
            to.root_url(),
            strangler.url,
            decl.cdc_tables_toml(dir, &[])
        )
    };
    let m2s_config = d.join("m2s.toml");
    std::fs::write(
        &m2s_config,
        stream_config(
            &m2s,
            &m,
            &s,
            4941,
            m2s_port,
            phases::Direction::MonolithToServices,
        ),
    )
    .unwrap();
    let s2m_config = d.join("s2m.toml");
    std::fs::write(
        &s2m_config,
        stream_config(
            &s2m,
            &s,
            &m,
            4942,
            s2m_port,
            phases::Direction::ServicesToMonolith,
        ),
    )
    .unwrap();
    let cdc = testkit::workspace_binary("cdc-sync");
    let conf = |p: &Path| p.display().to_string();
    let _m2s = spawn(&cdc, &["stream", "--config", &conf(&m2s_config)], d, "m2s");
    let _s2m = spawn(&cdc, &["stream", "--config", &conf(&s2m_config)], d, "s2m");
    let m2s_admin = format!("http://127.0.0.1:{m2s_port}");
    let s2m_admin = format!("http://127.0.0.1:{s2m_port}");
    wait_ok(&format!("{m2s_admin}/readyz")).await;
    wait_ok(&format!("{s2m_admin}/readyz")).await;

    // The proxy in front of both sides.
    let monolith = serve(side(mysql_async::Pool::new(src.url.as_str()))).await;
    let service = serve(side(mysql_async::Pool::new(dst.url.as_str()))).await;
    let seed = d.join("seed.json");
    std::fs::write(&seed, "{\"flags\":{}}").unwrap();
    flags::source::file::FileSource::new(&seed)
        .put(flags::RouteMode::Monolith.to_flag("route.users", 0, "salt"))
        .unwrap();
    let (port, admin, api) = (
        testkit::free_port(),
        testkit::free_port(),
        testkit::free_port(),
    );
    let proxy_config = d.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\ndebug_header = true\n\
             upgrade_sock = \"{}\"\n\n[control]\ntokens = [\n  {{ name = \"ops\", token = \"{OPERATOR}\", role = \"operator\" }},\n  \
             {{ name = \"watcher\", token = \"{VIEWER}\", role = \"viewer\" }},\n]\n\n\
             [phases]\ncontroller = \"http://127.0.0.1:{api}\"\ntoken = \"{API_TOKEN}\"\n\n\
             [flags]\nsource = \"mysql\"\nurl = \"{}\"\nseed = \"{}\"\npoll_ms = 50\n\n\
             [user_key]\nheader = \"x-user-id\"\n\n[auto_rollback]\nenabled = false\n\n\
             [upstreams.monolith]\nbackends = [\"{monolith}\"]\nhealth_interval_ms = 100\n\n\
             [upstreams.svc]\nbackends = [\"{service}\"]\nhealth_interval_ms = 100\n\n{}",
            d.join("proxy.sock").display(),
            strangler.url,
            seed.display(),
            decl.proxy_routes_toml()
        ),
    )
    .unwrap();
    let _proxy = spawn(
        &testkit::workspace_binary("strangler-proxy"),
        &["--config", &conf(&proxy_config)],
        d,
        "proxy",
    );
    wait_ok(&format!("http://127.0.0.1:{admin}/readyz")).await;

    let controller = |token: &str| {
        format!(
            "proxies = [\"http://127.0.0.1:{admin}\"]\nadmin_token = \"{token}\"\napi_token = \"{API_TOKEN}\"\n\
             monolith_url = \"{}\"\nservices_url = \"{}\"\n\
             to_services_stream = \"{m2s}\"\nto_monolith_stream = \"{s2m}\"\n\
             to_services_admin = \"{m2s_admin}\"\nto_monolith_admin = \"{s2m_admin}\"\n\
             to_services_config = \"{}\"\n\n[gates]\nshadow_min_compared = 20\ncanary_min_requests = 10\n",
            m.root_url(),
            s.root_url(),
            m2s_config.display()
        )
    };
    let config = d.join("strangler.toml");
    std::fs::write(&config, controller(OPERATOR)).unwrap();
    let viewer_config = d.join("viewer.toml");
    std::fs::write(&viewer_config, controller(VIEWER)).unwrap();
    // The controller's API, behind the proxy's /admin/phases.
    let _serve = spawn(
        &testkit::workspace_binary("strangler"),
        &[
            "--domains",
            &conf(&domains),
            "serve",
            "--config",
            &conf(&config),
            "--database-url",
            &strangler.url,
            "--listen",
            &format!("127.0.0.1:{api}"),
        ],
        d,
        "serve",
    );
    wait_ok(&format!("http://127.0.0.1:{api}/readyz")).await;
    let ctl = |token: &str, args: &[&str]| -> (bool, String, String) {
        let out = std::process::Command::new(testkit::workspace_binary("stranglerctl"))
            .args([
                "--url",
                &format!("http://127.0.0.1:{admin}"),
                "--token",
                token,
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cli = Cli {
        domains: domains.clone(),
        database_url: strangler.url.clone(),
    };
    let cfg = conf(&config);
    let act = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--config".into(),
            cfg.clone(),
            "--reason".into(),
            "migration".into(),
        ]);
        v
    };

    // monolith → backfilling: the owner's stream must keep up; paused, it refuses.
    let (code, _, err) = std::process::Command::new(&cdc)
        .args([
            "pause",
            "--config",
            &conf(&m2s_config),
            "--reason",
            "maintenance",
        ])
        .output()
        .map(|o| {
            (
                o.status.code(),
                o.stdout,
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    cli.refuses(
        &strs(&act(&["advance", "users"])),
        &["replication-lag", "paused"],
    );
    let out = std::process::Command::new(&cdc)
        .args(["resume", "--config", &conf(&m2s_config), "--reason", "done"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = cli.moved(&strs(&act(&["advance", "users"])));
    assert_eq!(t["to"], "backfilling", "{t}");
    assert!(
        t["actions"][0].as_str().unwrap().contains("backfill"),
        "{t}"
    );

    // backfilling → verified: once the backfill is done, a fresh verify must be clean.
    for _ in 0..200 {
        if names(&dst.url).await.len() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec_unlogged(&dst.url, "UPDATE users SET name = 'tampered' WHERE id = 7").await;
    cli.refuses(
        &strs(&act(&["advance", "users"])),
        &["verify-clean", "1 differing rows"],
    );
    exec_unlogged(&dst.url, "UPDATE users SET name = 'user 7' WHERE id = 7").await;
    let t = cli.moved(&strs(&act(&["advance", "users"])));
    assert_eq!(t["to"], "verified", "{t}");

    // verified → shadow: ids from the two sides must not collide.
    cli.refuses(
        &strs(&act(&["advance", "users"])),
        &["id-ranges", "monolith increment 1 offset 1"],
    );
    m.execute("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 1")
        .await
        .unwrap();
    s.execute("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 2")
        .await
        .unwrap();
    let t = cli.moved(&strs(&act(&["advance", "users"])));
    assert_eq!(t["to"], "shadow", "{t}");

    // shadow → canary: enough comparisons, few mismatches, fleet-wide.
    cli.refuses(
        &strs(&act(&["advance", "users"])),
        &["shadow-mismatches", "compared requests"],
    );
    assert!(browse(port, 1..=30).await.iter().all(|b| b == "monolith"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = cli.moved(&strs(&act(&["advance", "users", "--to", "canary 30%"])));
    assert_eq!(t["to"], "canary 30%", "{t}");

    // A viewer cannot force; an operator can, and it is audited.
    let viewer = conf(&viewer_config);
    let err = cli.refused(&[
        "advance", "users", "--config", &viewer, "--reason", "x", "--force",
    ]);
    assert!(err.contains("needs the operator role"), "{err}");
    // Another controller's lease stops this one.
    let store = phases::PhaseStore::open(&strangler.url).await.unwrap();
    store.acquire_lease("someone-else", 60).await.unwrap();
    let err = cli.refused(&strs(&act(&["advance", "users"])));
    assert!(err.contains("lease is held by someone-else"), "{err}");
    store.release_lease("someone-else").await.unwrap();

    // canary → service-primary: the canary must have served enough requests.
    cli.refuses(
        &strs(&act(&["advance", "users", "--to", "service-primary"])),
        &["canary-health", "requests"],
    );
    let served = browse(port, 1..=200).await;
    let on_service = served.iter().filter(|b| *b == "service").count();
    assert!(
        (20..=110).contains(&on_service),
        "{on_service} of 200 on the canary"
    );
    // The proxies count completed seconds only.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // canary → write-canary: the canary's users write on the service too, once both streams
    // split ownership by the flag (writes-ready); the users move with the hold-drain-switch.
    let t = cli.moved(&strs(&act(&[
        "advance",
        "users",
        "--to",
        "write-canary 30%",
    ])));
    assert_eq!(t["to"], "write-canary 30%", "{t}");
    let passed = |t: &serde_json::Value, gate: &str| {
        t["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["gate"] == gate && g["passed"] == true)
    };
    assert!(passed(&t, "writes-ready"), "{t}");
    assert!(t["switch"]["paused_ms"].as_u64().unwrap() < 10_000, "{t}");
    let route: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/admin/routes/users.me"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (route["mode"].as_str(), route["percent"].as_f64()),
        (Some("write-canary"), Some(30.0)),
        "{route}"
    );
    // A stray write: a user the monolith owns, changed on the service. The reverse stream keeps
    // it as a conflict instead of applying it, and the next move waits until it is settled.
    let split = flags::RouteMode::WriteCanary { percent: 30.0 }.to_flag("route.users", 0, "salt");
    let monolith_user = (1..=200u64)
        .find(|u| {
            flags::evaluate(&split, &flags::Context::new(u.to_string()))
                .value
                .and_then(|v| v.as_str())
                == Some("monolith")
        })
        .unwrap();
    exec(
        &dst.url,
        &format!("UPDATE users SET name = 'stray' WHERE id = {monolith_user}"),
    )
    .await;
    let conflicts = |extra: &[&str]| {
        let out = std::process::Command::new(&cdc)
            .args(["conflicts", "--config", &conf(&s2m_config)])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut open = serde_json::Value::Null;
    for _ in 0..100 {
        open = serde_json::from_str(&conflicts(&["--json"])).unwrap();
        if open.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(
        names(&src.url).await[monolith_user as usize - 1].1,
        format!("user {monolith_user}"),
        "the stray write reached the monolith"
    );
    browse(port, 1..=200).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cli.refuses(
        &strs(&act(&["advance", "users", "--to", "service-primary"])),
        &["conflicts: 1 open conflict(s)", "cdc-sync conflicts"],
    );
    let id = open[0]["id"].as_u64().unwrap().to_string();
    conflicts(&[
        "resolve",
        "--id",
        &id,
        "--reason",
        "the user's own change wins",
    ]);
    exec_unlogged(
        &dst.url,
        &format!("UPDATE users SET name = 'user {monolith_user}' WHERE id = {monolith_user}"),
    )
    .await;
    browse(port, 1..=200).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // This move goes through the proxy's admin API: a viewer may look but not move.
    let (ok, out, err) = ctl(VIEWER, &["phase", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("users") && l.contains("canary 30%")),
        "{out}"
    );
    assert!(out.contains("pass canary-health"), "{out}");
    let (ok, _, err) = ctl(
        VIEWER,
        &[
            "phase",
            "advance",
            "users",
            "--to",
            "service-primary",
            "--reason",
            "x",
        ],
    );
    assert!(!ok && err.contains("no permission"), "{err}");
    let direct = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api}/phases"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        401,
        "the controller API takes the proxies' token only"
    );
    let (ok, out, err) = ctl(
        OPERATOR,
        &[
            "--json",
            "phase",
            "advance",
            "users",
            "--to",
            "service-primary",
            "--reason",
            "canary healthy",
        ],
    );
    assert!(ok, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["to"], "service-primary", "{t}");
    assert!(t["switch"]["paused_ms"].as_u64().unwrap() < 10_000, "{t}");

    // The service owns the writes now; they flow back to the monolith.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/users/register"))
        .json(&serde_json::json!({"name": "registered on the service"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-strangler-backend"], "service");
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(id % 2, 0, "the service numbers even ids");

    // Back to the monolith in one command: the service's writes are there before it takes any.
    let (ok, out, err) = ctl(OPERATOR, &["phase", "plan", "users", "--to", "monolith"]);
    assert!(
        ok && out.contains("service-primary → monolith; gates: replication-lag"),
        "{out}{err}"
    );
    let (ok, out, err) = ctl(
        OPERATOR,
        &["--json", "phase", "rollback", "users", "--reason", "back"],
    );
    assert!(ok, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (t["from"].as_str(), t["to"].as_str()),
        (Some("service-primary"), Some("monolith")),
        "{t}"
    );
    assert!(
        names(&src.url)
            .await
            .contains(&(id, "registered on the service".into())),
        "the service's write never reached the monolith"
    );
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/users/register"))
        .json(&serde_json::json!({"name": "back on the monolith"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-strangler-backend"], "monolith");

    // Moving the wrong way is refused with the command to use.
    let err = cli.refused(&strs(&act(&["rollback", "users", "--to", "shadow"])));
    assert!(err.contains("use `phase advance"), "{err}");

    // The audit trail: every move, who, the gates' figures.
    let (code, out, err) = cli.phase(&["history", "users", "--json"]);
    assert_eq!(code, 0, "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let moves: Vec<&str> = history
        .iter()
        .rev()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        moves,
        [
            "backfilling",
            "verified",
            "shadow",
            "canary 30%",
            "write-canary 30%",
            "service-primary",
            "monolith"
        ]
    );
    assert!(history.iter().all(|e| e["actor"] == "ops"), "{out}");
    let primary = &history[1];
    let gates: Vec<&str> = primary["gates"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(
        gates,
        [
            "canary-health",
            "conflicts",
            "escrow-refusals",
            "replication-lag",
            "verify-clean",
            "id-ranges"
        ]
    );
    assert!(primary["gates"]["switch"]["mark"].is_string(), "{primary}");

    // A forced move past a failing gate is marked as such, with what was overridden.
    let pause = |what: &str| {
        let out = std::process::Command::new(&cdc)
            .args([what, "--config", &conf(&m2s_config), "--reason", "test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pause("pause");
    let t = cli.moved(&strs(&act(&["advance", "users", "--force"])));
    assert_eq!(
        (t["to"].as_str(), t["forced"].as_bool()),
        (Some("backfilling"), Some(true)),
        "{t}"
    );
    assert!(
        t["actions"][0]
            .as_str()
            .unwrap()
            .starts_with("forced past: replication-lag"),
        "{t}"
    );
    pause("resume");
    let (_, out, _) = cli.phase(&["history", "users", "--limit", "1", "--json"]);
    assert!(out.contains("\"forced\": true"), "{out}");

    // Forward again to service-primary (forced past the traffic gates this time), then the last
    // move: decommissioned.
    let started = std::time::Instant::now();
    loop {
        let (code, _, err) = cli.phase(&strs(&act(&["advance", "users", "--json"])));
        if code == 0 {
            break;
        }
        assert!(
            err.contains("backfill") && started.elapsed() < Duration::from_secs(60),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for to in ["shadow", "canary 50%", "service-primary"] {
        let t = cli.moved(&strs(&act(&["advance", "users", "--to", to, "--force"])));
        assert_eq!(t["to"], to, "{t}");
    }
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/users/register"))
        .json(&serde_json::json!({"name": "last before decommissioning"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-strangler-backend"], "service");
    let (ok, out, err) = ctl(
        OPERATOR,
        &["phase", "plan", "users", "--to", "decommissioned"],
    );
    assert!(
        ok && out.contains("service-primary → decommissioned"),
        "{out}{err}"
    );
    let err = cli.refused(&strs(&act(&["advance", "users"])));
    assert!(err.contains("--to decommissioned"), "{err}");
    let t = cli.moved(&strs(&act(&["advance", "users", "--to", "decommissioned"])));
    assert_eq!(t["to"], "decommissioned", "{t}");
    let actions = t["actions"].to_string();
    for needle in [
        "verified",
        "retired the monolith side of route.users",
        "from the services → monolith stream",
        "read-only",
    ] {
        assert!(actions.contains(needle), "{needle}: {t}");
    }
    // The last write made on the service reached the monolith before its copy froze.
    assert!(
        names(&src.url)
            .await
            .iter()
            .any(|(_, n)| n == "last before decommissioning"),
        "the monolith's copy missed a write"
    );
    // The monolith's copy refuses writes, naming the domain.
    let mut c = mysql_async::Conn::from_url(src.url.as_str()).await.unwrap();
    let refused = c
        .query_drop("UPDATE users SET name = 'stray' WHERE id = 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("domain users is decommissioned"),
        "{refused}"
    );
    c.disconnect().await.unwrap();
    // The reverse stream carries it no more; the forward stream still runs.
    let status: serde_json::Value = reqwest::get(format!("{s2m_admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["retired"],
        serde_json::json!([format!("{}.users", dst.name)]),
        "{status}"
    );
    let m2s_status: serde_json::Value = reqwest::get(format!("{m2s_admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m2s_status["running"], true, "{m2s_status}");
    // The proxy has no monolith side for the routes: the service answers, and no mode, kill
    // switch or phase move sends users back.
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/users/register"))
        .json(&serde_json::json!({"name": "after decommissioning"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-strangler-backend"], "service");
    let (ok, _, err) = ctl(
        OPERATOR,
        &[
            "flag", "set", "users.me", "--mode", "monolith", "--reason", "no",
        ],
    );
    assert!(!ok && err.contains("decommissioned"), "{err}");
    let err = cli.refused(&strs(&act(&["rollback", "users"])));
    assert!(err.contains("decommissioned"), "{err}");
    // The runbook's archive of the frozen copy: every row, no read-only triggers.
    let dump = std::process::Command::new("mysqldump")
        .args(["--single-transaction", "--skip-triggers", "-h", "127.0.0.1"])
        .arg(format!("-P{}", m.port()))
        .args(["-u", "root", &src.name, "users"])
        .output()
        .unwrap();
    let dump = testkit::assert_success(&dump, "mysqldump");
    assert!(
        dump.contains("last before decommissioning"),
        "the archive misses rows"
    );
    assert!(
        !dump.contains("strangler_ro_"),
        "the archive carries the triggers"
    );
}
