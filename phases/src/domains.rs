//! The one declaration of the shop's domains (`config/shop-domains.toml`): each domain's routes,
//! flag, service and tables. The proxy's routes and cdc-sync's table mappings in both directions
//! are rendered from it, so nothing is listed twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::error::PhaseError;

/// The whole declaration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// The monolith's schema (`shop`).
    pub monolith_schema: String,
    /// The proxy's upstream group of the monolith.
    pub monolith_upstream: String,
    pub domains: Vec<Domain>,
}

/// One domain a service takes over.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// `users`, `products`, …
    pub name: String,
    /// The proxy's upstream group of the service.
    pub service: String,
    /// The flag whose mode routes every route of the domain.
    pub flag: String,
    /// Monolith table (in the monolith's schema) → the service's copy, `schema.table`.
    pub tables: BTreeMap<String, String>,
    /// Monolith table → its counter columns (integers both sides change concurrently, such as
    /// stock levels): replicated as deltas in both directions, never as after-images.
    #[serde(default)]
    pub counters: BTreeMap<String, Vec<String>>,
    /// Monolith table → columns each side sets on its own (`updated_at`): never compared for
    /// conflicts in either direction.
    #[serde(default)]
    pub uncompared: BTreeMap<String, Vec<String>>,
    /// The stock both sides sell from during a write canary, split between them
    /// (`strangler escrow`).
    #[serde(default)]
    pub escrow: Option<EscrowDecl>,
    /// Monolith table → the column holding the user whose writes change the row: during a
    /// write canary each stream tells an owned change from a stray one by it.
    #[serde(default)]
    pub owner_key: BTreeMap<String, String>,
    /// The domain whose stock escrow this domain's writes draw from (orders sell the products
    /// domain's stock).
    #[serde(default)]
    pub escrow_of: Option<String>,
    pub routes: Vec<Route>,
}

/// A domain's stock under escrow: its table (a monolith table of the domain), the key and the
/// counter column.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscrowDecl {
    pub table: String,
    pub key: String,
    pub counter: String,
}

/// One route of a domain, as the proxy matches it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub methods: Vec<String>,
    pub path: String,
    /// JSON fields the shadow comparison ignores.
    #[serde(default)]
    pub shadow_ignore: Vec<String>,
}

/// Which way rows flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The monolith owns the writes; the services' copies follow.
    MonolithToServices,
    /// The services own the writes; the monolith follows, so a rollback loses nothing.
    ServicesToMonolith,
}

