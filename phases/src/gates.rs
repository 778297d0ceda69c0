//! The gates' figures, measured on the live system: the owner's stream catching up with a fresh
//! binlog mark, the last verify of each table, the servers' id ranges, and the shadow and canary
//! figures summed over every proxy replica (fleet-wide, not whichever replica answered).

use mysql_async::prelude::Queryable;
use serde::Serialize;
use serde_json::json;

use crate::config::ControllerConfig;
use crate::domains::{Declaration, Direction, Domain};
use crate::phase::{Gate, Owner, Side};
use crate::proxies::Proxies;
use crate::switch::{Drain, SwitchError, catch_up};

/// One gate, measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateResult {
    pub gate: Gate,
    pub passed: bool,
    /// The figures it was judged on.
    pub figure: serde_json::Value,
    /// What was found, in a sentence naming the gate.
    pub message: String,
}

impl GateResult {
    /// A replica's figures could not be read: the gate cannot pass.
    fn unreadable(gate: Gate, e: &crate::proxies::ProxyError) -> Self {
        Self::new(
            gate,
            false,
            json!({"error": e.to_string()}),
            format!("cannot read a replica's figures: {e}"),
        )
    }

    pub(crate) fn new(
        gate: Gate,
        passed: bool,
        figure: serde_json::Value,
        message: String,
    ) -> Self {
        Self {
            gate,
            passed,
            figure,
            message: format!("{}: {message}", gate.name()),
        }
    }
}

/// What a stream's admin API says (`GET /status`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamStatus {
    pub stream: String,
    pub running: bool,
    /// Asked to pause (it follows within a poll; a resumed stream catches up on its own).
    pub paused: bool,
    pub lag_seconds: f64,
    pub changed_by: String,
    pub reason: String,
}

/// Where a domain's gates are measured.
pub struct Measure<'a> {
    pub config: &'a ControllerConfig,
    pub decl: &'a Declaration,
    pub domain: &'a Domain,
    pub proxies: &'a Proxies,
    /// Other domains in a write canary now that sell the same stock as this one (its escrow
    /// has one share per product, so only one of them may split it).
    pub same_stock_canaries: &'a [String],
}

/// The stream that drains `side`'s writes to the other side, and its admin API.
pub fn drain_of(config: &ControllerConfig, side: Side) -> (Drain, Option<&str>) {
    match side {
        Side::Monolith => (
            Drain {
                source_url: config.monolith_url.clone(),
                stream: config.to_services_stream.clone(),
                target_url: config.services_url.clone(),
                offsets_db: config.offsets_db.clone(),
            },
            config.to_services_admin.as_deref(),
        ),
        Side::Service => (
            Drain {
                source_url: config.services_url.clone(),
                stream: config.to_monolith_stream.clone(),
                target_url: config.monolith_url.clone(),
                offsets_db: config.offsets_db.clone(),
            },
            config.to_monolith_admin.as_deref(),
        ),
    }
}

