//! `strangler phase advance|rollback`: one gated move of a domain, made by the one controller
//! holding the lease: measure the move's gates, refuse naming each failed gate and its figure
//! (unless an operator forces it, audited), act (backfill, verify, route mode, ownership switch,
//! streams), record the move with its figures.

use serde::Serialize;
use serde_json::json;

use crate::config::ControllerConfig;
use crate::domains::{Declaration, Domain};
use crate::error::PhaseError;
use crate::gates::{GateResult, Measure, drain_of, stream_status};
use crate::phase::{Owner, Phase, Side};
use crate::proxies::Proxies;
use crate::store::{DomainState, Move, PhaseStore};
use crate::switch::{Switch, SwitchReport};

/// Which way a move goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Advance,
    Rollback,
}

/// A move asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub domain: &'a str,
    pub way: Way,
    /// The target; by default the next phase (advance) or `monolith` (rollback).
    pub to: Option<Phase>,
    /// Canary percentages an advance from shadow or a canary steps through.
    pub canary_steps: &'a [u8],
    pub reason: &'a str,
    /// Move even though gates fail (operator role; audited as forced).
    pub force: bool,
    /// Who asks, as the proxies' admin API authenticated them; `None`: ask the proxies who the
    /// controller's own token is.
    pub caller: Option<Caller>,
}

/// Who asks for a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub name: String,
    /// `operator` may move domains; `viewer` may only look.
    pub role: String,
}

/// A domain's next move and its gates, measured now.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub state: DomainState,
    /// The default advance (none when decommissioned).
    pub next: Option<Phase>,
    pub gates: Vec<GateResult>,
}

/// A move made.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub domain: String,
    pub from: Phase,
    pub to: Phase,
    pub actor: String,
    pub forced: bool,
    pub gates: Vec<GateResult>,
    /// What the controller did, in order.
    pub actions: Vec<String>,
    pub switch: Option<SwitchReport>,
    pub state: DomainState,
}

/// The controller: the config, the declaration, the phase store and the proxies it drives.
pub struct Controller {
    pub config: ControllerConfig,
    pub decl: Declaration,
    store: PhaseStore,
    proxies: Proxies,
}

impl Controller {
    pub fn new(config: ControllerConfig, decl: Declaration, store: PhaseStore) -> Self {
        let proxies = Proxies::new(config.proxies.clone(), config.admin_token.clone());
        Self {
            config,
            decl,
            store,
            proxies,
        }
    }

    /// The proxy replicas as they are now (a `dns+` entry resolved afresh).
    async fn fleet(&self) -> Result<Proxies, PhaseError> {
        self.proxies
            .resolved()
            .await
            .map_err(|e| PhaseError::Flags(e.to_string()))
    }

    /// Who the proxies say the caller is: `(name, role)`.
    async fn whoami(&self) -> Result<(String, String), PhaseError> {
        let fleet = self.fleet().await?;
        let v = fleet
            .call(reqwest::Method::GET, &fleet.urls[0], "/admin/whoami", None)
            .await
            .map_err(|e| PhaseError::Flags(e.to_string()))?;
        Ok((
            v["name"].as_str().unwrap_or("unknown").to_string(),
            v["role"].as_str().unwrap_or("viewer").to_string(),
        ))
    }

