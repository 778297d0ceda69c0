//! The test kit against real programs: MariaDB servers with the binlog settings cdc-sync needs,
//! isolation between databases, cleanup, restart, and the tansu broker.

use mysql_async::prelude::Queryable;
use testkit::{MariaDb, MariaDbOptions, Tansu};

async fn variables(url: &str) -> (u32, String, String, String) {
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let row: (u32, String, String, String) = conn
        .query_first("SELECT @@server_id, @@log_bin, @@binlog_format, @@binlog_row_image")
        .await
        .unwrap()
        .unwrap();
    conn.disconnect().await.unwrap();
    row
}

#[tokio::test]
async fn two_servers_run_side_by_side_with_binlog_settings() {
    let monolith = testkit::monolith_server();
    let services = testkit::services_server();
    assert_ne!(monolith.port(), services.port());
    let (id, log_bin, format, image) = variables(&monolith.root_url()).await;
    assert_eq!(
        (id, log_bin.as_str(), format.as_str(), image.as_str()),
        (1, "1", "ROW", "FULL")
    );
    let (id, ..) = variables(&services.root_url()).await;
    assert_eq!(id, 2);
    // The statement behind row events (with the monolith's trace comment) reaches the binlog.
    let mut conn = mysql_async::Conn::from_url(&monolith.root_url())
        .await
        .unwrap();
    let annotate: Option<u8> = conn
        .query_first("SELECT @@binlog_annotate_row_events")
        .await
        .unwrap();
    assert_eq!(annotate, Some(1));
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn fresh_databases_are_isolated() {
    let server = testkit::monolith_server();
    let a = server.create_database("iso").await.unwrap();
    let b = server.create_database("iso").await.unwrap();
    assert_ne!(a.name, b.name);
    let mut ca = mysql_async::Conn::from_url(a.url.as_str()).await.unwrap();
    ca.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    ca.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mut cb = mysql_async::Conn::from_url(b.url.as_str()).await.unwrap();
    // The same table name in the other database does not exist yet.
    assert!(cb.query_drop("SELECT * FROM t").await.is_err());
}

#[tokio::test]
async fn dropped_server_is_killed_and_its_files_removed() {
    let server = MariaDb::start(MariaDbOptions::new("dropme", 77)).unwrap();
    let dir = server.dir().to_path_buf();
    let port = server.port();
    assert!(dir.exists());
    let (id, ..) = variables(&server.root_url()).await;
    assert_eq!(id, 77);
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The remover runs just after the server is gone.
    for _ in 0..100 {
        if !dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn killed_server_restarts_with_its_data() {
    let mut server = MariaDb::start(MariaDbOptions::new("restart", 78)).unwrap();
    let db = server.create_database("keep").await.unwrap();
    let mut conn = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    drop(conn);
    server.kill();
    assert!(!server.is_running());
    server.restart().unwrap();
    let mut conn = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    let id: Option<i32> = conn.query_first("SELECT id FROM t").await.unwrap();
    assert_eq!(id, Some(42));
}

#[test]
fn tansu_broker_starts_and_creates_topics() {
    let broker = Tansu::start().unwrap_or_else(|e| panic!("{e}"));
    // The port accepts a moment before the broker answers requests on a loaded machine.
    let mut created = broker.create_topic("strangler.test.topic", 3);
    for _ in 0..20 {
        if created.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        created = broker.create_topic("strangler.test.topic", 3);
    }
    created.unwrap();
    // Creating the same topic twice is refused by the broker, which proves it answered.
    assert!(broker.create_topic("strangler.test.topic", 3).is_err());
    let port = broker.port();
    drop(broker);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_port_held_by_another_server_is_refused_not_used() {
    let first = MariaDb::start(MariaDbOptions::new("port-holder", 31)).unwrap();
    let mut options = MariaDbOptions::new("late-comer", 32);
    options.port = Some(first.port());
    let err = MariaDb::start(options).expect_err("the port is taken");
    // Either our server died on the busy port before answering, or the answer came from the
    // other server and was told apart by its datadir: never a success on someone else's server.
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(
        text.contains("is not ours") || text.contains("did not become ready"),
        "{text}"
    );
    assert!(first.is_running());
}
