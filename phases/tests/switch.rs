//! The ownership switch against real parts: the real proxy binary (flags in MySQL), a monolith
//! stand-in that writes each request to a real MariaDB table, a real cdc-sync stream draining it
//! to the other server, and writes flowing through the proxy the whole time. After the switch,
//! every write the monolith acknowledged is on the other side, later writes reach the service,
//! and no request failed; a switch whose stream cannot catch up is aborted with the flag back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use mysql_async::prelude::Queryable;
use phases::{Switch, SwitchError};

const TABLE: &str =
    "CREATE TABLE writes (id BIGINT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40) NOT NULL)";

async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

async fn count(url: &str) -> u64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM writes").await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap_or(0)
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The monolith stand-in: each POST inserts a row (a little slowly, so writes are in flight).
fn monolith(pool: mysql_async::Pool) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move |method: axum::http::Method| {
            let pool = pool.clone();
            async move {
                if method == axum::http::Method::POST {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    let mut c = pool.get_conn().await.unwrap();
                    c.query_drop("INSERT INTO writes (note) VALUES ('monolith')")
                        .await
                        .unwrap();
                }
                (axum::http::StatusCode::CREATED, "{}")
            }
        })
}

fn service(hits: Arc<AtomicU64>) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::CREATED, "{}")
            }
        })
}

/// The proxy binary of this workspace's build.
fn proxy_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("strangler-proxy");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p strangler-proxy)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_move_owner_without_one_lost_and_a_stuck_stream_aborts_the_switch() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("sw_src").await.unwrap();
    let dst = s.create_database("sw_dst").await.unwrap();
    let flags_db = m.create_database("sw_strangler").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;

    // The stream draining the monolith's writes.
    let stream = format!("sw{}", std::process::id());
    let config = cdc_sync::config::StreamConfig::parse(&format!(
        "name = \"{stream}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = 4901\n\n[[tables]]\nsource = \"{}.writes\"\ntarget = \"{}.writes\"\n",
        m.root_url(),
        s.root_url(),
        src.name,
        dst.name
    ))
    .unwrap();
    let metrics = cdc_sync::metrics::Metrics::new(&stream);
    let (stop_stream, rx) = tokio::sync::watch::channel(false);
    let (cfg, met) = (config.clone(), metrics.clone());
    let streaming =
        tokio::spawn(async move { cdc_sync::transport::direct::run(&cfg, met, rx).await });
    for _ in 0..600 {
        if metrics.running.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The proxy, flags in MySQL, route.users on the monolith.
    let hits = Arc::new(AtomicU64::new(0));
    let monolith_addr = serve(monolith(mysql_async::Pool::new(src.url.as_str()))).await;
    let service_addr = serve(service(hits.clone())).await;
    let dir = testkit::TempDir::new("switch").unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, "{\"flags\":{}}").unwrap();
    flags::source::file::FileSource::new(&seed)
        .put(flags::RouteMode::Monolith.to_flag("route.users", 0, "salt"))
        .unwrap();
    let (port, admin) = (testkit::free_port(), testkit::free_port());
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\ndebug_header = true\n\
             upgrade_sock = \"{}\"\n\n[flags]\nsource = \"mysql\"\nurl = \"{}\"\nseed = \"{}\"\npoll_ms = 50\n\n\
             [user_key]\nheader = \"x-user-id\"\n\n[auto_rollback]\nenabled = false\n\n\
             [upstreams.monolith]\nbackends = [\"{monolith_addr}\"]\nhealth_interval_ms = 100\n\n\
             [upstreams.svc]\nbackends = [\"{service_addr}\"]\nhealth_interval_ms = 100\n\n\
             [[routes]]\nname = \"users\"\nprefix = \"/api/users\"\nmethods = [\"GET\", \"POST\"]\nflag = \"route.users\"\nservice = \"svc\"\n",
            dir.path().join("proxy.sock").display(),
            flags_db.url,
            seed.display()
        ),
    )
    .unwrap();
    let _proxy = testkit::ProcessGuard::spawn(
        &proxy_binary(),
        &["--config".into(), config_path.display().to_string()],
        &dir.path().join("proxy.pid"),
        &dir.path().join("proxy.log"),
    )
    .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let ready = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writes through the proxy the whole time; every answer kept.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (http, writing) = (http.clone(), writing.clone());
        tokio::spawn(async move {
            let mut answers: Vec<(u16, String)> = Vec::new();
            while writing.load(Ordering::SeqCst) {
                let r = http
                    .post(format!("http://127.0.0.1:{port}/api/users/register"))
                    .header("x-user-id", "u1")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let backend = r.headers()["x-strangler-backend"]
                    .to_str()
                    .unwrap()
                    .to_string();
                answers.push((r.status().as_u16(), backend));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let switch = Switch {
        flag: "route.users".into(),
        route: "users".into(),
        to_mode: flags::RouteMode::Service,
        proxies: vec![format!("http://127.0.0.1:{admin}")],
        admin_token: None,
        old_owner_url: m.root_url(),
        stream: stream.clone(),
        stream_target_url: s.root_url(),
        offsets_db: config.offsets_db.clone(),
        hold: Duration::from_secs(5),
        drain: Duration::from_secs(3),
        catch_up: Duration::from_secs(10),
        actor: "test".into(),
        reason: "users to user-service".into(),
    };
    let report = phases::switch(&switch).await.unwrap();
    eprintln!("switch: {report:?}");
    // Every write the monolith acknowledged is on the other side the moment the switch returns.
    let (on_monolith, copied) = (count(&src.url).await, count(&dst.url).await);
    assert!(on_monolith > 10, "{on_monolith}");
    assert_eq!(
        copied, on_monolith,
        "acknowledged writes missing after the switch"
    );
    assert!(report.paused_ms < 5000, "{report:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&src.url).await,
        on_monolith,
        "the monolith still took writes"
    );

    // A switch back whose stream is stuck (stopped) is aborted: the flag stays, writes go on.
    let _ = stop_stream.send(true);
    streaming.await.unwrap().unwrap();
    let back = Switch {
        to_mode: flags::RouteMode::Monolith,
        old_owner_url: s.root_url(),
        stream: format!("{stream}-reverse"),
        stream_target_url: m.root_url(),
        catch_up: Duration::from_millis(800),
        reason: "users back".into(),
        ..switch.clone()
    };
    let err = phases::switch(&back).await.unwrap_err();
    assert!(matches!(err, SwitchError::CatchUp { .. }), "{err}");
    let admin_json = |path: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(format!("http://127.0.0.1:{admin}{path}")).send();
            r.await.unwrap().json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(admin_json("/admin/routes/users").await["mode"], "service");
    assert_eq!(
        admin_json("/admin/holds/route.users").await["hold"]["held"],
        false
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    writing.store(false, Ordering::SeqCst);
    let answers = writer.await.unwrap();
    assert!(
        answers.iter().all(|(status, _)| *status == 201),
        "a write failed"
    );
    let first_service = answers
        .iter()
        .position(|(_, b)| b == "service")
        .expect("writes reached the service");
    assert!(
        answers[first_service..].iter().all(|(_, b)| b == "service"),
        "a write went back to the monolith after the switch"
    );
    assert_eq!(answers[..first_service].len() as u64, on_monolith);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        (answers.len() - first_service) as u64
    );
}