/// `GET {admin}/status` of a cdc-sync stream, as it answers (its state, and what it carries).
pub async fn status_json(admin: &str) -> Result<serde_json::Value, String> {
    reqwest::Client::new()
        .get(format!("{admin}/status"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{admin}/status: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{admin}/status: {e}"))
}

/// `GET {admin}/status` of a cdc-sync stream.
pub async fn stream_status(admin: &str) -> Result<StreamStatus, String> {
    let v = status_json(admin).await?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(StreamStatus {
        stream: text("stream"),
        running: v["running"].as_bool().unwrap_or(false),
        paused: v["desired"] == "paused",
        lag_seconds: v["lag_seconds"].as_f64().unwrap_or(0.0),
        changed_by: text("changed_by"),
        reason: text("reason"),
    })
}

impl Measure<'_> {
    /// Measures `gate`; `owner` owns the domain's writes now.
    pub async fn measure(&self, gate: Gate, owner: Owner) -> GateResult {
        match gate {
            Gate::ReplicationLag => self.lag(owner).await,
            Gate::VerifyClean => self.verify().await,
            Gate::IdRanges => self.id_ranges().await,
            Gate::ShadowMismatches => self.shadow().await,
            Gate::CanaryHealth => self.canary().await,
            Gate::WritesReady => crate::writes::ready(self).await,
            Gate::Conflicts => crate::writes::conflicts(self).await,
            Gate::EscrowRefusals => crate::writes::refusals(self).await,
        }
    }

    /// Every side taking the domain's writes has its stream within the bound (both sides in a
    /// write canary).
    async fn lag(&self, owner: Owner) -> GateResult {
        let mut results = Vec::new();
        for side in owner.sides() {
            results.push(self.side_lag(*side).await);
        }
        if results.len() == 1 {
            return results.remove(0);
        }
        let passed = results.iter().all(|r| r.passed);
        let prefix = format!("{}: ", Gate::ReplicationLag.name());
        let message = results
            .iter()
            .map(|r| r.message.trim_start_matches(&prefix).to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let figure = json!(results.iter().map(|r| &r.figure).collect::<Vec<_>>());
        GateResult::new(Gate::ReplicationLag, passed, figure, message)
    }

    /// The stream draining `side` runs and applies a fresh mark of its binlog within
    /// `max_lag_ms`.
    async fn side_lag(&self, side: Side) -> GateResult {
        let gate = Gate::ReplicationLag;
        let bound = self.config.gates.max_lag_ms;
        let (drain, admin) = drain_of(self.config, side);
        let status = match admin {
            Some(admin) => match stream_status(admin).await {
                Ok(s) => Some(s),
                Err(e) => {
                    return GateResult::new(
                        gate,
                        false,
                        json!({"stream": drain.stream, "error": e}),
                        format!("stream {} does not answer: {e}", drain.stream),
                    );
                }
            },
            None => None,
        };
        if let Some(s) = &status
            && s.paused
        {
            return GateResult::new(
                gate,
                false,
                json!({"stream": drain.stream, "status": s}),
                format!(
                    "stream {} is paused (by {}: {})",
                    drain.stream, s.changed_by, s.reason
                ),
            );
        }
        let tag = format!("gate:{}", self.domain.name);
        match catch_up(&drain, &tag, std::time::Duration::from_millis(bound)).await {
            Ok(c) => GateResult::new(
                gate,
                true,
                json!({"stream": drain.stream, "caught_up_ms": c.ms, "mark": c.mark,
                       "bound_ms": bound, "lag_seconds": status.map(|s| s.lag_seconds)}),
                format!(
                    "{} applied the owner's writes up to {} in {} ms (bound {bound} ms)",
                    drain.stream, c.mark, c.ms
                ),
            ),
            Err(SwitchError::CatchUp {
                mark, applied, ms, ..
            }) => GateResult::new(
                gate,
                false,
                json!({"stream": drain.stream, "mark": mark, "applied": applied, "waited_ms": ms, "bound_ms": bound}),
                format!(
                    "{} had not applied the owner's writes up to {mark} after {ms} ms (bound {bound} ms; at {applied}{})",
                    drain.stream,
                    match &status {
                        Some(s) if !s.running => "; the stream is not running",
                        _ => "",
                    }
                ),
            ),
            Err(e) => GateResult::new(
                gate,
                false,
                json!({"stream": drain.stream, "error": e.to_string()}),
                format!("cannot measure {}: {e}", drain.stream),
            ),
        }
    }

    /// The last verify of every table of the domain is clean, at most `max_verify_age_secs`
    /// old, and no backfill ran since.
    async fn verify(&self) -> GateResult {
        let gate = Gate::VerifyClean;
        let max_age = self.config.gates.max_verify_age_secs;
        let mut figures = Vec::new();
        let mut problems = Vec::new();
        for m in self
            .decl
            .mappings(Direction::MonolithToServices, &[self.domain.name.as_str()])
        {
            let last = cdc_sync::verify::last_result(
                &self.config.services_url,
                &self.config.offsets_db,
                &self.config.to_services_stream,
                &m.source,
            )
            .await;
            match last {
                Err(e) => problems.push(format!("cannot read the verifies of {}: {e}", m.source)),
                Ok(None) => problems.push(format!("{} has never been verified", m.source)),
                Ok(Some(r)) => {
                    if !r.clean {
                        problems.push(format!(
                            "the last verify of {} found {} differing rows",
                            r.source, r.differences
                        ));
                    } else if r.age_seconds > max_age as f64 {
                        problems.push(format!(
                            "the last verify of {} is {:.0} s old (bound {max_age} s)",
                            r.source, r.age_seconds
                        ));
                    } else if let Some(status) = &r.backfill_since {
                        problems.push(format!(
                            "a backfill of {} ({status}) ran after its last verify",
                            r.source
                        ));
                    }
                    figures.push(r);
                }
            }
        }
        let passed = problems.is_empty();
        let message = if passed {
            let rows: u64 = figures.iter().map(|r| r.source_rows).sum();
            format!(
                "{} table(s), {rows} rows, verified clean after the last backfill",
                figures.len()
            )
        } else {
            problems.join("; ")
        };
        GateResult::new(
            gate,
            passed,
            json!({"tables": figures, "max_age_secs": max_age}),
            message,
        )
    }

    /// Both servers number new rows from interleaved sequences that never meet: the same
    /// `auto_increment_increment` (≥ 2) and different `auto_increment_offset`s.
    async fn id_ranges(&self) -> GateResult {
        let gate = Gate::IdRanges;
        let read = |url: String| async move {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
            let row: Option<(u64, u64)> = c
                .query_first(
                    "SELECT @@GLOBAL.auto_increment_increment, @@GLOBAL.auto_increment_offset",
                )
                .await?;
            c.disconnect().await?;
            Ok::<_, mysql_async::Error>(row.unwrap_or((1, 1)))
        };
        let (m, s) = match (
            read(self.config.monolith_url.clone()).await,
            read(self.config.services_url.clone()).await,
        ) {
            (Ok(m), Ok(s)) => (m, s),
            (Err(e), _) | (_, Err(e)) => {
                return GateResult::new(
                    gate,
                    false,
                    json!({"error": e.to_string()}),
                    format!("cannot read the servers' auto_increment settings: {e}"),
                );
            }
        };
        let figure = json!({
            "monolith": {"increment": m.0, "offset": m.1},
            "services": {"increment": s.0, "offset": s.1},
        });
        let passed = m.0 == s.0 && m.0 >= 2 && m.1 % m.0 != s.1 % s.0;
        let message = format!(
            "monolith increment {} offset {}, services increment {} offset {}{}",
            m.0,
            m.1,
            s.0,
            s.1,
            if passed {
                ": new ids cannot collide"
            } else {
                ": new ids on the two sides can collide; set the same auto_increment_increment \
                 (≥ 2) and different auto_increment_offset on both (runbooks/phases.md)"
            }
        );
        GateResult::new(gate, passed, figure, message)
    }

    /// Shadow comparisons of the domain's routes, summed over every replica's counters.
    async fn shadow(&self) -> GateResult {
        let gate = Gate::ShadowMismatches;
        let g = self.config.gates;
        let (mut matched, mut mismatched, mut errors) = (0u64, 0u64, 0u64);
        for p in &self.proxies.urls {
            let text = match self.proxies.text(p, "/metrics").await {
                Ok(t) => t,
                Err(e) => return GateResult::unreadable(gate, &e),
            };
            for (labels, value) in samples(&text, "strangler_shadow_comparisons_total") {
                let route = label(&labels, "route");
                if !self
                    .domain
                    .routes
                    .iter()
                    .any(|r| Some(r.name.as_str()) == route)
                {
                    continue;
                }
                match label(&labels, "result") {
                    Some("match") => matched += value as u64,
                    Some("mismatch") => mismatched += value as u64,
                    Some("error") => errors += value as u64,
                    _ => {}
                }
            }
        }
        let compared = matched + mismatched;
        let rate = ratio(mismatched, compared);
        let figure = json!({
            "replicas": self.proxies.urls.len(), "compared": compared, "mismatches": mismatched,
            "errors": errors, "rate": rate, "min_compared": g.shadow_min_compared,
            "max_rate": g.shadow_max_mismatch_rate,
        });
        let fleet = format!("over {} replica(s)", self.proxies.urls.len());
        if compared < g.shadow_min_compared {
            return GateResult::new(
                gate,
                false,
                figure,
                format!(
                    "only {compared} compared requests {fleet} (at least {} needed)",
                    g.shadow_min_compared
                ),
            );
        }
        let passed = rate <= g.shadow_max_mismatch_rate;
        GateResult::new(
            gate,
            passed,
            figure,
            format!(
                "{mismatched} mismatches in {compared} compared requests {fleet} ({:.2}%, bound {:.2}%)",
                rate * 100.0,
                g.shadow_max_mismatch_rate * 100.0
            ),
        )
    }

    /// The service side of the domain's routes over the fleet's last minute: from one replica
    /// when the proxies sum the fleet themselves (`live.scope` = `fleet`, a shared flag
    /// database), else summed over every replica; requests and errors added, the worst p99.
    async fn canary(&self) -> GateResult {
        let gate = Gate::CanaryHealth;
        let g = self.config.gates;
        let (mut requests, mut errors, mut p99) = (0u64, 0u64, 0.0f64);
        let mut replicas = 0u64;
        'replicas: for p in &self.proxies.urls {
            let mut fleet = None;
            for r in &self.domain.routes {
                let v = match self
                    .proxies
                    .call(
                        reqwest::Method::GET,
                        p,
                        &format!("/admin/routes/{}", r.name),
                        None,
                    )
                    .await
                {
                    Ok(v) => v,
                    Err(e) => return GateResult::unreadable(gate, &e),
                };
                let service = &v["live"]["service"];
                requests += service["requests"].as_u64().unwrap_or(0);
                errors += service["errors"].as_u64().unwrap_or(0);
                p99 = p99.max(service["p99_ms"].as_f64().unwrap_or(0.0));
                if v["live"]["scope"] == "fleet" {
                    fleet = v["live"]["replicas"].as_u64();
                }
            }
            match fleet {
                Some(n) => {
                    replicas = n;
                    break 'replicas;
                }
                None => replicas += 1,
            }
        }
        let rate = ratio(errors, requests);
        let figure = json!({
            "replicas": replicas, "requests": requests, "errors": errors,
            "error_rate": rate, "p99_ms": p99, "min_requests": g.canary_min_requests,
            "max_error_rate": g.canary_max_error_rate, "max_p99_ms": g.canary_max_p99_ms,
        });
        let fleet = format!("over {replicas} replica(s)' last minute");
        if requests < g.canary_min_requests {
            return GateResult::new(
                gate,
                false,
                figure,
                format!(
                    "only {requests} requests reached the service {fleet} (at least {} needed)",
                    g.canary_min_requests
                ),
            );
        }
        let passed = rate <= g.canary_max_error_rate && p99 <= g.canary_max_p99_ms;
        GateResult::new(
            gate,
            passed,
            figure,
            format!(
                "{errors} errors in {requests} service requests {fleet} ({:.2}%, bound {:.2}%), p99 {p99:.0} ms (bound {:.0} ms)",
                rate * 100.0,
                g.canary_max_error_rate * 100.0,
                g.canary_max_p99_ms
            ),
        )
    }
}

/// `part / whole`, 0 for nothing counted.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The samples of metric `name` in Prometheus text: each one's labels and value.
fn samples<'t>(text: &'t str, name: &str) -> Vec<(Vec<(&'t str, &'t str)>, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let value: f64 = value.trim().split(' ').next()?.parse().ok()?;
            let labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.trim(), v.trim_end_matches('"')))
                })
                .collect();
            Some((labels, value))
        })
        .collect()
}

fn label<'t>(labels: &[(&'t str, &'t str)], key: &str) -> Option<&'t str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_read_with_their_labels() {
        let text = "# HELP strangler_shadow_comparisons_total x\n\
                    # TYPE strangler_shadow_comparisons_total counter\n\
                    strangler_shadow_comparisons_total{result=\"match\",route=\"users.me\"} 40\n\
                    strangler_shadow_comparisons_total{result=\"mismatch\",route=\"users.me\"} 2\n\
                    strangler_shadow_comparisons_total_other{result=\"match\"} 9\n\
                    strangler_requests_total{route=\"users.me\"} 7\n";
        let s = samples(text, "strangler_shadow_comparisons_total");
        assert_eq!(s.len(), 2);
        assert_eq!(label(&s[0].0, "result"), Some("match"));
        assert_eq!(label(&s[1].0, "route"), Some("users.me"));
        assert_eq!(s[1].1, 2.0);
    }
}
