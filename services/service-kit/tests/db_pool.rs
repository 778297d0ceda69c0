//! The shared connection pool against a real MariaDB: a connection handed back is kept and
//! reused (not closed and reopened for every query), and sessions number ids as configured.

use mysql_async::prelude::*;

#[tokio::test]
async fn connections_are_reused_and_ids_follow_step_and_offset() {
    let db = testkit::services_server()
        .create_database("pool_reuse")
        .await
        .unwrap();
    let pool = service_kit::db::pool_with_ids(&db.url, 4, 2, 2).unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let mut conn = pool.get_conn().await.unwrap();
        let id: u64 = conn
            .query_first("SELECT CONNECTION_ID()")
            .await
            .unwrap()
            .unwrap();
        ids.push(id);
    }
    // Handed-back connections are recycled in the background, so a few may be open at once, but
    // never more than the pool's bound: 20 queries, at most 4 connections.
    let distinct: std::collections::HashSet<u64> = ids.iter().copied().collect();
    assert!(
        distinct.len() <= 4,
        "a new connection for each query: {ids:?}"
    );

    // A reused connection keeps the session settings made when it was opened.
    let mut conn = pool.get_conn().await.unwrap();
    let id: u64 = conn
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert!(distinct.contains(&id), "not a reused connection");
    let tz: String = conn
        .query_first("SELECT @@session.time_zone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tz, "+00:00");
    conn.query_drop("CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t (v) VALUES (1), (2), (3)")
        .await
        .unwrap();
    let got: Vec<u64> = conn.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(got, vec![2, 4, 6]);
    drop(conn);
    pool.disconnect().await.unwrap();
}
