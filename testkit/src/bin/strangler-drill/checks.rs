//! After the drill: both streams caught up, then every acknowledged registration, profile
//! update and order is looked up on both sides, each moved domain's tables are verified, and
//! the idempotent requests are held to zero server errors.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::Drill;
use crate::load::Ledger;

/// What the checks found.
#[derive(Debug, Default)]
pub struct Found {
    pub passed: Vec<String>,
    pub failures: Vec<String>,
}

impl Found {
    fn judge(&mut self, ok: bool, pass: String, fail: String) {
        if ok {
            self.passed.push(pass);
        } else {
            self.failures.push(fail);
        }
    }
}

/// `SELECT COUNT(*) FROM table` on the server at `url`.
pub async fn count(url: &str, table: &str) -> Result<u64, String> {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .map_err(|e| e.to_string())?;
    let n: Option<u64> = c
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .map_err(|e| format!("{table}: {e}"))?;
    let _ = c.disconnect().await;
    Ok(n.unwrap_or(0))
}

/// Open conflicts (dead letters not yet settled) of both streams, on every table.
pub async fn open_conflicts(drill: &Drill) -> Result<u64, String> {
    let mut total = 0;
    for side in [phases::Side::Monolith, phases::Side::Service] {
        let (drain, _) = phases::gates::drain_of(&drill.controller.config, side);
        let open = phases::writes::open_conflicts(&drain)
            .await
            .map_err(|e| format!("{}: {e}", drain.stream))?;
        total += open.iter().map(|(_, n)| n).sum::<u64>();
    }
    Ok(total)
}

/// product → available stock in `table`.
async fn stock(url: &str, table: &str) -> Result<BTreeMap<u64, i64>, String> {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<(u64, i64)> = c
        .query(format!("SELECT product_id, available FROM {table}"))
        .await
        .map_err(|e| format!("{table}: {e}"))?;
    let _ = c.disconnect().await;
    Ok(rows.into_iter().collect())
}

/// `(id, email, name)` of this run's users in `table`.
async fn drill_users(
    url: &str,
    table: &str,
    run: &str,
) -> Result<BTreeMap<String, (u64, String)>, String> {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<(u64, String, String)> = c
        .exec(
            format!("SELECT id, email, name FROM {table} WHERE email LIKE ?"),
            (format!("drill-{run}-%"),),
        )
        .await
        .map_err(|e| format!("{table}: {e}"))?;
    let _ = c.disconnect().await;
    Ok(rows
        .into_iter()
        .map(|(id, email, name)| (email, (id, name)))
        .collect())
}

async fn ids(url: &str, table: &str, wanted: &[u64]) -> Result<Vec<u64>, String> {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for part in wanted.chunks(500) {
        let list: Vec<String> = part.iter().map(u64::to_string).collect();
        let rows: Vec<u64> = c
            .query(format!(
                "SELECT id FROM {table} WHERE id IN ({})",
                list.join(",")
            ))
            .await
            .map_err(|e| format!("{table}: {e}"))?;
        found.extend(rows);
    }
    let _ = c.disconnect().await;
    Ok(found)
}

fn copy_of(drill: &Drill, domain: &str, table: &str) -> Option<String> {
    drill
        .controller
        .decl
        .domain(domain)
        .ok()?
        .tables
        .get(table)
        .cloned()
}

pub async fn check(drill: &Drill, domains: &[String], ledger: &Ledger, run: &str) -> Found {
    let mut found = Found::default();
    if let Err(e) = inner(drill, domains, ledger, run, &mut found).await {
        found.failures.push(e);
    }
    found
}

