//! Stock escrow for a write canary: each product's unsold stock split between the two sides'
//! `stock_escrow` tables by the canary's share, so that together they never sell more than there
//! is (each side sells only its own share); moved toward the share again as sales drain one side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde::Serialize;

use crate::domains::{Declaration, Domain, EscrowDecl};

/// Where one side keeps the domain's stock and its escrow share.
#[derive(Debug, Clone)]
pub struct Side {
    pub name: &'static str,
    pub url: String,
    /// `schema.table` of the stock (`inventory`), and of the escrow (`stock_escrow`, same schema).
    pub stock: String,
    pub escrow: String,
}

/// The two sides of `domain`'s escrow, from the declaration.
pub fn sides(
    decl: &Declaration,
    domain: &Domain,
    monolith_url: &str,
    services_url: &str,
) -> Result<(EscrowDecl, Side, Side), String> {
    let e = domain
        .escrow
        .clone()
        .ok_or_else(|| format!("domain {} declares no escrow", domain.name))?;
    let copy = domain
        .tables
        .get(&e.table)
        .ok_or_else(|| format!("escrow table {} is not a table of {}", e.table, domain.name))?;
    let service_schema = copy.split('.').next().unwrap_or_default().to_string();
    let side = |name, url: &str, schema: &str, table: &str| Side {
        name,
        url: url.trim_end_matches('/').to_string(),
        stock: format!("`{schema}`.`{table}`"),
        escrow: format!("`{schema}`.`stock_escrow`"),
    };
    let stock_table = copy.split('.').nth(1).unwrap_or_default().to_string();
    Ok((
        e.clone(),
        side("monolith", monolith_url, &decl.monolith_schema, &e.table),
        side("service", services_url, &service_schema, &stock_table),
    ))
}

/// Stock and escrow of every product on one side.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SideFigures {
    /// product → available stock.
    pub stock: BTreeMap<u64, i64>,
    /// product → units this side may still sell (products with an escrow row).
    pub escrow: BTreeMap<u64, i64>,
}

async fn figures(side: &Side, e: &EscrowDecl) -> Result<SideFigures, String> {
    let mut c = mysql_async::Conn::from_url(side.url.as_str())
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
    let stock: Vec<(u64, i64)> = c
        .query(format!(
            "SELECT `{}`, `{}` FROM {}",
            e.key, e.counter, side.stock
        ))
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
    let _ = c.disconnect().await;
    Ok(SideFigures {
        stock: stock.into_iter().collect(),
        escrow: escrow_units(side).await?,
    })
}

/// product → units of one side's escrow.
async fn escrow_units(side: &Side) -> Result<BTreeMap<u64, i64>, String> {
    let mut c = mysql_async::Conn::from_url(side.url.as_str())
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
    let v: Vec<(u64, i64)> = c
        .query(format!("SELECT product_id, units FROM {}", side.escrow))
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
    let _ = c.disconnect().await;
    Ok(v.into_iter().collect())
}

/// Both sides' figures.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub monolith: SideFigures,
    pub service: SideFigures,
    /// Products whose escrow on both sides adds up to more than the stock (must never happen).
    pub overcommitted: Vec<u64>,
}

pub async fn status(e: &EscrowDecl, m: &Side, s: &Side) -> Result<Status, String> {
    let (monolith, service) = (figures(m, e).await?, figures(s, e).await?);
    let overcommitted = monolith
        .stock
        .iter()
        .filter(|(p, stock)| {
            let held = monolith.escrow.get(p).copied().unwrap_or(0)
                + service.escrow.get(p).copied().unwrap_or(0);
            held > **stock
        })
        .map(|(p, _)| *p)
        .collect();
    Ok(Status {
        monolith,
        service,
        overcommitted,
    })
}

