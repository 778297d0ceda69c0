//! Helpers shared by the fault tests: a table, a write burst of small transactions, and a
//! converge check that compares row count and checksum of source and target.
#![allow(dead_code)]

use std::time::Duration;

use mysql_async::prelude::*;

pub async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.disconnect().await.unwrap();
}

/// (rows, checksum) of the table.
pub async fn fingerprint(url: &str) -> (u64, u64) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let r: Option<(u64, u64)> = c
        .query_first("SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS('#', id, amount, note))), 0) AS UNSIGNED) FROM orders")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    r.unwrap()
}

pub async fn converge(src: &str, dst: &str, secs: u64) {
    let want = fingerprint(src).await;
    for _ in 0..secs * 10 {
        if fingerprint(dst).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "target {:?} never matched source {want:?}",
        fingerprint(dst).await
    );
}

/// A burst of small transactions: inserts, updates of earlier rows, deletes.
pub async fn burst(url: String, from: u32, to: u32) {
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    for i in from..to {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        tx.exec_drop(
            "INSERT INTO orders VALUES (?, ?, ?)",
            (i, format!("{}.{:02}", i, i % 100), format!("order {i}")),
        )
        .await
        .unwrap();
        if i % 3 == 0 && i > from {
            tx.exec_drop("UPDATE orders SET note = CONCAT(note, ' (updated)'), amount = amount + 1 WHERE id = ?", (i - 1,))
                .await
                .unwrap();
        }
        if i % 7 == 0 && i > from + 1 {
            tx.exec_drop("DELETE FROM orders WHERE id = ?", (i - 2,))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

pub const TABLE: &str = "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, note VARCHAR(80) NOT NULL)";
