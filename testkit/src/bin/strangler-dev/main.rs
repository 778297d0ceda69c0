//! `strangler-dev`: the dev stack behind `./dev up` — two private MariaDB servers (monolith and
//! services, binlog on), seeded demo data, the legacy monolith, user-service, cdc-sync and the
//! proxy; prints what runs where, starts again any process that dies (`supervise`), and stops
//! everything on Ctrl-C. `--check` brings it up, probes it and exits (used by CI).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use testkit::{MONOLITH_SERVER_ID, MariaDb, MariaDbOptions, ProcessGuard, SERVICES_SERVER_ID};

mod supervise;

use supervise::{Supervised, Supervisor};

#[derive(Parser, Debug)]
#[command(
    name = "strangler-dev",
    about = "Runs the whole Strangler stack on this machine"
)]
struct Args {
    /// Folder holding the built binaries (legacy-monolith, …).
    #[arg(long)]
    bin_dir: PathBuf,
    /// Folder for logs.
    #[arg(long, default_value = ".dev-stack")]
    state_dir: PathBuf,
    /// Port of the monolith's MariaDB server (0: any free port).
    #[arg(long, default_value_t = 13306)]
    monolith_db_port: u16,
    /// Port of the services' MariaDB server (0: any free port).
    #[arg(long, default_value_t = 13307)]
    services_db_port: u16,
    /// Port of the monolith's HTTP API.
    #[arg(long, default_value_t = 8080)]
    monolith_port: u16,
    /// Port of strangler-proxy, where end users connect.
    #[arg(long, default_value_t = 8000)]
    proxy_port: u16,
    /// Port of the proxy's admin API.
    #[arg(long, default_value_t = 8001)]
    proxy_admin_port: u16,
    /// Routes the proxy starts with (appended to the generated config).
    #[arg(long, default_value = "strangler-proxy/config/shop-routes.toml")]
    proxy_routes: PathBuf,
    /// Initial flags (copied into the state folder when none are there yet).
    #[arg(long, default_value = "strangler-proxy/config/flags.json")]
    proxy_flags: PathBuf,
    /// The declaration of the domains: the streams of both directions are derived from it.
    #[arg(long, default_value = "phases/config/shop-domains.toml")]
    domains: PathBuf,
    /// Port of cdc-sync's /metrics and /healthz (+1: the services' event stream, +2: the
    /// services → monolith stream).
    #[arg(long, default_value_t = 9500)]
    cdc_port: u16,
    /// Seeded customers.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Seeded products.
    #[arg(long, default_value_t = 200)]
    products: u64,
    /// Seeded orders.
    #[arg(long, default_value_t = 2000)]
    orders: u64,
    /// InnoDB buffer pool of each MariaDB server, in MiB (default: the seeded data's size, at
    /// least 256 and at most a quarter of the machine's memory).
    #[arg(long)]
    buffer_pool_mb: Option<u32>,
    /// Bring the stack up, check that it answers, and exit.
    #[arg(long)]
    check: bool,
}

const CHECK_USER: &str =
    r#"{"email":"dev-check@example.com","password":"password123","name":"Dev Check"}"#;
const CHECK_LOGIN: &str = r#"{"email":"dev-check@example.com","password":"password123"}"#;

/// Errors here are one line for the person at the terminal.
type Fallible<T> = Result<T, String>;

/// A buffer pool that holds the seeded data (rows and indexes, as measured on seeded servers:
/// about 400 bytes a user, 600 a product and 650 an order with its lines and payment), rounded up
/// to 128 MiB, at least 256 MiB and at most a quarter of the machine's memory.
fn buffer_pool_for(users: u64, products: u64, orders: u64) -> u32 {
    let bytes = users * 400 + products * 600 + orders * 650;
    let mib = bytes.div_ceil(1 << 20).div_ceil(128) * 128;
    let total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib / 1024);
    mib.clamp(256, (total_mib / 4).max(256)) as u32
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    testkit::http_get("127.0.0.1", port, path)
}

fn wait_ready(port: u16, what: &str, guard: &ProcessGuard) -> Fallible<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if !guard.is_alive() {
            return Err(format!("{what} exited; see {}", guard.log().display()));
        }
        if let Ok((200, _)) = http_get(port, "/readyz") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "{what} was not ready within 120s; see {}",
        guard.log().display()
    ))
}

/// One cdc-sync stream of the stack, direct mode.
struct Stream {
    /// The stream's name (its offsets row).
    name: &'static str,
    /// The process's name in the supervisor's log.
    process: &'static str,
    /// Config `<file>.toml` beside `cdc-monolith-to-services.toml`, log `logs/<file>.log`, pid
    /// file `<file>.pid`.
    file: &'static str,
    source_url: String,
    target_url: String,
    reader_server_id: u32,
    port: u16,
    /// Its `[ownership]` (a write canary's per-user split), if any.
    ownership: Option<String>,
    /// Its `[[tables]]`.
    tables: String,
}

/// The `[ownership]` of a stream reading `side`: the proxy's flags in the monolith server's
/// `strangler` database, each table's owner_flag naming its domain's flag.
fn ownership_of(flags_url: &str, side: &str) -> Option<String> {
    Some(format!(
        "\n[ownership]\nflags_url = \"{flags_url}\"\nsource_side = \"{side}\"\n"
    ))
}

