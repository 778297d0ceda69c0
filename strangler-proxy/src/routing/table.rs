//! Building a routing table from config: every name resolved, every field checked, errors naming
//! the route and field. Groups, breakers and learned shadow noise carry over a reload by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::PathMatch;
use crate::breaker::Breaker;
use crate::config::{RoutingConfig, SloConfig};
use crate::live::RouteStats;
use crate::shadow::NoiseModel;
use crate::upstream::UpstreamGroup;
use crate::user_key::UserKeys;

/// One route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub flag: String,
    pub methods: Vec<String>,
    pub host: Option<String>,
    pub path: PathMatch,
    pub service: Arc<UpstreamGroup>,
    pub monolith: Arc<UpstreamGroup>,
    pub shadow_writes: bool,
    pub shadow_ignore: Vec<String>,
    pub breaker: Arc<Breaker>,
    pub noise: Arc<NoiseModel>,
    /// The last minute's figures on each side.
    pub stats: Arc<RouteStats>,
    /// The SLO auto-rollback holds this route to.
    pub slo: SloConfig,
    /// Its metric series, resolved once.
    pub series: crate::metrics::RouteSeries,
}

impl Route {
    /// Whether the request matches this route.
    pub fn matches(&self, method: &str, host: Option<&str>, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self
                .host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|x| x.eq_ignore_ascii_case(h)))
            && self.path.matches(path)
    }
}

/// The whole routing state of one config version.
#[derive(Debug)]
pub struct RoutingTable {
    pub version: u64,
    pub config: RoutingConfig,
    pub routes: Vec<Route>,
    pub groups: BTreeMap<String, Arc<UpstreamGroup>>,
    /// Where unmatched requests go.
    pub monolith: Arc<UpstreamGroup>,
    pub user_keys: UserKeys,
    /// Metric series of requests no route matched.
    pub unmatched: crate::metrics::RouteSeries,
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn valid_flag_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 200
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl RoutingTable {
    /// Builds a table from scratch.
    pub fn build(config: &RoutingConfig, version: u64) -> Result<Self, String> {
        Self::build_from(config, version, None)
    }

    /// Builds a table, reusing the previous table's groups (when unchanged), breakers and noise.
    pub fn build_from(
        config: &RoutingConfig,
        version: u64,
        previous: Option<&RoutingTable>,
    ) -> Result<Self, String> {
        let mut groups = BTreeMap::new();
        for (name, cfg) in &config.upstreams {
            let reused = previous
                .and_then(|p| p.groups.get(name))
                .filter(|g| g.config == *cfg)
                .cloned();
            let group = match reused {
                Some(g) => g,
                None => Arc::new(UpstreamGroup::new(name, cfg)?),
            };
            groups.insert(name.clone(), group);
        }
        let monolith = groups
            .get("monolith")
            .cloned()
            .ok_or("upstreams.monolith is missing: the monolith group is required")?;
        let mut routes = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, r) in config.routes.iter().enumerate() {
            let at = format!("routes[{i}] ({})", r.name);
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                return Err(format!("{at}: name must be non-empty and unique"));
            }
            let path = PathMatch::parse(r.path.as_deref(), r.prefix.as_deref())
                .map_err(|e| format!("{at}: {e}"))?;
            let mut methods = Vec::new();
            for m in &r.methods {
                let up = m.to_ascii_uppercase();
                if !METHODS.contains(&up.as_str()) {
                    return Err(format!("{at}.methods: unknown method {m:?}"));
                }
                methods.push(up);
            }
            if !valid_flag_key(&r.flag) {
                return Err(format!(
                    "{at}.flag: {:?} must be 1 to 200 letters, digits, '.', '_' or '-'",
                    r.flag
                ));
            }
            let group = |field: &str, name: &str| {
                groups
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{at}.{field}: no upstream named {name:?}"))
            };
            let carried = previous.and_then(|p| p.routes.iter().find(|x| x.name == r.name));
            routes.push(Route {
                name: r.name.clone(),
                flag: r.flag.clone(),
                methods,
                host: r.host.clone(),
                path,
                service: group("service", &r.service)?,
                monolith: group("monolith", &r.monolith)?,
                shadow_writes: r.shadow_writes,
                shadow_ignore: r.shadow_ignore.clone(),
                breaker: carried
                    .map(|c| c.breaker.clone())
                    .filter(|b| b.settings() == (config.breaker.failures, config.breaker.open_ms))
                    .unwrap_or_else(|| {
                        Arc::new(Breaker::new(
                            config.breaker.failures,
                            config.breaker.open_ms,
                        ))
                    }),
                noise: carried.map(|c| c.noise.clone()).unwrap_or_default(),
                stats: carried.map(|c| c.stats.clone()).unwrap_or_default(),
                slo: config
                    .auto_rollback
                    .with(&r.slo)
                    .map_err(|e| format!("{at}.slo: {e}"))?,
                series: Default::default(),
            });
        }
        config
            .auto_rollback
            .with(&Default::default())
            .map_err(|e| format!("auto_rollback: {e}"))?;
        if config.breaker.failures == 0 {
            return Err("breaker.failures must be at least 1".into());
        }
        if config.limits.max_header_bytes < 1024 {
            return Err("limits.max_header_bytes must be at least 1024".into());
        }
        let user_keys = UserKeys::new(&config.user_key)?;
        Ok(Self {
            version,
            config: config.clone(),
            routes,
            groups,
            monolith,
            user_keys,
            unmatched: Default::default(),
        })
    }

    /// The first route matching the request.
    pub fn find(&self, method: &str, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, host, path))
    }
}
