//! Release control: a route's mode set, a service killed (every route of it back to the
//! monolith), the audit log read, and auto-rollback of routes that burn their SLO. Every change
//! goes to the shared MySQL flag table with its audit record in one transaction.

use std::sync::Arc;
use std::time::Duration;

use flags::source::mysql::{AuditEntry, ChangeNote, MysqlSource};
use flags::{Flag, FlagError, FlagSet, RouteMode};
use serde::Serialize;

use crate::control::Control;
use crate::fleet::{Fleet, Side};
use crate::live::{Summary, now_sec};
use crate::routing::Route;

/// Why a release operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("unknown route {0:?}")]
    UnknownRoute(String),
    #[error("no route sends traffic to a service named {0:?}")]
    UnknownService(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "route changes need the MySQL flag source (flags come from a file or LaunchDarkly here: change them there)"
    )]
    ReadOnly,
    #[error("flag table: {0}")]
    Store(String),
}

impl From<FlagError> for ReleaseError {
    fn from(e: FlagError) -> Self {
        match e {
            FlagError::VersionConflict { .. } => ReleaseError::Conflict(e.to_string()),
            FlagError::Invalid { .. } | FlagError::Parse { .. } => {
                ReleaseError::Invalid(e.to_string())
            }
            other => ReleaseError::Store(other.to_string()),
        }
    }
}

/// Where a route stands, as shown to release managers.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    pub name: String,
    pub flag: String,
    /// `monolith`, `shadow`, `canary` or `service`; `custom` for a hand-made flag.
    pub mode: String,
    /// Share of users on the service (0 to 100).
    pub percent: f64,
    /// False after a kill or an auto-rollback: everyone on the monolith until a mode is set.
    pub on: bool,
    pub flag_version: u64,
    pub flag_defined: bool,
    pub service: String,
    pub service_healthy: bool,
    pub monolith_healthy: bool,
    pub circuit: String,
    /// JSON fields shadow comparison learned to ignore (they differ between two monolith calls).
    pub shadow_noise: Vec<String>,
    /// The domain is decommissioned: the service only, no monolith side.
    pub monolith_retired: bool,
    /// Figures over the last `window_secs` completed seconds.
    pub live: LiveView,
    pub slo: crate::config::SloConfig,
}

/// Live figures of both sides of a route.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    pub window_secs: u64,
    /// `fleet`: summed over every replica publishing to the shared flag database;
    /// `replica`: this replica's own.
    pub scope: crate::fleet::Scope,
    /// Replicas the figures cover.
    pub replicas: usize,
    pub monolith: Summary,
    pub service: Summary,
}

/// The result of one change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub audit_id: u64,
    pub flag: String,
    pub before: Option<ModeView>,
    pub after: ModeView,
    /// Every route decided by this flag.
    pub routes: Vec<String>,
    /// Set for a canary, which sends its users' reads only to the service: their writes stay on
    /// the monolith, which owns them (a `write-canary` sends writes too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A flag read as a route mode.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModeView {
    pub mode: String,
    pub percent: f64,
    pub on: bool,
    pub version: u64,
}

impl ModeView {
    pub fn of(flag: &Flag) -> Self {
        let (mode, percent) = match RouteMode::of(flag) {
            _ if !flag.on => ("monolith", 0.0),
            Some(RouteMode::Monolith) => ("monolith", 0.0),
            Some(RouteMode::Shadow) => ("shadow", 0.0),
            Some(m) => (m.name(), m.percent()),
            None => ("custom", 0.0),
        };
        Self {
            mode: mode.into(),
            percent,
            on: flag.on,
            version: flag.version,
        }
    }
}

/// An audit record as shown to release managers.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: u64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub route: String,
    pub flag: String,
    pub before: Option<ModeView>,
    pub after: ModeView,
    pub reason: String,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            source: e.source,
            action: e.action,
            route: e.subject,
            flag: e.flag_key,
            before: e.before.as_ref().map(ModeView::of),
            after: ModeView::of(&e.after),
            reason: e.reason,
        }
    }
}

const LIVE_WINDOW_SECS: u64 = 60;

impl Control {
    /// The flag that decides `route`.
    fn flag_of(&self, route: &str) -> Result<String, ReleaseError> {
        self.table
            .load()
            .routes
            .iter()
            .find(|r| r.name == route)
            .map(|r| r.flag.clone())
            .ok_or_else(|| ReleaseError::UnknownRoute(route.into()))
    }