    /// Makes one move, holding the controller lease meanwhile.
    pub async fn run(&self, req: &Request<'_>) -> Result<Transition, PhaseError> {
        if req.reason.trim().is_empty() {
            return Err(PhaseError::Direction("--reason must say why".into()));
        }
        let domain = self.decl.domain(req.domain)?.clone();
        let (who, role) = match &req.caller {
            Some(c) => (c.name.clone(), c.role.clone()),
            None => self.whoami().await?,
        };
        if role != "operator" {
            return Err(PhaseError::Forbidden { who, role });
        }
        let holder = format!(
            "{who}@{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        self.store
            .acquire_lease(&holder, self.config.gates.lease_secs)
            .await?;
        let result = self.locked(req, &domain, &who).await;
        let _ = self.store.release_lease(&holder).await;
        result
    }

    async fn locked(
        &self,
        req: &Request<'_>,
        domain: &Domain,
        who: &str,
    ) -> Result<Transition, PhaseError> {
        let state = self.store.states(&[domain.name.as_str()]).await?.remove(0);
        let from = state.phase;
        let to = self.target(req, from)?;
        from.check_move(&domain.name, to)?;
        let failed = |reason: String| PhaseError::Action {
            domain: domain.name.clone(),
            to,
            reason,
        };
        let mut actions = Vec::new();
        let owner_now = from.effect().owner;
        let owner_next = to.effect().owner;
        // Users whose writes change sides: the service's share of the writes moves.
        let share_now = from.effect().route_mode.service_write_share();
        let share_next = to.effect().route_mode.service_write_share();
        let leaving = (share_next != share_now).then_some(if share_next > share_now {
            Side::Monolith
        } else {
            Side::Service
        });

        // Before measuring: a move into `verified` or `service-primary` verifies afresh; one
        // that hands the writes over makes sure the stream that will carry them back runs.
        if from.is_advance(to)
            && matches!(
                to,
                Phase::Verified | Phase::ServicePrimary | Phase::Decommissioned
            )
        {
            self.verify_tables(domain, to == Phase::Verified, &mut actions)
                .await
                .map_err(failed)?;
        }
        if leaving.is_some() {
            for side in owner_next.sides() {
                self.ensure_running(*side, req.reason, who, &mut actions)
                    .await
                    .map_err(failed)?;
            }
        }

        let fleet = self.fleet().await?;
        let same_stock = self.same_stock_canaries(domain).await?;
        let measure = Measure {
            config: &self.config,
            decl: &self.decl,
            domain,
            proxies: &fleet,
            same_stock_canaries: &same_stock,
        };
        let mut gates = Vec::new();
        for gate in from.gates(to) {
            gates.push(measure.measure(gate, owner_now).await);
        }
        let failures: Vec<&str> = gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.message.as_str())
            .collect();
        if !failures.is_empty() {
            if !req.force {
                return Err(PhaseError::Gates {
                    domain: domain.name.clone(),
                    to,
                    failures: failures.join("; "),
                });
            }
            actions.push(format!("forced past: {}", failures.join("; ")));
        }

        // Act.
        let mut switch = None;
        if to == Phase::Backfilling {
            self.start_backfills(domain, &mut actions)
                .await
                .map_err(failed)?;
        }
        if to == Phase::Decommissioned {
            // The routes first (no user reaches the monolith's copy), then the stream that
            // kept that copy current, then the copy itself.
            actions.push(
                crate::decommission::retire_routes(&fleet, domain, req.reason)
                    .await
                    .map_err(failed)?,
            );
            let admin = self.config.to_monolith_admin.as_deref().ok_or_else(|| {
                failed("the controller config names no to_monolith_admin (the services → monolith stream's admin API)".into())
            })?;
            actions.extend(
                crate::decommission::retire_reverse_tables(
                    admin, &self.decl, domain, who, req.reason,
                )
                .await
                .map_err(failed)?,
            );
            actions.extend(
                crate::decommission::make_read_only(&self.config.monolith_url, &self.decl, domain)
                    .await
                    .map_err(failed)?,
            );
        }
        let wanted = to.effect().route_mode;
        // Both sides sell: each sells only its share of the stock, set before users move.
        if let Phase::WriteCanary { percent } = to {
            self.escrow_share(domain, from, percent, &mut actions)
                .await
                .map_err(failed)?;
        }
        let mode_now = self.route_mode(domain).await.map_err(failed)?;
        if let Some(leaving) = leaving {
            let report = self
                .switch(domain, wanted, leaving, req.reason)
                .await
                .map_err(failed)?;
            actions.push(format!(
                "moved the writes of {} to the {} ({}% of users' writes on the service): paused {} ms, {} held write(s) released",
                match (leaving, owner_next) {
                    (_, Owner::Split) => format!("{}% of users", (share_next - share_now).abs()),
                    _ => "every user".into(),
                },
                match leaving {
                    Side::Monolith => "service",
                    Side::Service => "monolith",
                },
                share_next,
                report.paused_ms,
                report.released_writes
            ));
            switch = Some(report);
        }
        // One side owns the writes again: the stock guard alone decides.
        if matches!(from, Phase::WriteCanary { .. }) && !matches!(to, Phase::WriteCanary { .. }) {
            self.escrow_clear(domain, &mut actions)
                .await
                .map_err(failed)?;
        }
        let served = if switch.is_some() {
            self.route_mode(domain).await.map_err(failed)?
        } else {
            mode_now
        };
        if served != Some(wanted) {
            self.set_mode(domain, wanted, req.reason)
                .await
                .map_err(failed)?;
            actions.push(format!("routes of {} now {wanted}", domain.flag,));
        }

        let figures = json!(gates);
        let state = self
            .store
            .record(Move {
                domain: &domain.name,
                from: &state,
                to,
                actor: who,
                reason: req.reason,
                gates: json!({"gates": figures, "actions": actions, "switch": switch}),
                forced: req.force && !failures.is_empty(),
            })
            .await?;
        Ok(Transition {
            domain: domain.name.clone(),
            from,
            to,
            actor: who.to_string(),
            forced: req.force && !failures.is_empty(),
            gates,
            actions,
            switch,
            state,
        })
    }