/// One table mapping of a cdc-sync stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMapping {
    /// `schema.table` read from the binlog.
    pub source: String,
    /// `schema.table` written.
    pub target: String,
    /// Counter columns, replicated as deltas.
    pub counters: Vec<String>,
    /// Columns never compared for conflicts.
    pub uncompared: Vec<String>,
    /// The column holding the row's user (per-user write ownership), and the flag that splits
    /// the users (the domain's).
    pub owner_key: Option<String>,
    pub owner_flag: Option<String>,
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl Declaration {
    /// Reads and checks the declaration at `path`.
    pub fn load(path: &Path) -> Result<Self, PhaseError> {
        let text = std::fs::read_to_string(path).map_err(|e| PhaseError::Declaration {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            PhaseError::Declaration { reason, .. } => PhaseError::Declaration {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and checks a declaration: names well formed and unique, every table owned by one
    /// domain only, every route with a method and an absolute path.
    pub fn parse(text: &str) -> Result<Self, PhaseError> {
        let bad = |reason: String| PhaseError::Declaration {
            path: "<text>".into(),
            reason,
        };
        let decl: Declaration = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !ident_ok(&decl.monolith_schema) || decl.monolith_schema.contains('.') {
            return Err(bad(format!(
                "monolith_schema {:?} is not a schema name",
                decl.monolith_schema
            )));
        }
        let (mut domains, mut routes, mut tables) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for d in &decl.domains {
            if !ident_ok(&d.name) || !domains.insert(d.name.as_str()) {
                return Err(bad(format!(
                    "domain {:?}: names must be unique identifiers",
                    d.name
                )));
            }
            if d.routes.is_empty() || d.tables.is_empty() {
                return Err(bad(format!(
                    "domain {}: needs at least one route and one table",
                    d.name
                )));
            }
            for (monolith, service) in &d.tables {
                let parts: Vec<&str> = service.split('.').collect();
                if !ident_ok(monolith)
                    || monolith.contains('.')
                    || parts.len() != 2
                    || !parts.iter().all(|p| ident_ok(p))
                {
                    return Err(bad(format!(
                        "domain {}: table {monolith:?} = {service:?} must map a table to `schema.table`",
                        d.name
                    )));
                }
                if !tables.insert(monolith.as_str()) {
                    return Err(bad(format!(
                        "table {monolith} is declared by two domains; one domain owns a table"
                    )));
                }
            }
            for (table, columns) in &d.counters {
                if !d.tables.contains_key(table) {
                    return Err(bad(format!(
                        "domain {}: counters name table {table:?}, which the domain does not declare",
                        d.name
                    )));
                }
                if columns.is_empty() || !columns.iter().all(|c| ident_ok(c) && !c.contains('.')) {
                    return Err(bad(format!(
                        "domain {}: counters of {table} must be column names",
                        d.name
                    )));
                }
            }
            for (table, column) in &d.owner_key {
                if !d.tables.contains_key(table) || !ident_ok(column) || column.contains('.') {
                    return Err(bad(format!(
                        "domain {}: owner_key must map a table of the domain to a column ({table} = {column:?})",
                        d.name
                    )));
                }
            }
            if let Some(of) = &d.escrow_of {
                let ok = decl
                    .domains
                    .iter()
                    .any(|o| &o.name == of && o.escrow.is_some());
                if !ok {
                    return Err(bad(format!(
                        "domain {}: escrow_of names {of:?}, which is not a domain declaring an escrow",
                        d.name
                    )));
                }
            }
            if let Some(e) = &d.escrow {
                let counted = d
                    .counters
                    .get(&e.table)
                    .is_some_and(|c| c.contains(&e.counter));
                if !counted || !ident_ok(&e.key) || e.key.contains('.') {
                    return Err(bad(format!(
                        "domain {}: escrow needs a declared counter ({}.{} is not one) and a key column",
                        d.name, e.table, e.counter
                    )));
                }
            }
            for r in &d.routes {
                if !routes.insert(r.name.as_str()) {
                    return Err(bad(format!("route {} is declared twice", r.name)));
                }
                if r.methods.is_empty() || !r.path.starts_with('/') {
                    return Err(bad(format!(
                        "route {}: needs methods and a path starting with /",
                        r.name
                    )));
                }
            }
        }
        Ok(decl)
    }

    /// The domain whose stock escrow `domain`'s writes use: its own, or its `escrow_of`'s.
    pub fn escrow_domain<'a>(&'a self, domain: &'a Domain) -> Option<&'a Domain> {
        if domain.escrow.is_some() {
            return Some(domain);
        }
        let of = domain.escrow_of.as_deref()?;
        self.domains.iter().find(|d| d.name == of)
    }

    /// The domain called `name`.
    pub fn domain(&self, name: &str) -> Result<&Domain, PhaseError> {
        self.domains
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| PhaseError::UnknownDomain {
                name: name.into(),
                known: self.domains.iter().map(|d| d.name.clone()).collect(),
            })
    }

    /// The table mappings of `domains` (all when empty) for a stream flowing `direction`.
    pub fn mappings(&self, direction: Direction, domains: &[&str]) -> Vec<TableMapping> {
        let mut out = Vec::new();
        for d in &self.domains {
            if !domains.is_empty() && !domains.contains(&d.name.as_str()) {
                continue;
            }
            for (table, copy) in &d.tables {
                let monolith = format!("{}.{table}", self.monolith_schema);
                let (source, target) = match direction {
                    Direction::MonolithToServices => (monolith, copy.clone()),
                    Direction::ServicesToMonolith => (copy.clone(), monolith),
                };
                out.push(TableMapping {
                    source,
                    target,
                    counters: d.counters.get(table).cloned().unwrap_or_default(),
                    uncompared: d.uncompared.get(table).cloned().unwrap_or_default(),
                    owner_key: d.owner_key.get(table).cloned(),
                    owner_flag: d.owner_key.contains_key(table).then(|| d.flag.clone()),
                });
            }
        }
        out
    }

    /// cdc-sync's `[[tables]]` for those mappings, to append to a stream's config.
    pub fn cdc_tables_toml(&self, direction: Direction, domains: &[&str]) -> String {
        let mut out = String::new();
        for m in self.mappings(direction, domains) {
            let _ = write!(
                out,
                "\n[[tables]]\nsource = \"{}\"\ntarget = \"{}\"\n",
                m.source, m.target
            );
            for (key, columns) in [("counters", &m.counters), ("uncompared", &m.uncompared)] {
                if !columns.is_empty() {
                    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
                    let _ = writeln!(out, "{key} = [{}]", quoted.join(", "));
                }
            }
            if let (Some(k), Some(f)) = (&m.owner_key, &m.owner_flag) {
                let _ = writeln!(out, "owner_key = \"{k}\"\nowner_flag = \"{f}\"");
            }
        }
        out
    }

    /// strangler-proxy's `[[routes]]` of every domain, in declaration order (the proxy tries
    /// routes in that order).
    pub fn proxy_routes_toml(&self) -> String {
        let mut out = String::from(
            "# Routes of the shop monolith's public API (architecture/legacy-monolith.openapi.yaml), each with\n\
             # the flag that moves it and the service that takes it over. Rendered by `strangler domains\n\
             # routes` from phases/config/shop-domains.toml (edit that file, not this one). Appended to a\n\
             # proxy config that defines the upstream groups `monolith` and one per service (see `./dev up`,\n\
             # which writes .dev-stack/proxy.toml).\n",
        );
        for d in &self.domains {
            let _ = write!(out, "\n# --- {} ", d.name);
            out.push_str(&"-".repeat(95usize.saturating_sub(7 + d.name.len())));
            out.push('\n');
            for (i, r) in d.routes.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let methods: Vec<String> = r.methods.iter().map(|m| format!("{m:?}")).collect();
                let _ = write!(
                    out,
                    "[[routes]]\nname = {:?}\nmethods = [{}]\npath = {:?}\nflag = {:?}\nservice = {:?}\n",
                    r.name,
                    methods.join(", "),
                    r.path,
                    d.flag,
                    d.service
                );
                if !r.shadow_ignore.is_empty() {
                    let fields: Vec<String> =
                        r.shadow_ignore.iter().map(|f| format!("{f:?}")).collect();
                    let _ = writeln!(out, "shadow_ignore = [{}]", fields.join(", "));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = include_str!("../config/shop-domains.toml");

    #[test]
    fn the_shop_declaration_is_valid_and_maps_both_ways() {
        let decl = Declaration::parse(SHOP).unwrap();
        assert_eq!(decl.domains.len(), 4);
        let forward = decl.mappings(Direction::MonolithToServices, &["users"]);
        assert_eq!(
            forward,
            [TableMapping {
                source: "shop.users".into(),
                target: "user_svc.users".into(),
                counters: vec![],
                uncompared: vec![],
                owner_key: Some("id".into()),
                owner_flag: Some("route.users".into()),
            }]
        );
        let back = decl.mappings(Direction::ServicesToMonolith, &["orders"]);
        assert_eq!(back.len(), 3);
        assert!(
            back.iter()
                .all(|m| m.target.starts_with("shop.") && m.source.starts_with("order_svc."))
        );
        assert_eq!(decl.mappings(Direction::MonolithToServices, &[]).len(), 7);
        // Stock levels replicate as deltas, both ways.
        for direction in [Direction::MonolithToServices, Direction::ServicesToMonolith] {
            let toml = decl.cdc_tables_toml(direction, &["products"]);
            let parsed: toml::Value = toml::from_str(&toml).unwrap();
            let inventory = parsed["tables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["source"].as_str().unwrap().ends_with(".inventory"))
                .unwrap();
            assert_eq!(
                inventory["counters"],
                toml::Value::from(vec!["available"]),
                "{toml}"
            );
        }
        assert!(decl.domain("payments").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                SHOP.replace(
                    "tables = { users = \"user_svc.users\" }\nowner_key = { users = \"id\" }",
                    "tables = { orders = \"user_svc.users\" }",
                ),
                "declared by two domains",
            ),
            (
                SHOP.replace("name = \"users.login\"", "name = \"users.register\""),
                "declared twice",
            ),
            (
                SHOP.replace("\"user_svc.users\"", "\"users\""),
                "schema.table",
            ),
            (
                SHOP.replace("flag = \"route.users\"", "flags = 1"),
                "unknown field",
            ),
            (
                SHOP.replace("counters = { inventory", "counters = { stock"),
                "which the domain does not declare",
            ),
            (
                SHOP.replace("[\"available\"]", "[\"a.b\"]"),
                "must be column names",
            ),
            (
                SHOP.replace("owner_key = { orders", "owner_key = { carts"),
                "owner_key must map a table of the domain",
            ),
            (
                SHOP.replace("escrow_of = \"products\"", "escrow_of = \"users\""),
                "not a domain declaring an escrow",
            ),
        ];
        for (text, expected) in cases {
            let err = Declaration::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