/// Splits every product's unheld stock between the sides, `service_share` (0–1) to the service.
/// First every product gets an escrow row on both sides (a product without one could still be
/// sold freely), then the split waits until both sides agree on the stock (the streams carried
/// each other's sales), then gives each side its part of what no side holds yet.
pub async fn split(
    e: &EscrowDecl,
    m: &Side,
    s: &Side,
    service_share: f64,
    settle: Duration,
) -> Result<Status, String> {
    if !(0.0..=1.0).contains(&service_share) {
        return Err(format!(
            "the service's share is 0 to 1, not {service_share}"
        ));
    }
    for side in [m, s] {
        let mut c = mysql_async::Conn::from_url(side.url.as_str())
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        c.query_drop(format!(
            "INSERT IGNORE INTO {} (product_id, units) SELECT `{}`, 0 FROM {}",
            side.escrow, e.key, side.stock
        ))
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
        let _ = c.disconnect().await;
    }
    // The stock both sides agree on, once the streams have settled.
    let started = Instant::now();
    let agreed = loop {
        let (a, b) = (figures(m, e).await?, figures(s, e).await?);
        if a.stock == b.stock {
            break a.stock;
        }
        if started.elapsed() > settle {
            return Err(format!(
                "the two sides' stock did not agree within {} s (are both streams running?); \
                 escrow rows are in place, so nothing oversells meanwhile",
                settle.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (held_m, held_s) = (figures(m, e).await?.escrow, figures(s, e).await?.escrow);
    let mut give_m = Vec::new();
    let mut give_s = Vec::new();
    for (p, stock) in &agreed {
        let held = held_m.get(p).copied().unwrap_or(0) + held_s.get(p).copied().unwrap_or(0);
        let free = (stock - held).max(0);
        let to_s = (free as f64 * service_share).floor() as i64;
        give_s.push((*p, to_s));
        give_m.push((*p, free - to_s));
    }
    for (side, gives) in [(m, give_m), (s, give_s)] {
        let mut c = mysql_async::Conn::from_url(side.url.as_str())
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        c.exec_batch(
            format!(
                "UPDATE {} SET units = units + ? WHERE product_id = ?",
                side.escrow
            ),
            gives
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(p, n)| (n, p)),
        )
        .await
        .map_err(|x| format!("{}: {x}", side.name))?;
        let _ = c.disconnect().await;
    }
    status(e, m, s).await
}

/// Units moved by a rebalance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Moved {
    pub to_service: i64,
    pub to_monolith: i64,
    pub products: usize,
}

/// Moves escrow toward `service_share` for every product whose share on either side is below
/// `low` units (`low` = 0: every product off its share). Units are taken from the giving side
/// first (guarded, so never below zero), then given: a crash between loses units from the
/// escrow (fewer sales, never more), which the next `split` finds again.
pub async fn rebalance(m: &Side, s: &Side, service_share: f64, low: i64) -> Result<Moved, String> {
    let (em, es) = (escrow_units(m).await?, escrow_units(s).await?);
    let mut moved = Moved::default();
    let mut cm = mysql_async::Conn::from_url(m.url.as_str())
        .await
        .map_err(|x| format!("monolith: {x}"))?;
    let mut cs = mysql_async::Conn::from_url(s.url.as_str())
        .await
        .map_err(|x| format!("service: {x}"))?;
    for (p, units_m) in &em {
        let Some(units_s) = es.get(p) else { continue };
        if low > 0 && *units_m >= low && *units_s >= low {
            continue;
        }
        let total = units_m + units_s;
        let want_s = (total as f64 * service_share).floor() as i64;
        let delta = want_s - units_s;
        if delta == 0 {
            continue;
        }
        let (from, from_side, to, to_side, n) = if delta > 0 {
            (&mut cm, m, &mut cs, s, delta)
        } else {
            (&mut cs, s, &mut cm, m, -delta)
        };
        from.exec_drop(
            format!(
                "UPDATE {} SET units = units - ? WHERE product_id = ? AND units >= ?",
                from_side.escrow
            ),
            (n, p, n),
        )
        .await
        .map_err(|x| format!("{}: {x}", from_side.name))?;
        if from.affected_rows() == 0 {
            // Sold meanwhile: the next round looks again.
            continue;
        }
        to.exec_drop(
            format!(
                "UPDATE {} SET units = units + ? WHERE product_id = ?",
                to_side.escrow
            ),
            (n, p),
        )
        .await
        .map_err(|x| format!("{}: {x}", to_side.name))?;
        moved.products += 1;
        if delta > 0 {
            moved.to_service += n;
        } else {
            moved.to_monolith += n;
        }
    }
    let _ = cm.disconnect().await;
    let _ = cs.disconnect().await;
    Ok(moved)
}

/// Ends the escrow: one side owns the writes again, the stock guard alone decides.
pub async fn clear(m: &Side, s: &Side) -> Result<(), String> {
    for side in [m, s] {
        let mut c = mysql_async::Conn::from_url(side.url.as_str())
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        c.query_drop(format!("DELETE FROM {}", side.escrow))
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        let _ = c.disconnect().await;
    }
    Ok(())
}

/// What the two sides' escrow shares did since the split: order lines sold from them and
/// refused because the other side held the rest.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Tally {
    pub taken: i64,
    pub refused: i64,
}

impl Tally {
    /// Refused lines over all lines asked for (0 when none were).
    pub fn refusal_rate(self) -> f64 {
        let asked = self.taken + self.refused;
        if asked <= 0 {
            0.0
        } else {
            self.refused as f64 / asked as f64
        }
    }
}

/// Both sides' tallies added up.
pub async fn tally(m: &Side, s: &Side) -> Result<Tally, String> {
    let mut total = Tally::default();
    for side in [m, s] {
        let mut c = mysql_async::Conn::from_url(side.url.as_str())
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        let row: Option<(Option<i64>, Option<i64>)> = c
            .query_first(format!(
                "SELECT CAST(SUM(taken) AS SIGNED), CAST(SUM(refused) AS SIGNED) FROM {}",
                side.escrow
            ))
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        let _ = c.disconnect().await;
        let (taken, refused) = row.unwrap_or_default();
        total.taken += taken.unwrap_or(0);
        total.refused += refused.unwrap_or(0);
    }
    Ok(total)
}