    /// The phase store.
    pub fn store(&self) -> &PhaseStore {
        &self.store
    }

    /// Where `domain` stands, its default next move and that move's gates, measured now.
    pub async fn preview(&self, domain: &str, canary_steps: &[u8]) -> Result<Preview, PhaseError> {
        let d = self.decl.domain(domain)?.clone();
        let state = self.store.states(&[domain]).await?.remove(0);
        let next = crate::plan::plan(domain, state.phase, Phase::ServicePrimary, canary_steps)
            .ok()
            .and_then(|steps| steps.first().map(|s| s.to))
            .or((state.phase == Phase::ServicePrimary).then_some(Phase::Decommissioned));
        let mut gates = Vec::new();
        if let Some(to) = next {
            let fleet = self.fleet().await?;
            let same_stock = self.same_stock_canaries(&d).await?;
            let measure = Measure {
                config: &self.config,
                decl: &self.decl,
                domain: &d,
                proxies: &fleet,
                same_stock_canaries: &same_stock,
            };
            for gate in state.phase.gates(to) {
                gates.push(measure.measure(gate, state.phase.effect().owner).await);
            }
        }
        Ok(Preview { state, next, gates })
    }

    /// The move's target: the one asked for, or the default, in the right direction.
    fn target(&self, req: &Request<'_>, from: Phase) -> Result<Phase, PhaseError> {
        let to = match (req.way, req.to) {
            (_, Some(to)) => to,
            (Way::Rollback, None) => Phase::Monolith,
            // The one move that cannot be undone is never a default.
            (Way::Advance, None) if from == Phase::ServicePrimary => {
                return Err(PhaseError::Direction(format!(
                    "{} is service-primary; the next phase, decommissioned, cannot be undone: \
                     ask for it with `phase advance {} --to decommissioned`",
                    req.domain, req.domain
                )));
            }
            (Way::Advance, None) => {
                crate::plan::plan(req.domain, from, Phase::ServicePrimary, req.canary_steps)?
                    .first()
                    .map(|s| s.to)
                    .unwrap_or(Phase::Decommissioned)
            }
        };
        match req.way {
            Way::Advance if to != from && !from.is_advance(to) => {
                Err(PhaseError::Direction(format!(
                    "{to} is behind {from}: use `phase rollback {} --to \"{to}\"`",
                    req.domain
                )))
            }
            Way::Rollback if to != from && from.is_advance(to) => {
                Err(PhaseError::Direction(format!(
                    "{to} is ahead of {from}: use `phase advance {} --to \"{to}\"`",
                    req.domain
                )))
            }
            _ => Ok(to),
        }
    }

