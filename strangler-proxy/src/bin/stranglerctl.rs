//! `stranglerctl`: the release managers' command line over the proxy's admin API — list routes,
//! set a route's mode, kill a service, read the audit trail, check status, move domains through
//! their migration phases. Tables for people,
//! `--json` for scripts; errors say what was wrong and exit non-zero.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "stranglerctl",
    version,
    about = "Move routes between the monolith and their services, and see where they stand"
)]
struct Cli {
    /// The admin API of any proxy replica.
    #[arg(
        long,
        env = "STRANGLER_ADMIN_URL",
        default_value = "http://127.0.0.1:8001",
        global = true
    )]
    url: String,
    /// Bearer token (viewer to read, operator to change).
    #[arg(
        long,
        env = "STRANGLER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on the API after this many milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every route: mode, health and the last minute's figures on both sides.
    Routes,
    /// Flags of routes.
    Flag {
        #[command(subcommand)]
        command: FlagCommand,
    },
    /// Send every route of SERVICE back to the monolith.
    Kill {
        service: String,
        #[arg(long)]
        reason: String,
    },
    /// Who changed what, newest first.
    Audit {
        /// Only changes of this route.
        #[arg(long)]
        route: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Who you are to the API, and the proxy's config and flag state.
    Status,
    /// The domains' migration phases, through the phase controller behind the admin API.
    Phase {
        #[command(subcommand)]
        command: PhaseCommand,
    },
}

