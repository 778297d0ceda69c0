//! The gates of a write canary: both sides may take writes (both streams split ownership by the
//! domain's flag, its tables name their user column, the stock's counter replicates as deltas),
//! no open conflict on its tables, and few orders refused by the stock escrow.

use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::domains::Direction;
use crate::gates::{GateResult, Measure, drain_of};
use crate::phase::{Gate, Side};

/// `writes-ready`: everything a write canary relies on is configured for the domain.
pub async fn ready(m: &Measure<'_>) -> GateResult {
    let gate = Gate::WritesReady;
    let d = m.domain;
    let mut problems = Vec::new();
    if d.owner_key.is_empty() {
        problems.push(format!(
            "domain {} declares no owner_key (the column holding each table's user)",
            d.name
        ));
    }
    let escrow = m.decl.escrow_domain(d);
    let mut streams = Vec::new();
    for (direction, side) in [
        (Direction::MonolithToServices, Side::Monolith),
        (Direction::ServicesToMonolith, Side::Service),
    ] {
        let (drain, admin) = drain_of(m.config, side);
        let Some(admin) = admin else {
            problems.push(format!(
                "the controller config names no admin API for {}",
                drain.stream
            ));
            continue;
        };
        let v = match crate::gates::status_json(admin).await {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("stream {} does not answer: {e}", drain.stream));
                continue;
            }
        };
        let own = &v["ownership"];
        if own.is_null() {
            problems.push(format!(
                "stream {} has no [ownership] (it could not tell a stray write)",
                drain.stream
            ));
        } else if own["source_side"] != side.name() {
            problems.push(format!(
                "stream {}'s [ownership] reads the {} side, not the {} side",
                drain.stream,
                own["source_side"],
                side.name()
            ));
        }
        let tables = v["tables"].as_array().cloned().unwrap_or_default();
        let find = |source: &str| tables.iter().find(|t| t["source"] == source).cloned();
        for t in m.decl.mappings(direction, &[d.name.as_str()]) {
            let Some(key) = &t.owner_key else { continue };
            match find(&t.source) {
                Some(c) if c["owner_key"] == key.as_str() && c["owner_flag"] == d.flag.as_str() => {
                }
                _ => problems.push(format!(
                    "stream {} does not carry {} with owner_key {key} split by {}",
                    drain.stream, t.source, d.flag
                )),
            }
        }
        if let Some(e) = escrow.and_then(|x| x.escrow.as_ref().map(|e| (x, e))) {
            let (owner, decl) = e;
            for t in m.decl.mappings(direction, &[owner.name.as_str()]) {
                if !t.counters.contains(&decl.counter) {
                    continue;
                }
                let counted = find(&t.source).is_some_and(|c| {
                    c["counters"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == decl.counter.as_str()))
                });
                if !counted {
                    problems.push(format!(
                        "stream {} does not carry {}.{} as a counter (render its tables with `strangler domains streams`)",
                        drain.stream, t.source, decl.counter
                    ));
                }
            }
        }
        streams.push(json!({"stream": drain.stream, "ownership": own}));
    }
    // Both sides sell from the whole stock: the service's copy must hold every product.
    if let Some(owner) = escrow
        && let Err(e) = stock_copied(m, owner).await
    {
        problems.push(e);
    }
    if let (Some(owner), false) = (escrow, m.same_stock_canaries.is_empty()) {
        problems.push(format!(
            "the stock of {} is already split for the write canary of {} (one write canary per stock at a time)",
            owner.name,
            m.same_stock_canaries.join(", ")
        ));
    }
    let passed = problems.is_empty();
    let figure = json!({
        "owner_key": d.owner_key,
        "escrow": escrow.map(|e| &e.name),
        "streams": streams,
    });
    let message = if passed {
        format!(
            "both streams split ownership by {}; owner_key on {}; {}",
            d.flag,
            d.owner_key
                .iter()
                .map(|(t, c)| format!("{t}.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            match escrow {
                Some(e) => format!("stock in escrow ({})", e.name),
                None => "no stock to escrow".into(),
            }
        )
    } else {
        problems.join("; ")
    };
    GateResult::new(gate, passed, figure, message)
}

/// Both sides' stock tables hold the same number of products (the service's copy was backfilled).
async fn stock_copied(m: &Measure<'_>, owner: &crate::domains::Domain) -> Result<(), String> {
    let (e, ms, ss) = crate::escrow::sides(
        m.decl,
        owner,
        &m.config.monolith_url,
        &m.config.services_url,
    )?;
    let mut counts = Vec::new();
    for side in [&ms, &ss] {
        let mut c = mysql_async::Conn::from_url(side.url.as_str())
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM {}", side.stock))
            .await
            .map_err(|x| format!("{}: {x}", side.name))?;
        let _ = c.disconnect().await;
        counts.push(n.unwrap_or(0));
    }
    if counts[0] != counts[1] {
        return Err(format!(
            "the service's copy of {} holds {} products, the monolith's {}: backfill the {} domain first",
            e.table, counts[1], counts[0], owner.name
        ));
    }
    Ok(())
}