    /// The monolith → services stream's config, which the controller backfills and verifies
    /// through.
    fn stream_config(&self) -> Result<cdc_sync::config::StreamConfig, String> {
        let path = self.config.to_services_config.as_ref().ok_or(
            "the controller config names no `to_services_config` (the monolith → services stream's cdc-sync config)",
        )?;
        let c = cdc_sync::config::StreamConfig::load(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if c.name != self.config.to_services_stream {
            return Err(format!(
                "{} is stream {:?}, not to_services_stream {:?}",
                path.display(),
                c.name,
                self.config.to_services_stream
            ));
        }
        Ok(c)
    }

    /// The stream's mappings of the domain's tables.
    fn domain_tables(
        &self,
        domain: &Domain,
        config: &cdc_sync::config::StreamConfig,
    ) -> Result<Vec<cdc_sync::model::mapping::TableMapping>, String> {
        let mut out = Vec::new();
        for m in self.decl.mappings(
            crate::domains::Direction::MonolithToServices,
            &[domain.name.as_str()],
        ) {
            let t = config
                .tables
                .iter()
                .find(|t| t.source == m.source)
                .ok_or_else(|| {
                    format!(
                        "stream {} does not carry {} (render its tables with `strangler domains streams`)",
                        config.name, m.source
                    )
                })?;
            out.push(t.clone());
        }
        Ok(out)
    }

    /// Asks the running stream to backfill each of the domain's tables.
    async fn start_backfills(
        &self,
        domain: &Domain,
        actions: &mut Vec<String>,
    ) -> Result<(), String> {
        let config = self.stream_config()?;
        for t in self.domain_tables(domain, &config)? {
            let req = cdc_sync::backfill::Request {
                table: t.source.clone(),
                chunk_size: 5_000,
                max_rows_per_sec: 0,
                max_lag_seconds: 30.0,
                resume: false,
                parallel: 1,
            };
            let data = serde_json::to_value(&req).map_err(|e| e.to_string())?;
            cdc_sync::backfill::send_signal(&config, "backfill", &data)
                .await
                .map_err(|e| format!("cannot ask {} to backfill {}: {e}", config.name, t.source))?;
            actions.push(format!("asked {} to backfill {}", config.name, t.source));
        }
        Ok(())
    }

    /// Verifies every table of the domain (recorded for the verify gate); with
    /// `backfilled`, each table's backfill must be done first.
    async fn verify_tables(
        &self,
        domain: &Domain,
        backfilled: bool,
        actions: &mut Vec<String>,
    ) -> Result<(), String> {
        let config = self.stream_config()?;
        for t in self.domain_tables(domain, &config)? {
            if backfilled {
                let p = cdc_sync::backfill::progress(&config, &t.source)
                    .await
                    .map_err(|e| e.to_string())?;
                match p {
                    Some(p) if p.status == "done" => {}
                    Some(p) => {
                        return Err(format!(
                            "the backfill of {} is {} ({} of about {} rows)",
                            t.source, p.status, p.rows_copied, p.rows_estimate
                        ));
                    }
                    None => return Err(format!("{} has not been backfilled", t.source)),
                }
            }
            let r = verify_table(&config, &t).await?;
            actions.push(format!(
                "verified {}: {} rows, {}",
                t.source,
                r.source_rows,
                if r.clean() {
                    "clean".to_string()
                } else {
                    format!(
                        "{} differing",
                        r.missing.len() + r.extra.len() + r.different.len()
                    )
                }
            ));
        }
        Ok(())
    }

    /// Verifies every table of `domain` through the monolith → services stream's mappings (each
    /// result recorded for the verify gate).
    pub async fn verify_domain(
        &self,
        domain: &str,
    ) -> Result<Vec<cdc_sync::verify::VerifyReport>, String> {
        let d = self.decl.domain(domain).map_err(|e| e.to_string())?;
        let config = self.stream_config()?;
        let mut reports = Vec::new();
        for t in self.domain_tables(d, &config)? {
            reports.push(verify_table(&config, &t).await?);
        }
        Ok(reports)
    }

    /// The stream that will drain `side`'s writes runs: resumed if paused, refused if down.
    async fn ensure_running(
        &self,
        side: Side,
        reason: &str,
        who: &str,
        actions: &mut Vec<String>,
    ) -> Result<(), String> {
        let (drain, admin) = drain_of(&self.config, side);
        let Some(admin) = admin else {
            return Err(format!(
                "the controller config names no admin API for {}, which must carry the new owner's writes back",
                drain.stream
            ));
        };
        let status = stream_status(admin).await?;
        if status.paused {
            let body = json!({"actor": who, "reason": format!("ownership moves: {reason}")});
            let r = reqwest::Client::new()
                .post(format!("{admin}/resume"))
                .json(&body)
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{admin}/resume: {}", r.status()));
            }
            actions.push(format!(
                "resumed {} (paused by {}: {})",
                drain.stream, status.changed_by, status.reason
            ));
            for _ in 0..100 {
                let s = stream_status(admin).await?;
                if s.running && !s.paused {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return Err(format!("{} did not resume within 10 s", drain.stream));
        }
        if !status.running {
            return Err(format!(
                "{} is not running: the new owner's writes would not reach the other side",
                drain.stream
            ));
        }
        Ok(())
    }

    /// The ownership switch to `mode`: the users who change sides leave `leaving`, whose
    /// stream must have applied their last writes before they write on the other side.
    async fn switch(
        &self,
        domain: &Domain,
        mode: flags::RouteMode,
        leaving: Side,
        reason: &str,
    ) -> Result<SwitchReport, String> {
        let (drain, _) = drain_of(&self.config, leaving);
        let c = &self.config;
        let s = Switch {
            flag: domain.flag.clone(),
            route: domain.routes[0].name.clone(),
            to_mode: mode,
            proxies: c.proxies.clone(),
            admin_token: c.admin_token.clone(),
            old_owner_url: drain.source_url,
            stream: drain.stream,
            stream_target_url: drain.target_url,
            offsets_db: drain.offsets_db,
            hold: c.bounds.hold(),
            drain: c.bounds.drain(),
            catch_up: c.bounds.catch_up(),
            actor: "strangler phase".into(),
            reason: reason.into(),
        };
        crate::switch::switch(&s).await.map_err(|e| e.to_string())
    }

    /// The other domains in a write canary now whose escrow is `domain`'s: while there is one,
    /// `writes-ready` keeps `domain` out of a write canary.
    pub async fn same_stock_canaries(&self, domain: &Domain) -> Result<Vec<String>, PhaseError> {
        let Some(stock) = self.decl.escrow_domain(domain).map(|d| d.name.as_str()) else {
            return Ok(Vec::new());
        };
        let names: Vec<&str> = self.decl.domains.iter().map(|d| d.name.as_str()).collect();
        let mut out = Vec::new();
        for state in self.store.states(&names).await? {
            if state.domain == domain.name || !matches!(state.phase, Phase::WriteCanary { .. }) {
                continue;
            }
            let other = self.decl.domain(&state.domain)?;
            if self.decl.escrow_domain(other).map(|d| d.name.as_str()) == Some(stock) {
                out.push(state.domain);
            }
        }
        Ok(out)
    }

    /// The escrow sides of the stock `domain` sells, if any.
    fn escrow_sides(
        &self,
        domain: &Domain,
    ) -> Result<
        Option<(
            crate::domains::EscrowDecl,
            crate::escrow::Side,
            crate::escrow::Side,
        )>,
        String,
    > {
        let Some(owner) = self.decl.escrow_domain(domain) else {
            return Ok(None);
        };
        crate::escrow::sides(
            &self.decl,
            owner,
            &self.config.monolith_url,
            &self.config.services_url,
        )
        .map(Some)
    }

    /// Gives the service `percent` of every product's stock the domain sells: a split when the
    /// write canary starts, a rebalance toward the new share when it changes.
    async fn escrow_share(
        &self,
        domain: &Domain,
        from: Phase,
        percent: u8,
        actions: &mut Vec<String>,
    ) -> Result<(), String> {
        let Some((e, m, s)) = self.escrow_sides(domain)? else {
            return Ok(());
        };
        let share = f64::from(percent) / 100.0;
        if matches!(from, Phase::WriteCanary { .. }) {
            let moved = crate::escrow::rebalance(&m, &s, share, 0).await?;
            actions.push(format!(
                "escrow of {} rebalanced to {percent}% for the service: {} unit(s) to the service, {} to the monolith over {} product(s)",
                e.table, moved.to_service, moved.to_monolith, moved.products
            ));
        } else {
            let st =
                crate::escrow::split(&e, &m, &s, share, self.config.bounds.catch_up() * 12).await?;
            actions.push(format!(
                "escrow of {} split {percent}% to the service: {} unit(s) to the service, {} to the monolith",
                e.table,
                st.service.escrow.values().sum::<i64>(),
                st.monolith.escrow.values().sum::<i64>()
            ));
        }
        Ok(())
    }

    /// One round of escrow upkeep: every domain in a write canary has its stock's escrow moved
    /// toward the canary's share wherever a side holds fewer than `low_units` of a product.
    /// Moves are guarded (a side never gives units it has sold), so a round racing a phase move
    /// only leaves shares off until the next round.
    pub async fn rebalance_escrows(
        &self,
    ) -> Result<Vec<(String, crate::escrow::Moved)>, PhaseError> {
        let names: Vec<&str> = self.decl.domains.iter().map(|d| d.name.as_str()).collect();
        let mut out = Vec::new();
        for state in self.store.states(&names).await? {
            let Phase::WriteCanary { percent } = state.phase else {
                continue;
            };
            let domain = self.decl.domain(&state.domain)?;
            let escrow_error = |reason| PhaseError::Escrow {
                domain: state.domain.clone(),
                reason,
            };
            let Some((_, m, s)) = self.escrow_sides(domain).map_err(escrow_error)? else {
                continue;
            };
            let share = f64::from(percent) / 100.0;
            let moved = crate::escrow::rebalance(&m, &s, share, self.config.escrow.low_units)
                .await
                .map_err(escrow_error)?;
            out.push((state.domain, moved));
        }
        Ok(out)
    }

    /// Ends the escrow once one side owns the writes again.
    async fn escrow_clear(&self, domain: &Domain, actions: &mut Vec<String>) -> Result<(), String> {
        let Some((e, m, s)) = self.escrow_sides(domain)? else {
            return Ok(());
        };
        crate::escrow::clear(&m, &s).await?;
        actions.push(format!("escrow of {} cleared", e.table));
        Ok(())
    }

    /// The mode the domain's routes serve now (first replica).
    async fn route_mode(&self, domain: &Domain) -> Result<Option<flags::RouteMode>, String> {
        let fleet = self.fleet().await.map_err(|e| e.to_string())?;
        let v = fleet
            .call(
                reqwest::Method::GET,
                &fleet.urls[0],
                &format!("/admin/routes/{}", domain.routes[0].name),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(crate::switch::mode_of(&v))
    }

    /// Sets the domain's route mode and waits until every replica serves it.
    async fn set_mode(
        &self,
        domain: &Domain,
        mode: flags::RouteMode,
        reason: &str,
    ) -> Result<(), String> {
        let route = &domain.routes[0].name;
        let (name, percent) = (mode.name(), mode.percent());
        let mut body = json!({"mode": name, "reason": reason});
        if matches!(
            mode,
            flags::RouteMode::Canary { .. } | flags::RouteMode::WriteCanary { .. }
        ) {
            body["percent"] = json!(percent);
        }
        let fleet = self.fleet().await.map_err(|e| e.to_string())?;
        fleet
            .call(
                reqwest::Method::PUT,
                &fleet.urls[0],
                &format!("/admin/routes/{route}/mode"),
                Some(body),
            )
            .await
            .map_err(|e| e.to_string())?;
        for p in &fleet.urls {
            let started = std::time::Instant::now();
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
                if v["mode"] == name && v["percent"].as_f64() == Some(percent) {
                    break;
                }
                if started.elapsed() > std::time::Duration::from_secs(10) {
                    return Err(format!("{p} still serves {} after 10 s", v["mode"]));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// One verify of `t` as the stream maps it.
async fn verify_table(
    config: &cdc_sync::config::StreamConfig,
    t: &cdc_sync::model::mapping::TableMapping,
) -> Result<cdc_sync::verify::VerifyReport, String> {
    let opts = cdc_sync::verify::VerifyOptions {
        stream: config.name.clone(),
        offsets_db: config.offsets_db.clone(),
        mode: config.mode,
        ..Default::default()
    };
    cdc_sync::verify::verify(&config.source_url, &config.target_url, t, &opts, |_, _| {})
        .await
        .map_err(|e| format!("verify {}: {e}", t.source))
}