    fn writer(&self) -> Result<&MysqlSource, ReleaseError> {
        self.writer.get().ok_or(ReleaseError::ReadOnly)
    }

    /// Every route with its mode, health and live figures.
    pub fn route_views(&self) -> Vec<RouteView> {
        let table = self.table.load();
        let flags = self.flags.snapshot();
        let now = now_sec();
        table
            .routes
            .iter()
            .map(|r| self.view_of(r, flags.get(&r.flag).map(|f| &**f), now))
            .collect()
    }

    /// `r` as release managers see it: mode, health, the fleet's figures, retirement.
    fn view_of(&self, r: &Route, flag: Option<&Flag>, now: u64) -> RouteView {
        route_view(r, flag, now, &self.fleet, self.retired.contains(&r.flag))
    }

    /// One route.
    pub fn route_view(&self, name: &str) -> Result<RouteView, ReleaseError> {
        let table = self.table.load();
        let r = table
            .routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ReleaseError::UnknownRoute(name.into()))?;
        let flags = self.flags.snapshot();
        Ok(self.view_of(r, flags.get(&r.flag).map(|f| &**f), now_sec()))
    }

    /// Sets `route`'s mode (replacing its flag's targeting: the mode applies to everyone).
    /// `expected_version` refuses the change when the flag moved since the caller looked.
    pub async fn set_mode(
        &self,
        route: &str,
        mode: RouteMode,
        expected_version: Option<u64>,
        note: ChangeNote,
    ) -> Result<ChangeView, ReleaseError> {
        let flag_key = self.flag_of(route)?;
        if mode != RouteMode::Service && self.retired.contains(&flag_key) {
            return Err(ReleaseError::Conflict(format!(
                "{route}: its domain is decommissioned (flag {flag_key} has no monolith side); it serves `service` only"
            )));
        }
        let change = self
            .writer()?
            .change(&flag_key, expected_version, &note, |before| {
                let salt = before.map_or(flag_key.as_str(), |b| b.salt.as_str());
                Ok(mode.to_flag(&flag_key, 0, salt))
            })
            .await?;
        self.install_local(&change.after);
        self.log_change(&note, &change.after);
        Ok(self.change_view(change))
    }

    /// Switches off the flag of every route served by `service`: all of them back to the
    /// monolith in one call. Flags already sending everyone to the monolith are left alone.
    pub async fn kill(
        &self,
        service: &str,
        actor: &str,
        source: &str,
        reason: &str,
    ) -> Result<Vec<ChangeView>, ReleaseError> {
        let table = self.table.load();
        let routes: Vec<&Route> = table
            .routes
            .iter()
            .filter(|r| r.service.name == service)
            .collect();
        if routes.is_empty() {
            return Err(ReleaseError::UnknownService(service.into()));
        }
        let writer = self.writer()?;
        let mut changes = Vec::new();
        let mut done = std::collections::HashSet::new();
        for r in routes {
            if !done.insert(r.flag.clone()) {
                continue;
            }
            if self.retired.contains(&r.flag) {
                tracing::warn!(route = %r.name, flag = %r.flag, "kill switch: the route's domain is decommissioned; it stays on its service");
                continue;
            }
            let note = ChangeNote {
                actor: actor.into(),
                source: source.into(),
                action: "kill".into(),
                subject: r.name.clone(),
                reason: reason.into(),
            };
            match self.switch_off(writer, &r.flag, None, &note).await? {
                Some(change) => changes.push(change),
                None => continue,
            }
        }
        Ok(changes)
    }

    /// Retires the monolith side of `route`'s flag, for every replica and for good: its routes
    /// go to the service only. The flag must serve `service` to everyone (`service-primary`).
    pub async fn retire_monolith(
        &self,
        route: &str,
        note: ChangeNote,
    ) -> Result<ChangeView, ReleaseError> {
        let flag_key = self.flag_of(route)?;
        let writer = self.writer()?;
        let current = self.flags.snapshot().get(&flag_key).cloned();
        if !current
            .as_ref()
            .is_some_and(|f| f.on && RouteMode::of(f) == Some(RouteMode::Service))
        {
            return Err(ReleaseError::Conflict(format!(
                "{route}: flag {flag_key} must send everyone to the service before its monolith side is retired"
            )));
        }
        crate::retired::Retired::store(
            writer.pool(),
            writer.table(),
            &flag_key,
            &note.actor,
            &note.reason,
        )
        .await
        .map_err(|e| ReleaseError::Store(e.to_string()))?;
        self.retired.insert_local(&flag_key);
        // The audit trail: the flag unchanged, the action recorded.
        let change = writer
            .change(&flag_key, None, &note, |before| {
                Ok(before
                    .cloned()
                    .unwrap_or_else(|| RouteMode::Service.to_flag(&flag_key, 0, &flag_key)))
            })
            .await?;
        self.install_local(&change.after);
        self.log_change(&note, &change.after);
        Ok(self.change_view(change))
    }

    /// Turns `flag_key` off unless it already sends everyone to the monolith.
    async fn switch_off(
        &self,
        writer: &MysqlSource,
        flag_key: &str,
        expected_version: Option<u64>,
        note: &ChangeNote,
    ) -> Result<Option<ChangeView>, ReleaseError> {
        let current = self.flags.snapshot().get(flag_key).cloned();
        if current
            .as_ref()
            .is_none_or(|f| !f.on || RouteMode::of(f) == Some(RouteMode::Monolith))
        {
            return Ok(None);
        }
        let change = writer
            .change(flag_key, expected_version, note, |before| {
                let mut f = before
                    .cloned()
                    .unwrap_or_else(|| RouteMode::Monolith.to_flag(flag_key, 0, flag_key));
                f.on = false;
                Ok(f)
            })
            .await?;
        self.install_local(&change.after);
        self.log_change(note, &change.after);
        Ok(Some(self.change_view(change)))
    }

    /// The newest audit records first.
    pub async fn audit(
        &self,
        route: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditView>, ReleaseError> {
        let entries = self.writer()?.audit(route, limit).await?;
        Ok(entries.into_iter().map(AuditView::from).collect())
    }

    /// Serves a change on this replica at once; the others pick it up from the table.
    fn install_local(&self, flag: &Flag) {
        let current = self.flags.snapshot();
        let mut set: FlagSet = (*current).clone();
        let newer = set.get(&flag.key).is_none_or(|f| f.version < flag.version);
        if newer {
            set.flags.insert(flag.key.clone(), Arc::new(flag.clone()));
            self.flags.install(set);
        }
    }

    fn log_change(&self, note: &ChangeNote, after: &Flag) {
        let view = ModeView::of(after);
        tracing::info!(
            actor = %note.actor,
            source = %note.source,
            action = %note.action,
            route = %note.subject,
            flag = %after.key,
            mode = %view.mode,
            percent = view.percent,
            on = view.on,
            version = after.version,
            reason = %note.reason,
            "route changed"
        );
        self.metrics
            .route_changes
            .with_label_values(&[&note.subject, &note.source])
            .inc();
    }

    fn change_view(&self, change: flags::source::mysql::Change) -> ChangeView {
        let table = self.table.load();
        let decided: Vec<_> = table
            .routes
            .iter()
            .filter(|r| r.flag == change.after.key)
            .collect();
        let names: Vec<&str> = decided.iter().map(|r| r.name.as_str()).collect();
        let canary = matches!(RouteMode::of(&change.after), Some(RouteMode::Canary { .. }));
        let note = (canary && change.after.on && !names.is_empty()).then(|| {
            format!(
                "a canary routes reads only: writes on {} stay on the monolith, which owns them until the domain moves (a write-canary sends its users' writes too)",
                names.join(", ")
            )
        });
        let routes = decided.iter().map(|r| r.name.clone()).collect();
        ChangeView {
            note,
            audit_id: change.audit_id,
            flag: change.after.key.clone(),
            before: change.before.as_ref().map(ModeView::of),
            after: ModeView::of(&change.after),
            routes,
        }
    }

    /// One pass of auto-rollback: every route sending users to its service is held to its SLO
    /// over the figures since its flag last changed; a route that burns it is switched off.
    pub async fn check_slos(&self) {
        let table = self.table.load_full();
        let flags = self.flags.snapshot();
        let now = now_sec();
        for r in &table.routes {
            let Some(flag) = flags.get(&r.flag) else {
                continue;
            };
            let since = {
                let mut seen = self.slo_seen.lock().expect("slo lock");
                let entry = seen.entry(r.flag.clone()).or_insert((flag.version, now));
                if entry.0 != flag.version {
                    *entry = (flag.version, now);
                }
                entry.1
            };
            let sending = flag.on
                && matches!(
                    RouteMode::of(flag),
                    Some(
                        RouteMode::Canary { .. }
                            | RouteMode::WriteCanary { .. }
                            | RouteMode::Service
                    )
                );
            // A decommissioned domain has no monolith to roll back to.
            if !sending || !r.slo.enabled || self.retired.contains(&r.flag) {
                continue;
            }
            // Only whole seconds after the change count: the change's own second mixes modes.
            let from = (now + 1).saturating_sub(r.slo.window_secs).max(since + 1);
            if from > now {
                continue;
            }
            // The fleet's figures: a burn spread thin over many replicas is still a burn.
            let Some(reason) = burn(
                &r.slo,
                &self
                    .fleet
                    .summary(&r.name, Side::Service, &r.stats.service, from, now),
                &self
                    .fleet
                    .summary(&r.name, Side::Monolith, &r.stats.monolith, from, now),
            ) else {
                continue;
            };
            self.metrics
                .auto_rollbacks
                .with_label_values(&[&r.name])
                .inc();
            tracing::error!(route = %r.name, flag = %r.flag, %reason, "auto-rollback: route burned its SLO; sending everyone back to the monolith");
            let note = ChangeNote {
                actor: "auto-rollback".into(),
                source: "auto".into(),
                action: "auto_rollback".into(),
                subject: r.name.clone(),
                reason,
            };
            // While the service owns writes (a write canary, the service mode) a bare flip would
            // send its users' next writes to the monolith before their last ones arrived there:
            // the phase controller rolls back with the hold-drain-switch instead, when there is one.
            let owns_writes = RouteMode::of(flag).is_some_and(|m| m.service_write_share() > 0.0);
            if owns_writes && self.controller_rollback(&r.flag, &note.reason).await {
                continue;
            }
            let result = match self.writer() {
                Ok(writer) => {
                    self.switch_off(writer, &r.flag, Some(flag.version), &note)
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => {}
                // Another replica rolled it back (or a person changed it) first.
                Err(ReleaseError::Conflict(e)) => {
                    tracing::info!(route = %r.name, error = %e, "auto-rollback: the flag moved meanwhile")
                }
                Err(e) => {
                    // Cannot store the change: at least this replica stops sending users.
                    tracing::error!(route = %r.name, error = %e, "auto-rollback could not store the change; switching off on this replica");
                    let mut off = (**self.local_off.load()).clone();
                    off.insert(r.flag.clone(), flag.version);
                    self.local_off.store(Arc::new(off));
                    if self.launchdarkly.get().is_none() {
                        let mut f = (**flag).clone();
                        f.on = false;
                        f.version += 1;
                        self.install_local(&f);
                    }
                }
            }
        }
    }

    /// Asks the phase controller (`[phases] controller`) to roll back the domain of `flag`;
    /// whether it did.
    async fn controller_rollback(&self, flag: &str, reason: &str) -> bool {
        let Some(base) = self.boot.phases.controller.as_deref() else {
            return false;
        };
        let mut req = self
            .http
            .post(format!(
                "{}/flags/{flag}/rollback",
                base.trim_end_matches('/')
            ))
            .timeout(Duration::from_secs(60))
            .header("x-strangler-actor", "auto-rollback")
            .header("x-strangler-role", "operator")
            .json(&serde_json::json!({ "reason": format!("auto-rollback: {reason}") }));
        if let Some(t) = &self.boot.phases.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::warn!(
                    flag,
                    "auto-rollback: the phase controller moved the domain back with the ownership switch"
                );
                true
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::error!(flag, %status, %body, "auto-rollback: the phase controller did not roll back; switching the flag off instead");
                false
            }
            Err(e) => {
                tracing::error!(flag, error = %e, "auto-rollback: the phase controller did not answer; switching the flag off instead");
                false
            }
        }
    }

    /// Runs [`Control::check_slos`] every `every`.
    pub fn watch_slos(self: &Arc<Self>, every: Duration) {
        let control = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                control.check_slos().await;
            }
        });
    }
}