/// Writes the stream's config and starts it; returns once it answers `/healthz`.
fn start_stream(
    stream: &Stream,
    cdc_bin: &Path,
    beside: &Path,
    logs: &Path,
) -> Fallible<Supervised> {
    let config = beside.with_file_name(format!("{}.toml", stream.file));
    let text = format!(
        "name = \"{}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {}\nlisten = \"127.0.0.1:{}\"\n{}{}",
        stream.name,
        stream.source_url,
        stream.target_url,
        stream.reader_server_id,
        stream.port,
        stream.ownership.as_deref().unwrap_or_default(),
        stream.tables
    );
    std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let log = logs.join(format!("{}.log", stream.file));
    let _ = std::fs::remove_file(&log);
    let process = Supervised::start(
        stream.process,
        cdc_bin,
        vec![
            "stream".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ],
        vec![],
        beside.with_file_name(format!("{}.pid", stream.file)),
        log,
    )?;
    wait_healthy(stream.port, &process)?;
    Ok(process)
}

/// Whether `count_sql` (a `SELECT COUNT(*)`) reaches 1 at `url` within 10 s.
async fn row_appears(url: &str, count_sql: &str) -> bool {
    use mysql_async::prelude::Queryable;
    for _ in 0..100 {
        if let Ok(mut c) = mysql_async::Conn::from_url(url).await {
            let n: Option<u64> = c.query_first(count_sql).await.unwrap_or(None);
            if n == Some(1) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until the process answers `/healthz` on `port` with 200.
fn wait_healthy(port: u16, process: &Supervised) -> Fallible<()> {
    let started = Instant::now();
    while !matches!(http_get(port, "/healthz"), Ok((200, _))) {
        if !process.guard().is_alive() || started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "{} did not start; see {}",
                process.name,
                process.log().display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn binary(dir: &Path, name: &str) -> Fallible<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p {name}` (./dev up does)",
            p.display()
        ))
    }
}

fn run(args: Args) -> Fallible<()> {
    for (port, what) in [
        (args.monolith_db_port, "--monolith-db-port"),
        (args.services_db_port, "--services-db-port"),
        (args.monolith_port, "--monolith-port"),
        (args.monolith_port + 1, "--monolith-port (+1: user-service)"),
        (
            args.monolith_port + 2,
            "--monolith-port (+2: product-service)",
        ),
        (
            args.monolith_port + 3,
            "--monolith-port (+3: order-service)",
        ),
        (
            args.monolith_port + 10,
            "--monolith-port (+10: payment-gateway-sim)",
        ),
        (
            args.monolith_port + 4,
            "--monolith-port (+4: notification-service)",
        ),
        (args.monolith_port + 11, "--monolith-port (+11: smtp-sink)"),
        (args.proxy_port, "--proxy-port"),
        (args.proxy_admin_port, "--proxy-admin-port"),
        (args.cdc_port, "--cdc-port"),
        (
            args.cdc_port + 1,
            "--cdc-port (+1: the services' event stream)",
        ),
        (
            args.cdc_port + 2,
            "--cdc-port (+2: the services → monolith stream)",
        ),
        (args.cdc_port + 3, "--cdc-port (+3: the phase controller)"),
    ] {
        if port != 0 && !port_free(port) {
            return Err(format!(
                "port {port} ({what}) is in use; stop what holds it or pass another {what}"
            ));
        }
    }
    let monolith_bin = binary(&args.bin_dir, "legacy-monolith")?;
    let user_bin = binary(&args.bin_dir, "user-service")?;
    let product_bin = binary(&args.bin_dir, "product-service")?;
    let order_bin = binary(&args.bin_dir, "order-service")?;
    let gateway_bin = binary(&args.bin_dir, "payment-gateway-sim")?;
    let notification_bin = binary(&args.bin_dir, "notification-service")?;
    let smtp_bin = binary(&args.bin_dir, "smtp-sink")?;
    let proxy_bin = binary(&args.bin_dir, "strangler-proxy")?;
    let cdc_bin = binary(&args.bin_dir, "cdc-sync")?;
    let strangler_bin = binary(&args.bin_dir, "strangler")?;
    let domains = phases::Declaration::load(&args.domains).map_err(|e| e.to_string())?;
    let routes = std::fs::read_to_string(&args.proxy_routes)
        .map_err(|e| format!("reading {}: {e}", args.proxy_routes.display()))?;
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("creating {}: {e}", logs.display()))?;
    let logs = logs.canonicalize().map_err(|e| e.to_string())?;
    // Written once the stack is up; gone while it is not.
    let _ = std::fs::remove_file(args.state_dir.join("stack.json"));

    let buffer_pool_mb = args
        .buffer_pool_mb
        .unwrap_or_else(|| buffer_pool_for(args.users, args.products, args.orders));
    eprintln!("starting MariaDB servers ({buffer_pool_mb} MiB buffer pool each)…");
    let mut monolith_opts = MariaDbOptions::new("dev-monolith", MONOLITH_SERVER_ID);
    monolith_opts.buffer_pool_mb = buffer_pool_mb;
    monolith_opts.port = (args.monolith_db_port != 0).then_some(args.monolith_db_port);
    // New rows get odd ids on the monolith's server and even ids on the services' server, for
    // every client (the applications also set it per session): the id-ranges gate checks this.
    monolith_opts.extra_args = vec![
        "--auto-increment-increment=2".into(),
        "--auto-increment-offset=1".into(),
    ];
    let monolith_db = MariaDb::start(monolith_opts).map_err(|e| e.to_string())?;
    let mut services_opts = MariaDbOptions::new("dev-services", SERVICES_SERVER_ID);
    services_opts.buffer_pool_mb = buffer_pool_mb;
    services_opts.port = (args.services_db_port != 0).then_some(args.services_db_port);
    services_opts.extra_args = vec![
        "--auto-increment-increment=2".into(),
        "--auto-increment-offset=2".into(),
    ];
    let services_db = MariaDb::start(services_opts).map_err(|e| e.to_string())?;
    let shop_url = monolith_db.url("shop");

    eprintln!("seeding demo data…");
    let seed_log = logs.join("seed.log");
    let out = Command::new(&monolith_bin)
        .env("SHOP_DATABASE_URL", &shop_url)
        .args(["seed", "--users"])
        .arg(args.users.to_string())
        .arg("--products")
        .arg(args.products.to_string())
        .arg("--orders")
        .arg(args.orders.to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", monolith_bin.display()))?;
    std::fs::write(
        &seed_log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("seeding failed; see {}", seed_log.display()));
    }
    eprint!("{}", String::from_utf8_lossy(&out.stdout));

    let monolith_log = logs.join("legacy-monolith.log");
    let _ = std::fs::remove_file(&monolith_log);
    let monolith = Supervised::start(
        "legacy-monolith",
        &monolith_bin,
        vec!["serve".to_string()],
        vec![
            ("SHOP_DATABASE_URL", shop_url.clone()),
            ("SHOP_LISTEN", format!("127.0.0.1:{}", args.monolith_port)),
            // Odd ids here, even ids in the services: both sides may insert during a rollout.
            ("SHOP_ID_STEP", "2".into()),
            ("SHOP_ID_OFFSET", "1".into()),
        ],
        args.state_dir.join("legacy-monolith.pid"),
        monolith_log.clone(),
    )?;
    wait_ready(args.monolith_port, "legacy-monolith", monolith.guard())?;

    eprintln!("starting user-service…");
    let user_port = args.monolith_port + 1;
    let user_log = logs.join("user-service.log");
    let _ = std::fs::remove_file(&user_log);
    let user_service = Supervised::start(
        "user-service",
        &user_bin,
        vec!["serve".to_string()],
        vec![
            ("USER_SVC_DATABASE_URL", services_db.url("user_svc")),
            ("USER_SVC_LISTEN", format!("127.0.0.1:{user_port}")),
            ("USER_SVC_ID_STEP", "2".into()),
            ("USER_SVC_ID_OFFSET", "2".into()),
        ],
        args.state_dir.join("user-service.pid"),
        user_log.clone(),
    )?;
    wait_ready(user_port, "user-service", user_service.guard())?;

    eprintln!("starting product-service…");
    let product_port = args.monolith_port + 2;
    let product_log = logs.join("product-service.log");
    let _ = std::fs::remove_file(&product_log);
    let product_service = Supervised::start(
        "product-service",
        &product_bin,
        vec!["serve".to_string()],
        vec![
            ("PRODUCT_SVC_DATABASE_URL", services_db.url("product_svc")),
            ("PRODUCT_SVC_LISTEN", format!("127.0.0.1:{product_port}")),
            ("PRODUCT_SVC_ID_STEP", "2".into()),
            ("PRODUCT_SVC_ID_OFFSET", "2".into()),
            (
                "PRODUCT_SVC_JWKS_URL",
                format!("http://127.0.0.1:{user_port}/.well-known/jwks.json"),
            ),
        ],
        args.state_dir.join("product-service.pid"),
        product_log.clone(),
    )?;
    wait_ready(product_port, "product-service", product_service.guard())?;

    eprintln!("starting the payment gateway simulator and order-service…");
    let gateway_port = args.monolith_port + 10;
    let gateway_log = logs.join("payment-gateway-sim.log");
    let gateway = Supervised::start(
        "payment-gateway-sim",
        &gateway_bin,
        vec!["--listen".to_string(), format!("127.0.0.1:{gateway_port}")],
        vec![],
        args.state_dir.join("payment-gateway-sim.pid"),
        gateway_log.clone(),
    )?;
    let order_port = args.monolith_port + 3;
    let order_log = logs.join("order-service.log");
    let _ = std::fs::remove_file(&order_log);
    let order_service = Supervised::start(
        "order-service",
        &order_bin,
        vec!["serve".to_string()],
        vec![
            ("ORDER_SVC_DATABASE_URL", services_db.url("order_svc")),
            ("ORDER_SVC_LISTEN", format!("127.0.0.1:{order_port}")),
            ("ORDER_SVC_ID_STEP", "2".into()),
            ("ORDER_SVC_ID_OFFSET", "2".into()),
            (
                "ORDER_SVC_PRODUCT_URL",
                format!("http://127.0.0.1:{product_port}"),
            ),
            (
                "ORDER_SVC_PAYMENT_URL",
                format!("http://127.0.0.1:{gateway_port}"),
            ),
            (
                "ORDER_SVC_JWKS_URL",
                format!("http://127.0.0.1:{user_port}/.well-known/jwks.json"),
            ),
        ],
        args.state_dir.join("order-service.pid"),
        order_log.clone(),
    )?;
    wait_ready(order_port, "order-service", order_service.guard())?;

    eprintln!("starting cdc-sync (monolith → services, direct mode)…");
    // The services server gets the shop schema as `shop_mirror` until the services own theirs.
    let out = Command::new(&monolith_bin)
        .env("SHOP_DATABASE_URL", services_db.url("shop_mirror"))
        .arg("migrate")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "creating shop_mirror: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let cdc_config = args
        .state_dir
        .canonicalize()
        .map_err(|e| e.to_string())?
        .join("cdc-monolith-to-services.toml");
    // Every domain's tables, as declared: users, products, inventory, orders into their services'
    // own schemas; notifications into the mirror until notification-service owns them.
    let cdc = start_stream(
        &Stream {
            name: "monolith-to-services",
            process: "cdc-sync",
            file: "cdc-monolith-to-services",
            source_url: monolith_db.root_url(),
            target_url: services_db.root_url(),
            reader_server_id: 4001,
            port: args.cdc_port,
            ownership: ownership_of(&monolith_db.url("strangler"), "monolith"),
            tables: domains.cdc_tables_toml(phases::Direction::MonolithToServices, &[]),
        },
        &cdc_bin,
        &cdc_config,
        &logs,
    )?;

    eprintln!("starting notification-service, its SMTP sink and the services' event stream…");
    let smtp_port = args.monolith_port + 11;
    let smtp_log = logs.join("smtp-sink.log");
    let _ = std::fs::remove_file(&smtp_log);
    let smtp = Supervised::start(
        "smtp-sink",
        &smtp_bin,
        vec!["--listen".to_string(), format!("127.0.0.1:{smtp_port}")],
        vec![],
        args.state_dir.join("smtp-sink.pid"),
        smtp_log.clone(),
    )?;
    let notification_port = args.monolith_port + 4;
    let notification_log = logs.join("notification-service.log");
    let _ = std::fs::remove_file(&notification_log);
    let notification_service = Supervised::start(
        "notification-service",
        &notification_bin,
        vec!["serve".to_string()],
        vec![
            (
                "NOTIFICATION_SVC_DATABASE_URL",
                services_db.url("notification_svc"),
            ),
            (
                "NOTIFICATION_SVC_LISTEN",
                format!("127.0.0.1:{notification_port}"),
            ),
            ("NOTIFICATION_SVC_ID_STEP", "2".into()),
            ("NOTIFICATION_SVC_ID_OFFSET", "2".into()),
            ("NOTIFICATION_SVC_SMTP_HOST", "127.0.0.1".into()),
            ("NOTIFICATION_SVC_SMTP_PORT", smtp_port.to_string()),
            (
                "NOTIFICATION_SVC_JWKS_URL",
                format!("http://127.0.0.1:{user_port}/.well-known/jwks.json"),
            ),
        ],
        args.state_dir.join("notification-service.pid"),
        notification_log.clone(),
    )?;
    wait_ready(
        notification_port,
        "notification-service",
        notification_service.guard(),
    )?;
    // The services' outboxes → notification-service's inbox, on the services server.
    let events = start_stream(
        &Stream {
            name: "service-events",
            process: "cdc-sync (events)",
            file: "cdc-service-events",
            source_url: services_db.root_url(),
            target_url: services_db.root_url(),
            reader_server_id: 4002,
            port: args.cdc_port + 1,
            ownership: None,
            tables: "\n[[tables]]\nsource = \"user_svc.outbox\"\ntarget = \"notification_svc.inbox\"\n\n\
                     [[tables]]\nsource = \"order_svc.outbox\"\ntarget = \"notification_svc.inbox\"\n"
                .into(),
        },
        &cdc_bin,
        &cdc_config,
        &logs,
    )?;

    eprintln!("starting cdc-sync (services → monolith, direct mode)…");
    // Every domain's service copy streams back into `shop`: the services' writes reach the
    // monolith, so sending a domain back loses nothing. The applier's own writes carry marker
    // rows, so neither stream sends the other's rows back again.
    let reverse = start_stream(
        &Stream {
            name: "services-to-monolith",
            process: "cdc-sync (reverse)",
            file: "cdc-services-to-monolith",
            source_url: services_db.root_url(),
            target_url: monolith_db.root_url(),
            reader_server_id: 4003,
            port: args.cdc_port + 2,
            ownership: ownership_of(&monolith_db.url("strangler"), "service"),
            tables: domains.cdc_tables_toml(phases::Direction::ServicesToMonolith, &[]),
        },
        &cdc_bin,
        &cdc_config,
        &logs,
    )?;
    let reverse_log = reverse.log().to_path_buf();

    eprintln!("starting strangler-proxy…");
    let state = args.state_dir.canonicalize().map_err(|e| e.to_string())?;
    // Flags and their audit trail live in the monolith server's `strangler` database, seeded
    // from the flag file the first time.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(monolith_db.execute("CREATE DATABASE IF NOT EXISTS strangler"))
        .map_err(|e| e.to_string())?;
    let seed = args
        .proxy_flags
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.proxy_flags.display()))?;
    // The controller's config: `strangler switch users --to service --config .dev-stack/strangler.toml`.
    let controller_config = state.join("strangler.toml");
    std::fs::write(
        &controller_config,
        format!(
            "proxies = [\"http://127.0.0.1:{}\"]\nmonolith_url = \"{}\"\nservices_url = \"{}\"\n\
             to_services_stream = \"monolith-to-services\"\nto_monolith_stream = \"services-to-monolith\"\n\
             to_services_admin = \"http://127.0.0.1:{}\"\nto_monolith_admin = \"http://127.0.0.1:{}\"\n\
             to_services_config = \"{}\"\n",
            args.proxy_admin_port,
            monolith_db.root_url(),
            services_db.root_url(),
            args.cdc_port,
            args.cdc_port + 2,
            cdc_config.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let proxy_config = state.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        proxy_config_text(&args, &state, &monolith_db.url("strangler"), &seed, &routes),
    )
    .map_err(|e| e.to_string())?;
    let proxy_log = logs.join("strangler-proxy.log");
    let _ = std::fs::remove_file(&proxy_log);
    let proxy = Supervised::start(
        "strangler-proxy",
        &proxy_bin,
        vec!["--config".to_string(), proxy_config.display().to_string()],
        vec![],
        args.state_dir.join("strangler-proxy.pid"),
        proxy_log.clone(),
    )?;
    wait_ready(args.proxy_admin_port, "strangler-proxy", proxy.guard())?;
    let proxy_log = proxy.log().to_path_buf();

    eprintln!("starting the phase controller (strangler serve)…");
    let controller_log = logs.join("strangler-serve.log");
    let _ = std::fs::remove_file(&controller_log);
    let controller = Supervised::start(
        "strangler serve",
        &strangler_bin,
        vec![
            "--domains".to_string(),
            args.domains
                .canonicalize()
                .map_err(|e| e.to_string())?
                .display()
                .to_string(),
            "serve".to_string(),
            "--config".to_string(),
            controller_config.display().to_string(),
            "--database-url".to_string(),
            monolith_db.url("strangler"),
            "--listen".to_string(),
            format!("127.0.0.1:{}", args.cdc_port + 3),
        ],
        vec![],
        args.state_dir.join("strangler-serve.pid"),
        controller_log.clone(),
    )?;
    wait_ready(args.cdc_port + 3, "strangler serve", controller.guard())?;
    let (cdc_log, events_log, notification_log) = (
        cdc.log().to_path_buf(),
        events.log().to_path_buf(),
        notification_service.log().to_path_buf(),
    );
    // From here on a process that dies is started again (the MariaDB servers are not: their
    // death stops the stack). Stopping goes from the edge inwards.
    let supervisor = Supervisor::start(
        vec![
            proxy,
            controller,
            cdc,
            reverse,
            events,
            notification_service,
            smtp,
            order_service,
            gateway,
            product_service,
            user_service,
            monolith,
        ],
        &state,
    );

    // What a drill (strangler-drill --stack DIR) needs to drive and hurt the running stack.
    let pid = |name: &str| state.join(format!("{name}.pid")).display().to_string();
    let stack = serde_json::json!({
        "proxy": format!("http://127.0.0.1:{}", args.proxy_port),
        "admin": format!("http://127.0.0.1:{}", args.proxy_admin_port),
        "controller": format!("http://127.0.0.1:{}", args.cdc_port + 3),
        "strangler_db": monolith_db.url("strangler"),
        "monolith_db": monolith_db.root_url(),
        "services_db": services_db.root_url(),
        "controller_config": controller_config.display().to_string(),
        "domains": args.domains.canonicalize().map_err(|e| e.to_string())?.display().to_string(),
        "to_services_config": cdc_config.display().to_string(),
        "pids": {
            "cdc-sync": pid("cdc-monolith-to-services"),
            "cdc-sync (reverse)": pid("cdc-services-to-monolith"),
            "user-service": pid("user-service"),
            "order-service": pid("order-service"),
            "product-service": pid("product-service"),
            "legacy-monolith": pid("legacy-monolith"),
        },
    });
    std::fs::write(state.join("stack.json"), stack.to_string()).map_err(|e| e.to_string())?;

    println!();
    println!("Strangler dev stack is up:");
    println!("  {:<22} {:<40} log", "component", "address");
    println!(
        "  {:<22} {:<40} {}",
        "monolith MariaDB",
        format!(
            "{} (server_id {})",
            monolith_db.url("shop"),
            monolith_db.server_id()
        ),
        monolith_db.dir().join("error.log").display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "services MariaDB",
        format!(
            "{} (server_id {})",
            services_db.root_url(),
            services_db.server_id()
        ),
        services_db.dir().join("error.log").display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "legacy-monolith",
        format!("http://127.0.0.1:{}", args.monolith_port),
        monolith_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "user-service",
        format!("http://127.0.0.1:{user_port}"),
        user_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "product-service",
        format!("http://127.0.0.1:{product_port}"),
        product_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "order-service",
        format!("http://127.0.0.1:{order_port}"),
        order_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "payment-gateway-sim",
        format!("http://127.0.0.1:{gateway_port}"),
        gateway_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "notification-service",
        format!("http://127.0.0.1:{notification_port}"),
        notification_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "smtp-sink (mail)",
        format!("127.0.0.1:{smtp_port}"),
        smtp_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "cdc-sync (events)",
        format!("*_svc.outbox → inbox; :{}/metrics", args.cdc_port + 1),
        events_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "strangler-proxy",
        format!("http://127.0.0.1:{}", args.proxy_port),
        proxy_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "proxy admin API",
        format!("http://127.0.0.1:{}/admin/routes", args.proxy_admin_port),
        proxy_config.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "cdc-sync",
        format!("shop → *_svc, shop_mirror; :{}/metrics", args.cdc_port),
        cdc_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "phase controller",
        format!(
            "http://127.0.0.1:{}/phases (admin: /admin/phases)",
            args.cdc_port + 3
        ),
        controller_log.display()
    );
    println!(
        "  {:<22} {:<40} {}",
        "cdc-sync (reverse)",
        format!("*_svc, shop_mirror → shop; :{}/metrics", args.cdc_port + 2),
        reverse_log.display()
    );
    println!();
    println!("End users go through the proxy; every route starts in `monolith` mode. Try:");
    println!(
        "  curl -si 'http://127.0.0.1:{}/api/products?q=backpack&per_page=3'",
        args.proxy_port
    );
    println!(
        "  curl -s -X POST http://127.0.0.1:{}/api/users/login -H 'content-type: application/json' \\",
        args.proxy_port
    );
    println!("       -d '{{\"email\":\"admin@example.com\",\"password\":\"password123\"}}'");

    if args.check {
        let (status, body) = http_get(args.monolith_port, "/api/products?per_page=1")
            .map_err(|e| format!("probing the monolith: {e}"))?;
        if status != 200 || !body.contains("\"items\"") {
            return Err(format!("monolith answered {status}: {body}"));
        }
        let (status, _) = http_get(args.monolith_port, "/metrics").map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        let (status, body) = http_get(args.proxy_port, "/api/products?per_page=1")
            .map_err(|e| format!("probing the proxy: {e}"))?;
        if status != 200 || !body.contains("\"items\"") {
            return Err(format!("proxy answered {status}: {body}"));
        }
        // The phases, through the proxy's admin API and the controller behind it.
        let (status, body) = http_get(args.proxy_admin_port, "/admin/phases")
            .map_err(|e| format!("probing /admin/phases: {e}"))?;
        if status != 200 || !body.contains("\"domain\":\"users\"") {
            return Err(format!("/admin/phases answered {status}: {body}"));
        }
        let (status, body) =
            http_get(args.proxy_admin_port, "/admin/routes").map_err(|e| e.to_string())?;
        if status != 200 || !body.contains("users.login") {
            return Err(format!("proxy admin answered {status}: {body}"));
        }
        // Release control: a route changed with stranglerctl, audited in MySQL, and put back.
        let ctl = |args_: &[&str]| -> Fallible<String> {
            let out = Command::new(args.bin_dir.join("stranglerctl"))
                .arg("--url")
                .arg(format!("http://127.0.0.1:{}", args.proxy_admin_port))
                .args(args_)
                .output()
                .map_err(|e| format!("running stranglerctl: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "stranglerctl {args_:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        ctl(&[
            "flag",
            "set",
            "notifications.list",
            "--mode",
            "shadow",
            "--reason",
            "dev check",
        ])?;
        let routes = ctl(&["routes"])?;
        if !routes
            .lines()
            .any(|l| l.starts_with("notifications.list") && l.contains("shadow"))
        {
            return Err(format!(
                "stranglerctl routes does not show the change:\n{routes}"
            ));
        }
        ctl(&[
            "flag",
            "set",
            "notifications.list",
            "--mode",
            "monolith",
            "--reason",
            "dev check done",
        ])?;
        let audit = ctl(&["audit", "--route", "notifications.list", "--limit", "2"])?;
        if !audit.contains("dev check done") || !audit.contains("cli") {
            return Err(format!("the audit trail misses the change:\n{audit}"));
        }
        // The supervisor: cdc-sync killed with SIGKILL comes back by itself, and the write below
        // still replicates (it resumes from its committed offset).
        let pidfile = args.state_dir.join("cdc-monolith-to-services.pid");
        let read_pid =
            || -> Option<u32> { std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok() };
        let killed = read_pid().ok_or("no cdc-sync pid file")?;
        let status = Command::new("kill")
            .args(["-9", &killed.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -9 {killed} failed"));
        }
        let started = Instant::now();
        loop {
            let restarted = read_pid().is_some_and(|p| p != killed);
            if restarted && matches!(http_get(args.cdc_port, "/healthz"), Ok((200, _))) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "cdc-sync was not restarted after kill -9; see {}",
                    state.join("supervisor.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let restarts = std::fs::read_to_string(state.join("restarts.json")).unwrap_or_default();
        if !restarts.contains("\"cdc-sync\": 1") {
            return Err(format!(
                "restarts.json does not count the restart: {restarts}"
            ));
        }
        // A write through the proxy reaches the services server through cdc-sync.
        let register = format!(
            "POST /api/users/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
            CHECK_USER.len(),
            CHECK_USER
        );
        let mut s = std::net::TcpStream::connect(("127.0.0.1", args.proxy_port))
            .map_err(|e| e.to_string())?;
        s.write_all(register.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if !answer.starts_with("HTTP/1.1 201") {
            return Err(format!("registering through the proxy: {answer}"));
        }
        let mirror = services_db.url("user_svc");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let replicated = rt.block_on(row_appears(
            &mirror,
            "SELECT COUNT(*) FROM users WHERE email = 'dev-check@example.com'",
        ));
        if !replicated {
            return Err(format!(
                "the new user never reached user_svc; see {}",
                cdc_log.display()
            ));
        }
        // …and logs in on user-service with the password set on the monolith.
        let login = format!(
            "POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
            CHECK_LOGIN.len(),
            CHECK_LOGIN
        );
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", user_port)).map_err(|e| e.to_string())?;
        s.write_all(login.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if !answer.starts_with("HTTP/1.1 200") || !answer.contains("\"token\"") {
            return Err(format!("logging in on user-service: {answer}"));
        }
        // The monolith's server is set up as cdc-sync needs (the README's check-source).
        let out = Command::new(&cdc_bin)
            .args(["check-source", "--config"])
            .arg(&cdc_config)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("OK") {
            return Err(format!(
                "cdc-sync check-source: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The seeded catalog reaches product-service by a backfill through the running stream,
        // and both sides then answer alike.
        for table in ["shop.products", "shop.inventory"] {
            let out = Command::new(&cdc_bin)
                .args(["backfill", "--table", table, "--config"])
                .arg(&cdc_config)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "backfilling {table}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let (status, from_monolith) = http_get(args.monolith_port, "/api/products/1")
            .map_err(|e| format!("probing the monolith: {e}"))?;
        let (pstatus, from_service) = http_get(product_port, "/api/products/1")
            .map_err(|e| format!("probing product-service: {e}"))?;
        // Two implementations: the same JSON, not necessarily the same key order.
        let as_json = |body: &str| serde_json::from_str::<serde_json::Value>(body).ok();
        if status != 200
            || pstatus != 200
            || as_json(&from_monolith).is_none()
            || as_json(&from_monolith) != as_json(&from_service)
        {
            return Err(format!(
                "product 1 after the backfill: monolith {status} {from_monolith} / product-service {pstatus} {from_service}"
            ));
        }
        // An order placed on order-service runs its saga: stock from product-service, a charge
        // at the gateway simulator.
        let token = answer
            .split("\"token\":\"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .ok_or("no token in the login answer")?
            .to_string();
        let body = r#"{"items":[{"product_id":1,"quantity":1}],"payment_token":"tok_visa"}"#;
        let place = format!(
            "POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", order_port)).map_err(|e| e.to_string())?;
        s.write_all(place.as_bytes()).map_err(|e| e.to_string())?;
        let mut placed = String::new();
        let _ = s.read_to_string(&mut placed);
        if !placed.starts_with("HTTP/1.1 201") || !placed.contains("\"paid\"") {
            return Err(format!("placing an order on order-service: {placed}"));
        }
        // …and the reverse stream carries it back into the monolith's `shop.orders`.
        let order_id: u64 = placed
            .split("\"id\":")
            .nth(1)
            .and_then(|t| t.split([',', '}']).next())
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| format!("no order id in {placed}"))?;
        if !rt.block_on(row_appears(
            &monolith_db.url("shop"),
            &format!("SELECT COUNT(*) FROM orders WHERE id = {order_id} AND status = 'paid'"),
        )) {
            return Err(format!(
                "order {order_id} placed on order-service never reached shop.orders; see {}",
                reverse_log.display()
            ));
        }
        // A registration on user-service reaches the mailbox: outbox → event stream → inbox →
        // notification-service → SMTP.
        let body = r#"{"email":"dev-mail@example.com","password":"password123","name":"Dev Mail"}"#;
        let register = format!(
            "POST /api/users/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", user_port)).map_err(|e| e.to_string())?;
        s.write_all(register.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut registered = String::new();
        let _ = s.read_to_string(&mut registered);
        if !registered.starts_with("HTTP/1.1 201") {
            return Err(format!("registering on user-service: {registered}"));
        }
        let started = Instant::now();
        while !std::fs::read_to_string(&smtp_log)
            .unwrap_or_default()
            .contains("to dev-mail@example.com")
        {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the welcome e-mail never reached the SMTP sink; see {} and {}",
                    events_log.display(),
                    notification_log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The user registered on user-service reached the monolith by the reverse stream and
        // logs in there: a rollback of `users` would lose nobody.
        if !rt.block_on(row_appears(
            &monolith_db.url("shop"),
            "SELECT COUNT(*) FROM users WHERE email = 'dev-mail@example.com'",
        )) {
            return Err(format!(
                "the user registered on user-service never reached shop.users; see {}",
                reverse_log.display()
            ));
        }
        let body = r#"{"email":"dev-mail@example.com","password":"password123"}"#;
        let login = format!(
            "POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = std::net::TcpStream::connect(("127.0.0.1", args.monolith_port))
            .map_err(|e| e.to_string())?;
        s.write_all(login.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "the user made on user-service cannot log in on the monolith: {answer}"
            ));
        }
        // The ownership switch: users' writes to user-service and back, through the proxy. A
        // user registered while the service owned the writes logs in on the monolith after the
        // switch back: the reverse stream had applied it before the flip.
        let switch = |to: &str| -> Fallible<String> {
            let out = Command::new(args.bin_dir.join("strangler"))
                .args(["--domains"])
                .arg(&args.domains)
                .args([
                    "switch",
                    "users",
                    "--to",
                    to,
                    "--reason",
                    "dev check",
                    "--config",
                ])
                .arg(&controller_config)
                .output()
                .map_err(|e| format!("running strangler: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "strangler switch users --to {to}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let proxy_call = |request: String| -> Fallible<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", args.proxy_port))
                .map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            Ok(answer)
        };
        let post = |path: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let switched = switch("service")?;
        let body =
            r#"{"email":"dev-switch@example.com","password":"password123","name":"Dev Switch"}"#;
        let answer = proxy_call(post("/api/users/register", body))?;
        if !answer.starts_with("HTTP/1.1 201") || !answer.contains("x-strangler-backend: service") {
            return Err(format!(
                "registering after the switch to user-service: {answer}"
            ));
        }
        let back = switch("monolith")?;
        let body = r#"{"email":"dev-switch@example.com","password":"password123"}"#;
        let answer = proxy_call(post("/api/users/login", body))?;
        if !answer.starts_with("HTTP/1.1 200") || !answer.contains("x-strangler-backend: monolith")
        {
            return Err(format!(
                "the user registered while user-service owned the writes cannot log in on the monolith after the switch back: {answer}"
            ));
        }
        eprint!("{switched}{back}");
        println!(
            "check passed: every component answered, stranglerctl moved a route and read it back from the audit trail, cdc-sync check-source found the monolith's binlog settings right, a write through the proxy replicated to user-service and logs in there, cdc-sync killed with SIGKILL was restarted by the supervisor, the catalog backfilled into product-service answers as the monolith, an order went through order-service's saga and came back into shop.orders by the reverse stream, a registration's welcome e-mail arrived over SMTP, and that user came back into shop.users and logs in on the monolith, strangler switch moved users' writes to user-service and back with a user registered in between logging in on the monolith; stopping."
        );
        return Ok(());
    }
    println!();
    println!("Press Ctrl-C to stop everything.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = watch.tick() => {
                    if !monolith_db.is_running() || !services_db.is_running() {
                        eprintln!("a MariaDB server of the stack exited; see {}", state.display());
                        break;
                    }
                }
            }
        }
    });
    eprintln!("stopping…");
    let _ = std::fs::remove_file(state.join("stack.json"));
    drop(supervisor);
    drop(services_db);
    drop(monolith_db);
    eprintln!("stopped.");
    Ok(())
}

/// The proxy config of the dev stack: the monolith, the four services' future ports, the shop
/// routes, flags in MySQL (seeded from the flag file), and tokens verified with the monolith's
/// development secret. The admin API is on loopback without tokens: everyone is the operator.
fn proxy_config_text(
    args: &Args,
    state: &Path,
    flags_url: &str,
    seed: &Path,
    routes: &str,
) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\ndebug_header = true\n\
         upgrade_sock = \"{}\"\n\n[flags]\nsource = \"mysql\"\nurl = \"{}\"\nseed = \"{}\"\n\n\
         [user_key]\njwt_secret = \"strangler-dev-secret-change-me-0123456789\"\n\
         jwt_issuer = \"shop-monolith\"\njwt_audience = \"shop\"\n\
         jwks_url = \"http://127.0.0.1:{}/.well-known/jwks.json\"\n\n\
         [phases]\ncontroller = \"http://127.0.0.1:{}\"\n\n\
         [upstreams.monolith]\nbackends = [\"127.0.0.1:{}\"]\n",
        args.proxy_port,
        args.proxy_admin_port,
        state.join("proxy-upgrade.sock").display(),
        flags_url,
        seed.display(),
        args.monolith_port + 1,
        args.cdc_port + 3,
        args.monolith_port,
    );
    for (i, service) in [
        "user-service",
        "product-service",
        "order-service",
        "notification-service",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "\n[upstreams.{service}]\nbackends = [\"127.0.0.1:{}\"]\n",
            args.monolith_port + 1 + i as u16
        ));
    }
    text.push('\n');
    text.push_str(routes);
    text
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
