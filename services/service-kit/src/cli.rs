//! What every service binary does before serving: its command line (`--config`,
//! `--check-config`, `serve` or `migrate`), its config loaded and checked (a bad one is refused
//! with file, line and field, exit code 2), and JSON logs.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ServerSettings};

/// A service's one config struct: defaults, then the TOML file, then environment overrides.
pub trait ServiceConfig: Sized + serde::de::DeserializeOwned + Default {
    /// The `[server]` table.
    fn server(&self) -> &ServerSettings;
    /// Applies the service's environment variables.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError>;
    /// Checks values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Defaults, then the file (if given), then environment overrides; validated.
    fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Self = crate::config::read(path)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }
}

/// The common command-line arguments.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// TOML config file (defaults apply when absent; the service's environment variables override).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// What a service binary is asked to do.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create the database if needed and apply migrations.
    Migrate,
}

/// Loads the config (exit 2 with the reason when it is bad); with `--check-config` prints what it
/// found and returns `None`; else starts the logs and returns the config.
pub fn start<C: ServiceConfig>(common: &Common) -> Option<C> {
    let config = match C::load(common.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if common.check_config {
        println!(
            "config OK: listen {} database {}",
            config.server().listen,
            config.server().database_url
        );
        return None;
    }
    crate::http::init_logging(config.server().log_format);
    Some(config)
}

/// The whole life of a service binary: config (`start`), `prepare` (database, migrations,
/// background loops), then, unless asked only to `migrate`, `app` served until SIGTERM or Ctrl-C.
pub async fn run<C, S, Fut>(
    name: &str,
    common: &Common,
    command: Option<Command>,
    prepare: impl FnOnce(C) -> Fut,
    app: impl FnOnce(S) -> axum::Router,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
{
    use anyhow::Context as _;
    let Some(config) = start::<C>(common) else {
        return Ok(());
    };
    let listen = config.server().listen;
    let state = prepare(config).await?;
    if command == Some(Command::Migrate) {
        return Ok(());
    }
    crate::http::serve(listen, name, app(state))
        .await
        .with_context(|| format!("serving on {listen}"))
}