#[derive(Subcommand)]
enum PhaseCommand {
    /// Every domain: phase, owner, routes, next move with its gates measured now, last move.
    Status,
    /// The moves from where DOMAIN stands to --to (default service-primary), with their gates.
    Plan {
        domain: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Move DOMAIN one phase forward (to --to, or the next), once every gate passes.
    Advance(MoveArgs),
    /// Move DOMAIN back (to --to, default monolith); the service's writes are drained back first.
    Rollback(MoveArgs),
}

/// What a move takes.
#[derive(clap::Args)]
struct MoveArgs {
    domain: String,
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    reason: String,
    /// Move although gates fail (audited as forced).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum FlagCommand {
    /// Set ROUTE's mode: monolith, shadow, canary (with --percent) or service.
    Set {
        route: String,
        #[arg(long)]
        mode: String,
        /// Share of users on the service, for canary (0 to 100).
        #[arg(long)]
        percent: Option<f64>,
        #[arg(long)]
        reason: String,
        /// Refuse the change if the flag's version is no longer this one.
        #[arg(long)]
        expect_version: Option<u64>,
    },
}

/// A failure, already worded for the person at the terminal.
struct Failure(String);

struct Api {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')))
            .header("x-strangler-source", "cli");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure(format!("cannot reach the admin API at {}: {e}", self.url)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Failure(format!("reading the answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        Err(Failure(match status.as_u16() {
            401 => format!("not signed in: {message} (set --token or STRANGLER_ADMIN_TOKEN)"),
            403 => format!("no permission: {message}"),
            _ => message,
        }))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<String, Failure> {
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_millis(
                // A move may verify whole tables first: it gets half an hour at least.
                if matches!(
                    cli.command,
                    Command::Phase {
                        command: PhaseCommand::Advance(_) | PhaseCommand::Rollback(_)
                    }
                ) {
                    cli.timeout_ms.max(1_800_000)
                } else {
                    cli.timeout_ms
                },
            ))
            .build()
            .map_err(|e| Failure(e.to_string()))?,
        url: cli.url.clone(),
        token: cli.token.clone(),
    };
    let get = reqwest::Method::GET;
    let (value, human) = match cli.command {
        Command::Routes => {
            let v = api.call(get, "/admin/routes", None).await?;
            let human = routes_table(&v);
            (v, human)
        }
        Command::Flag {
            command:
                FlagCommand::Set {
                    route,
                    mode,
                    percent,
                    reason,
                    expect_version,
                },
        } => {
            // Checked here too, so a typo never reaches the fleet.
            flags::RouteMode::parse(&mode, percent).map_err(Failure)?;
            if reason.trim().is_empty() {
                return Err(Failure("--reason must not be empty".into()));
            }
            let mut body = json!({"mode": mode, "reason": reason});
            if let Some(p) = percent {
                body["percent"] = json!(p);
            }
            if let Some(v) = expect_version {
                body["expected_version"] = json!(v);
            }
            let path = format!("/admin/routes/{}/mode", encode(&route));
            let v = api.call(reqwest::Method::PUT, &path, Some(body)).await?;
            let mut human = format!(
                "{route}: {} -> {} (flag {} v{}, audit #{}; routes: {})\n",
                v["before"]
                    .as_object()
                    .map_or("new".into(), |_| mode_text(&v["before"])),
                mode_text(&v["after"]),
                str_of(&v["flag"]),
                v["after"]["version"],
                v["audit_id"],
                list(&v["routes"]),
            );
            if let Some(note) = v["note"].as_str() {
                human.push_str(&format!("note: {note}\n"));
            }
            (v, human)
        }
        Command::Kill { service, reason } => {
            if reason.trim().is_empty() {
                return Err(Failure("--reason must not be empty".into()));
            }
            let path = format!("/admin/services/{}/kill", encode(&service));
            let v = api
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"reason": reason})),
                )
                .await?;
            let changes = v["changes"].as_array().cloned().unwrap_or_default();
            let human = if changes.is_empty() {
                format!("{service}: every route already on the monolith\n")
            } else {
                changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {} -> monolith (switched off; audit #{})\n",
                            list(&c["routes"]),
                            mode_text(&c["before"]),
                            c["audit_id"]
                        )
                    })
                    .collect()
            };
            (v, human)
        }
        Command::Audit { route, limit } => {
            let mut path = format!("/admin/audit?limit={limit}");
            if let Some(r) = &route {
                path.push_str(&format!("&route={}", encode(r)));
            }
            let v = api.call(get, &path, None).await?;
            let human = audit_table(&v);
            (v, human)
        }
        Command::Status => {
            let who = api.call(get.clone(), "/admin/whoami", None).await?;
            let status = api.call(get.clone(), "/admin/status", None).await?;
            let routes = api.call(get, "/admin/routes", None).await?;
            let mut modes = std::collections::BTreeMap::<String, usize>::new();
            for r in routes["routes"].as_array().into_iter().flatten() {
                *modes.entry(str_of(&r["mode"])).or_default() += 1;
            }
            let human = format!(
                "signed in as {} ({})\nconfig version {}{}\nflags generation {}{}{}\nroutes: {}\n",
                str_of(&who["name"]),
                str_of(&who["role"]),
                status["config_version"],
                status["config_error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(" (last reload refused: {e})")),
                status["flags_generation"],
                status["flags_error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(
                        " (last flag reload refused: {e})"
                    )),
                if status["flags_writable"] == true {
                    ""
                } else {
                    " (read only: flags come from a file)"
                },
                modes
                    .iter()
                    .map(|(m, n)| format!("{n} {m}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            (json!({"whoami": who, "status": status}), human)
        }
        Command::Phase { command } => phase(&api, command).await?,
    };
    Ok(if cli.json {
        format!("{}\n", serde_json::to_string_pretty(&value).expect("json"))
    } else {
        human
    })
}

/// `stranglerctl phase …`: the answer and its human form.
async fn phase(api: &Api, command: PhaseCommand) -> Result<(Value, String), Failure> {
    let gate_line = |g: &Value| {
        format!(
            "    {} {}\n",
            if g["passed"] == true { "pass" } else { "FAIL" },
            str_of(&g["message"])
        )
    };
    match command {
        PhaseCommand::Status => {
            let v = api
                .call(reqwest::Method::GET, "/admin/phases", None)
                .await?;
            let mut out = format!(
                "{:<14} {:<16} {:<9} {:<22} {:<16} LAST MOVE\n",
                "DOMAIN", "PHASE", "OWNER", "REPLICATION", "NEXT"
            );
            for d in v["domains"].as_array().into_iter().flatten() {
                let last = d["history"][0]
                    .as_object()
                    .map_or("never".to_string(), |h| {
                        format!(
                            "{} → {} by {} at {}",
                            str_of(&h["from"]),
                            str_of(&h["to"]),
                            str_of(&h["actor"]),
                            str_of(&h["at"])
                        )
                    });
                out.push_str(&format!(
                    "{:<14} {:<16} {:<9} {:<22} {:<16} {last}\n",
                    str_of(&d["domain"]),
                    str_of(&d["phase"]),
                    str_of(&d["owner"]),
                    str_of(&d["replication"]),
                    d["next"].as_str().unwrap_or("-"),
                ));
                for g in d["gates"].as_array().into_iter().flatten() {
                    out.push_str(&gate_line(g));
                }
            }
            Ok((v, out))
        }
        PhaseCommand::Plan { domain, to } => {
            let mut path = format!("/admin/phases/{}/plan", encode(&domain));
            if let Some(t) = &to {
                path.push_str(&format!("?to={}", encode(t)));
            }
            let v = api.call(reqwest::Method::GET, &path, None).await?;
            let mut out = format!("{domain}: {} → {}\n", str_of(&v["from"]), str_of(&v["to"]));
            for (i, s) in v["steps"].as_array().into_iter().flatten().enumerate() {
                let gates: Vec<String> = s["gates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(str_of)
                    .collect();
                out.push_str(&format!(
                    "  {}. {} → {}; gates: {}\n",
                    i + 1,
                    str_of(&s["from"]),
                    str_of(&s["to"]),
                    if gates.is_empty() {
                        "none".to_string()
                    } else {
                        gates.join(", ")
                    }
                ));
            }
            Ok((v, out))
        }
        PhaseCommand::Advance(m) => move_domain(api, "advance", m, &gate_line).await,
        PhaseCommand::Rollback(m) => move_domain(api, "rollback", m, &gate_line).await,
    }
}

async fn move_domain(
    api: &Api,
    way: &str,
    m: MoveArgs,
    gate_line: &dyn Fn(&Value) -> String,
) -> Result<(Value, String), Failure> {
    if m.reason.trim().is_empty() {
        return Err(Failure("--reason must not be empty".into()));
    }
    let domain = m.domain.as_str();
    let mut body = json!({"reason": m.reason, "force": m.force});
    if let Some(t) = &m.to {
        body["to"] = json!(t);
    }
    let path = format!("/admin/phases/{}/{way}", encode(domain));
    let v = api.call(reqwest::Method::POST, &path, Some(body)).await?;
    let mut out = format!(
        "{domain}: {} → {} by {}{}\n",
        str_of(&v["from"]),
        str_of(&v["to"]),
        str_of(&v["actor"]),
        if v["forced"] == true { " (FORCED)" } else { "" }
    );
    for g in v["gates"].as_array().into_iter().flatten() {
        out.push_str(&gate_line(g));
    }
    for a in v["actions"].as_array().into_iter().flatten() {
        out.push_str(&format!("    did: {}\n", str_of(a)));
    }
    Ok((v, out))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn mode_text(v: &Value) -> String {
    let mode = str_of(&v["mode"]);
    let mut text = if mode == "canary" {
        format!("canary {}%", v["percent"].as_f64().unwrap_or(0.0))
    } else {
        mode
    };
    if v["on"] == false {
        text.push_str(" (off)");
    }
    text
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}"))
}

fn side(s: &Value) -> [String; 3] {
    [
        format!("{:.1}", s["rate"].as_f64().unwrap_or(0.0)),
        format!("{:.1}%", s["error_rate"].as_f64().unwrap_or(0.0) * 100.0),
        ms(&s["p99_ms"]),
    ]
}

fn routes_table(v: &Value) -> String {
    let mut rows = vec![
        [
            "ROUTE", "MODE", "SERVICE", "HEALTH", "CIRCUIT", "MONO/S", "MONO ERR", "MONO P99",
            "SVC/S", "SVC ERR", "SVC P99",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in v["routes"].as_array().into_iter().flatten() {
        let health = match (r["monolith_healthy"] == true, r["service_healthy"] == true) {
            (true, true) => "ok",
            (true, false) => "service down",
            (false, true) => "monolith down",
            (false, false) => "both down",
        };
        let [mr, me, mp] = side(&r["live"]["monolith"]);
        let [sr, se, sp] = side(&r["live"]["service"]);
        rows.push(vec![
            str_of(&r["name"]),
            mode_text(r),
            str_of(&r["service"]),
            health.into(),
            str_of(&r["circuit"]),
            mr,
            me,
            mp,
            sr,
            se,
            sp,
        ]);
    }
    table(&rows)
}

fn audit_table(v: &Value) -> String {
    let mut rows = vec![
        [
            "ID",
            "WHEN (UTC)",
            "WHO",
            "SOURCE",
            "ROUTE",
            "BEFORE",
            "AFTER",
            "REASON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in v["entries"].as_array().into_iter().flatten() {
        rows.push(vec![
            e["id"].to_string(),
            str_of(&e["at"]),
            str_of(&e["actor"]),
            str_of(&e["source"]),
            str_of(&e["route"]),
            if e["before"].is_null() {
                "-".into()
            } else {
                mode_text(&e["before"])
            },
            mode_text(&e["after"]),
            str_of(&e["reason"]),
        ]);
    }
    table(&rows)
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