async fn inner(
    drill: &Drill,
    domains: &[String],
    ledger: &Ledger,
    run: &str,
    found: &mut Found,
) -> Result<(), String> {
    let config = &drill.controller.config;
    let stack = &drill.stack;
    // 1. Both streams have applied everything written until now.
    for side in [phases::Side::Monolith, phases::Side::Service] {
        let (drain, _) = phases::gates::drain_of(config, side);
        let c = phases::catch_up(&drain, "drill", Duration::from_secs(120))
            .await
            .map_err(|e| format!("{} never caught up: {e}", drain.stream))?;
        found
            .passed
            .push(format!("{} caught up ({} ms)", drain.stream, c.ms));
    }

    // 2. Every acknowledged registration, on both sides, with the same id.
    let users_copy = copy_of(drill, "users", "users").unwrap_or("user_svc.users".into());
    let on_monolith = drill_users(&stack.monolith_db, "shop.users", run).await?;
    let on_service = drill_users(&stack.services_db, &users_copy, run).await?;
    let mut missing = Vec::new();
    for r in &ledger.registered {
        let m = on_monolith.get(&r.email).map(|(id, _)| *id);
        let s = on_service.get(&r.email).map(|(id, _)| *id);
        if m != Some(r.id) || s != Some(r.id) {
            missing.push(format!(
                "{} id {} (monolith {m:?}, service {s:?})",
                r.email, r.id
            ));
        }
    }
    found.judge(
        missing.is_empty() && !ledger.registered.is_empty(),
        format!(
            "{} acknowledged registrations are on both sides with their ids",
            ledger.registered.len()
        ),
        format!(
            "{} of {} acknowledged registrations are missing or differ: {}",
            missing.len(),
            ledger.registered.len(),
            missing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    // 3. Every profile's last acknowledged update, on both sides.
    let by_id = |side: &BTreeMap<String, (u64, String)>| -> BTreeMap<u64, String> {
        side.values()
            .map(|(id, name)| (*id, name.clone()))
            .collect()
    };
    let (m_names, s_names) = (by_id(&on_monolith), by_id(&on_service));
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (id, name) in &ledger.profiles {
        let Some(name) = name else { continue };
        checked += 1;
        let (m, s) = (m_names.get(id), s_names.get(id));
        if m != Some(name) || s != Some(name) {
            wrong.push(format!(
                "user {id}: acknowledged {name:?}, monolith {m:?}, service {s:?}"
            ));
        }
    }
    found.judge(
        wrong.is_empty(),
        format!("{checked} users' last acknowledged profile update is on both sides"),
        format!(
            "{} of {checked} acknowledged profile updates are lost: {}",
            wrong.len(),
            wrong
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    // 4. Every acknowledged order, on both sides.
    let orders_copy = copy_of(drill, "orders", "orders").unwrap_or("order_svc.orders".into());
    let m_orders = ids(&stack.monolith_db, "shop.orders", &ledger.orders).await?;
    let s_orders = ids(&stack.services_db, &orders_copy, &ledger.orders).await?;
    let lost: Vec<u64> = ledger
        .orders
        .iter()
        .filter(|id| !m_orders.contains(id) || !s_orders.contains(id))
        .copied()
        .collect();
    found.judge(
        lost.is_empty(),
        format!(
            "{} acknowledged orders are on both sides",
            ledger.orders.len()
        ),
        format!("acknowledged orders missing on a side: {lost:?}"),
    );

    // 4b. After both sides sold (a write canary): the stock agrees, nothing oversold, and no
    // conflict is left.
    if domains.iter().any(|d| drill.args.write_canary.contains(d)) {
        let inventory =
            copy_of(drill, "products", "inventory").unwrap_or("product_svc.inventory".into());
        let (m, s) = (
            stock(&stack.monolith_db, "shop.inventory").await?,
            stock(&stack.services_db, &inventory).await?,
        );
        let negative = m.values().chain(s.values()).filter(|n| **n < 0).count();
        let differing = m.iter().filter(|(p, n)| s.get(p) != Some(n)).count();
        found.judge(
            negative == 0 && differing == 0 && m.len() == s.len(),
            format!(
                "stock of {} products agrees on both sides after both sold, none below zero",
                m.len()
            ),
            format!(
                "stock after the write canary: {differing} products differ, {negative} below zero ({} vs {} products)",
                m.len(),
                s.len()
            ),
        );
        let open = open_conflicts(drill).await?;
        found.judge(
            open == 0,
            "no open conflict in either stream".into(),
            format!("{open} open conflict(s) in the streams' dead letters"),
        );
    }

    // 5. A verify of each moved domain's tables is clean.
    for d in domains {
        for r in drill.controller.verify_domain(d).await? {
            found.judge(
                r.clean(),
                format!("verify {} clean ({} rows)", r.source, r.source_rows),
                format!(
                    "verify {}: missing {:?}, extra {:?}, different {:?}",
                    r.source,
                    &r.missing[..r.missing.len().min(10)],
                    &r.extra[..r.extra.len().min(10)],
                    &r.different[..r.different.len().min(10)]
                ),
            );
        }
    }

    // 6. No read failed on the server side or went unanswered.
    let bad: Vec<String> = ledger
        .counts
        .iter()
        .filter(|(k, c)| k.read_only() && (c.server_errors > 0 || c.transport_errors > 0))
        .map(|(k, c)| {
            format!(
                "{}: {} 5xx, {} unanswered",
                k.name(),
                c.server_errors,
                c.transport_errors
            )
        })
        .collect();
    let reads: u64 = ledger
        .counts
        .iter()
        .filter(|(k, _)| k.read_only())
        .map(|(_, c)| c.sent)
        .sum();
    found.judge(
        bad.is_empty(),
        format!("0 of {reads} reads got a 5xx or no answer"),
        format!("reads failed: {}", bad.join("; ")),
    );
    Ok(())
}