/// Why the service side breaks `slo`, if it does.
pub fn burn(
    slo: &crate::config::SloConfig,
    service: &Summary,
    monolith: &Summary,
) -> Option<String> {
    if service.requests < slo.min_requests.max(1) {
        return None;
    }
    if service.error_rate > slo.max_error_rate {
        return Some(format!(
            "service error rate {:.1}% > {:.1}% over {} requests",
            service.error_rate * 100.0,
            slo.max_error_rate * 100.0,
            service.requests
        ));
    }
    if service.requests < slo.min_latency_requests {
        return None;
    }
    let p99 = service.p99_ms?;
    let (limit, basis) = match monolith.p99_ms {
        Some(m) if monolith.requests >= slo.min_latency_requests.max(1) => (
            (m * slo.max_p99_ratio).max(slo.p99_floor_ms),
            format!("{}× the monolith's p99 {m} ms", slo.max_p99_ratio),
        ),
        _ => (slo.max_p99_ms, "the absolute limit".to_string()),
    };
    (p99 > limit).then(|| {
        format!(
            "service p99 {p99} ms > {limit} ms ({basis}) over {} requests",
            service.requests
        )
    })
}

fn route_view(r: &Route, flag: Option<&Flag>, now: u64, fleet: &Fleet, retired: bool) -> RouteView {
    let mode = flag.map(ModeView::of).unwrap_or(ModeView {
        mode: "monolith".into(),
        percent: 0.0,
        on: true,
        version: 0,
    });
    // Completed seconds only, so a rate is not diluted by the second in progress.
    let to = now.saturating_sub(1);
    let from = to + 1 - LIVE_WINDOW_SECS;
    RouteView {
        name: r.name.clone(),
        flag: r.flag.clone(),
        mode: mode.mode,
        percent: mode.percent,
        on: mode.on,
        flag_version: mode.version,
        flag_defined: flag.is_some(),
        service: r.service.name.clone(),
        service_healthy: r.service.any_healthy(),
        monolith_healthy: r.monolith.any_healthy(),
        circuit: format!("{:?}", r.breaker.state()).to_lowercase(),
        shadow_noise: r.noise.snapshot(),
        monolith_retired: retired,
        live: LiveView {
            window_secs: LIVE_WINDOW_SECS,
            scope: fleet.scope(),
            replicas: fleet.replicas(),
            monolith: fleet.summary(&r.name, Side::Monolith, &r.stats.monolith, from, to),
            service: fleet.summary(&r.name, Side::Service, &r.stats.service, from, to),
        },
        slo: r.slo.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SloConfig;

    fn summary(requests: u64, errors: u64, p99: f64) -> Summary {
        Summary {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            p99_ms: (requests > 0).then_some(p99),
            ..Summary::default()
        }
    }

    #[test]
    fn burns_on_errors_or_latency_with_enough_requests() {
        let slo = SloConfig::default();
        let calm = summary(100, 0, 5.0);
        assert_eq!(burn(&slo, &summary(10, 10, 5.0), &calm), None, "too few");
        let errors = burn(&slo, &summary(100, 6, 5.0), &calm).unwrap();
        assert!(errors.contains("error rate 6.0% > 5.0%"), "{errors}");
        assert_eq!(
            burn(&slo, &summary(100, 5, 5.0), &calm),
            None,
            "at the limit"
        );
        // Slow compared with the monolith, but under the floor: no verdict.
        assert_eq!(burn(&slo, &summary(100, 0, 40.0), &calm), None);
        let slow = burn(&slo, &summary(100, 0, 80.0), &summary(100, 0, 20.0)).unwrap();
        assert!(slow.contains("p99 80 ms > 60 ms"), "{slow}");
        // Latency is judged on enough requests only: the p99 of 21 is their slowest one.
        assert_eq!(
            burn(&slo, &summary(21, 0, 80.0), &summary(100, 0, 20.0)),
            None
        );
        // And the monolith's p99 is a basis only when it had as many.
        let absolute = burn(&slo, &summary(100, 0, 2500.0), &summary(50, 0, 20.0)).unwrap();
        assert!(absolute.contains("absolute limit"), "{absolute}");
        // Without monolith figures the absolute limit applies.
        assert_eq!(
            burn(&slo, &summary(100, 0, 1500.0), &summary(0, 0, 0.0)),
            None
        );
        assert!(burn(&slo, &summary(100, 0, 2500.0), &summary(3, 0, 1.0)).is_some());
    }
}
