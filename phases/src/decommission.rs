//! A domain's last move, `service-primary` → `decommissioned`: the monolith side of its routes
//! retired on every proxy replica, its tables retired from the services → monolith stream, and
//! the monolith's copies made read-only by triggers (portable: MySQL and MariaDB alike).

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde_json::json;

use crate::domains::{Declaration, Direction, Domain};
use crate::proxies::Proxies;

/// The proxies send the domain's routes to its service only, from every replica.
pub async fn retire_routes(
    fleet: &Proxies,
    domain: &Domain,
    reason: &str,
) -> Result<String, String> {
    let route = &domain.routes[0].name;
    fleet
        .call(
            reqwest::Method::POST,
            &fleet.urls[0],
            &format!("/admin/routes/{route}/retire-monolith"),
            Some(json!({ "reason": reason })),
        )
        .await
        .map_err(|e| e.to_string())?;
    for p in &fleet.urls {
        let started = Instant::now();
        loop {
            let v = fleet
                .call(
                    reqwest::Method::GET,
                    p,
                    &format!("/admin/routes/{route}"),
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
            if v["monolith_retired"] == true {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "{p} still has a monolith side for {route} after 10 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(format!(
        "retired the monolith side of {} on {} proxy replica(s)",
        domain.flag,
        fleet.urls.len()
    ))
}

/// The services → monolith stream stops carrying the domain's tables, for good.
pub async fn retire_reverse_tables(
    admin: &str,
    decl: &Declaration,
    domain: &Domain,
    who: &str,
    reason: &str,
) -> Result<Vec<String>, String> {
    let http = reqwest::Client::new();
    let mut done = Vec::new();
    let tables: Vec<String> = decl
        .mappings(Direction::ServicesToMonolith, &[domain.name.as_str()])
        .into_iter()
        .map(|m| m.source)
        .collect();
    for table in &tables {
        let r = http
            .post(format!("{admin}/retire"))
            .json(&json!({"table": table, "actor": who, "reason": reason}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{admin}/retire: {e}"))?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(format!(
                "{admin}/retire {table}: {status} {}",
                r.text().await.unwrap_or_default()
            ));
        }
        done.push(format!(
            "retired {table} from the services → monolith stream"
        ));
    }
    // The stream restarts without them within a poll.
    let started = Instant::now();
    loop {
        let v: serde_json::Value = http
            .get(format!("{admin}/status"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{admin}/status: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{admin}/status: {e}"))?;
        let retired: Vec<&str> = v["retired"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        if tables.iter().all(|t| retired.contains(&t.as_str())) {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{admin} does not report {} retired after 10 s",
                tables.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(done)
}

/// The trigger names that keep `table` read-only.
pub fn trigger_names(table: &str) -> [String; 3] {
    ["ins", "upd", "del"].map(|op| format!("strangler_ro_{table}_{op}"))
}

/// Makes the monolith's copies of the domain's tables read-only: a `BEFORE` trigger on each
/// write refuses it with SQLSTATE 45000 naming the domain. Idempotent.
pub async fn make_read_only(
    monolith_url: &str,
    decl: &Declaration,
    domain: &Domain,
) -> Result<Vec<String>, String> {
    let schema = &decl.monolith_schema;
    let mut conn = mysql_async::Conn::from_url(monolith_url)
        .await
        .map_err(|e| format!("monolith: {e}"))?;
    let mut done = Vec::new();
    for table in domain.tables.keys() {
        let message = format!(
            "{schema}.{table} is read-only: domain {} is decommissioned ({} owns it)",
            domain.name, domain.service
        );
        let message: String = message.chars().take(128).collect();
        for (name, event) in trigger_names(table)
            .iter()
            .zip(["INSERT", "UPDATE", "DELETE"])
        {
            conn.query_drop(format!("DROP TRIGGER IF EXISTS `{schema}`.`{name}`"))
                .await
                .map_err(|e| format!("{schema}.{name}: {e}"))?;
            conn.query_drop(format!(
                "CREATE TRIGGER `{schema}`.`{name}` BEFORE {event} ON `{schema}`.`{table}` \
                 FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{}'",
                message.replace('\'', "''")
            ))
            .await
            .map_err(|e| format!("read-only trigger on {schema}.{table}: {e}"))?;
        }
        done.push(format!("made {schema}.{table} read-only"));
    }
    let _ = conn.disconnect().await;
    Ok(done)
}