/// The domain's target tables on each side, with the escrow domain's (its stock conflicts too).
fn targets(m: &Measure<'_>, direction: Direction) -> Vec<String> {
    let mut names = vec![m.domain.name.as_str()];
    if let Some(e) = m.decl.escrow_domain(m.domain)
        && e.name != m.domain.name
    {
        names.push(e.name.as_str());
    }
    m.decl
        .mappings(direction, &names)
        .into_iter()
        .map(|t| t.target)
        .collect()
}

/// Open conflicts (dead letters not yet settled) of the stream draining into `drain`'s target,
/// per target table (none when the stream never recorded one).
pub async fn open_conflicts(
    drain: &crate::switch::Drain,
) -> Result<Vec<(String, u64)>, mysql_async::Error> {
    let mut c = mysql_async::Conn::from_url(drain.target_url.as_str()).await?;
    let rows: Result<Vec<(String, u64)>, mysql_async::Error> = c
        .exec(
            format!(
                "SELECT target_table, COUNT(*) FROM `{}`.cdc_conflicts \
                 WHERE stream = ? AND resolved_at IS NULL GROUP BY target_table",
                drain.offsets_db.replace('`', "``")
            ),
            (&drain.stream,),
        )
        .await;
    let _ = c.disconnect().await;
    match rows {
        // No dead-letter table yet: no conflict ever.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(Vec::new()),
        other => other,
    }
}

/// `conflicts`: open conflicts (a row written on the side that does not own it, a row changed
/// on both sides) on the domain's tables, in both streams' dead-letter tables.
pub async fn conflicts(m: &Measure<'_>) -> GateResult {
    let gate = Gate::Conflicts;
    let bound = m.config.gates.max_open_conflicts;
    let mut open = Vec::new();
    for (direction, side) in [
        (Direction::MonolithToServices, Side::Monolith),
        (Direction::ServicesToMonolith, Side::Service),
    ] {
        let (drain, _) = drain_of(m.config, side);
        let wanted = targets(m, direction);
        let counted = open_conflicts(&drain).await;
        match counted {
            Ok(rows) => open.extend(
                rows.into_iter()
                    .filter(|(t, _)| wanted.contains(t))
                    .map(|(t, n)| (drain.stream.clone(), t, n)),
            ),
            Err(e) => {
                return GateResult::new(
                    gate,
                    false,
                    json!({"stream": drain.stream, "error": e.to_string()}),
                    format!("cannot read {}'s conflicts: {e}", drain.stream),
                );
            }
        }
    }
    let total: u64 = open.iter().map(|(_, _, n)| n).sum();
    let figure = json!({
        "open": open.iter().map(|(s, t, n)| json!({"stream": s, "table": t, "open": n})).collect::<Vec<_>>(),
        "total": total,
        "max": bound,
    });
    let passed = total <= bound;
    let message = if total == 0 {
        "no open conflict on the domain's tables in either stream".to_string()
    } else {
        format!(
            "{total} open conflict(s) ({}; bound {bound}): settle them with `cdc-sync conflicts` (runbooks/write-canary.md)",
            open.iter()
                .map(|(s, t, n)| format!("{n} on {t} in {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    GateResult::new(gate, passed, figure, message)
}

/// `escrow-refusals`: order lines refused because the other side held the stock, over all lines
/// sold from the escrow since it was split, both sides added.
pub async fn refusals(m: &Measure<'_>) -> GateResult {
    let gate = Gate::EscrowRefusals;
    let bound = m.config.gates.escrow_max_refusal_rate;
    let Some(owner) = m.decl.escrow_domain(m.domain) else {
        return GateResult::new(
            gate,
            true,
            json!({"escrow": null}),
            format!("domain {} sells no stock under escrow", m.domain.name),
        );
    };
    let sides = crate::escrow::sides(
        m.decl,
        owner,
        &m.config.monolith_url,
        &m.config.services_url,
    );
    let tally = match sides {
        Ok((_, ms, ss)) => crate::escrow::tally(&ms, &ss).await,
        Err(e) => Err(e),
    };
    match tally {
        Ok(t) => {
            let rate = t.refusal_rate();
            let passed = rate <= bound;
            GateResult::new(
                gate,
                passed,
                json!({"taken": t.taken, "refused": t.refused, "rate": rate, "max_rate": bound}),
                format!(
                    "{} of {} order lines refused because the other side held the stock ({:.2}%, bound {:.2}%)",
                    t.refused,
                    t.taken + t.refused,
                    rate * 100.0,
                    bound * 100.0
                ),
            )
        }
        Err(e) => GateResult::new(
            gate,
            false,
            json!({"error": e}),
            format!("cannot read the escrow of {}: {e}", owner.name),
        ),
    }
}
