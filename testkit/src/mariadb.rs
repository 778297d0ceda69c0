//! A private MariaDB server for one test binary or one dev stack: `mariadb-install-db` into a temp
//! folder, `mariadbd` on a free loopback port with the binlog settings cdc-sync needs
//! (`log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL`, `binlog_annotate_row_events`, a
//! distinct `server_id`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable as _;

use crate::error::{TestkitError, log_tail};
use crate::process::{ProcessGuard, TempDir, find_binary, free_port, wait_for_port};

const INSTALL_HINT: &str =
    "apt-get install -y mariadb-server (or run ./dev test, which installs it)";

/// How to start a server.
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// `server_id` written into every binlog event; distinct per server.
    pub server_id: u32,
    /// A name for temp folders and messages (`monolith`, `services`).
    pub name: String,
    /// Fixed port, or a free one when `None`.
    pub port: Option<u16>,
    /// InnoDB buffer pool size in MiB.
    pub buffer_pool_mb: u32,
    /// Extra `mariadbd` arguments (`--key=value`).
    pub extra_args: Vec<String>,
}

impl MariaDbOptions {
    /// Defaults for a server named `name` with `server_id`.
    pub fn new(name: &str, server_id: u32) -> Self {
        Self {
            server_id,
            name: name.to_string(),
            port: None,
            buffer_pool_mb: 256,
            extra_args: Vec::new(),
        }
    }
}

/// A running private MariaDB server; killed and deleted when dropped.
#[derive(Debug)]
pub struct MariaDb {
    server: ProcessGuard,
    port: u16,
    options: MariaDbOptions,
    mariadbd: PathBuf,
    // Dropped last: the server must be gone before its folder.
    dir: TempDir,
}

/// A fresh, empty database on a test server.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// The database (schema) name.
    pub name: String,
    /// `mysql://root@127.0.0.1:PORT/NAME`.
    pub url: String,
    /// The server's port.
    pub port: u16,
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl MariaDb {
    /// Installs a fresh data folder and starts the server; returns once it accepts connections.
    pub fn start(options: MariaDbOptions) -> Result<Self, TestkitError> {
        let install_db = find_binary("mariadb-install-db", &["/usr/bin"]).ok_or(
            TestkitError::BinaryMissing {
                binary: "mariadb-install-db",
                install: INSTALL_HINT,
            },
        )?;
        let mariadbd = find_binary("mariadbd", &["/usr/sbin", "/usr/libexec"]).ok_or(
            TestkitError::BinaryMissing {
                binary: "mariadbd",
                install: INSTALL_HINT,
            },
        )?;
        let dir = TempDir::new(&format!("mariadb-{}", options.name))?;
        let data = dir.path().join("data");
        let install_log = dir.path().join("install.log");
        let log_file = std::fs::File::create(&install_log)
            .map_err(|e| TestkitError::io("creating install log", e))?;
        // A private tmpdir: in the shared /tmp, temporary tables are named after the server's
        // PID, and PIDs wrap quickly here, so two servers could collide (seen: "Unknown table
        // 'mysql.tmp_proxies_priv'" from mariadb-install-db).
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| TestkitError::io("creating tmpdir", e))?;
        let status = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--innodb-log-file-size=32M",
            ])
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| TestkitError::io("log", e))?,
            )
            .stderr(log_file)
            .status()
            .map_err(|e| TestkitError::io(format!("running {}", install_db.display()), e))?;
        if !status.success() {
            return Err(TestkitError::CommandFailed {
                what: format!("{} ({status})", install_db.display()),
                tail: log_tail(&install_log, 60),
                log: install_log,
            });
        }
        let mut last_err = None;
        // A free port can be taken between our probe and the server's bind: retry a few times.
        for _ in 0..3 {
            let port = options.port.unwrap_or_else(free_port);
            match Self::spawn_server(&mariadbd, dir.path(), port, &options) {
                Ok(server) => {
                    return Ok(Self {
                        server,
                        port,
                        options,
                        mariadbd,
                        dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
            if options.port.is_some() {
                break;
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn spawn_server(
        mariadbd: &Path,
        dir: &Path,
        port: u16,
        options: &MariaDbOptions,
    ) -> Result<ProcessGuard, TestkitError> {
        let data = dir.join("data");
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", dir.join("tmp").display()),
            "--user=root".into(),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("mariadb.sock").display()),
            format!("--pid-file={}", dir.join("mariadb.pid").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            format!("--log-bin={}", data.join("binlog").display()),
            "--binlog-format=ROW".into(),
            "--binlog-row-image=FULL".into(),
            // The statement behind each row event (with its sqlcommenter trace comment) is kept
            // in the binlog as an annotate event; MariaDB's default, stated.
            "--binlog-annotate-row-events=ON".into(),
            format!("--server-id={}", options.server_id),
            "--skip-name-resolve".into(),
            "--innodb-log-file-size=32M".into(),
            format!("--innodb-buffer-pool-size={}M", options.buffer_pool_mb),
            // Test servers trade crash durability of the last second for speed.
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--sync-binlog=0".into(),
            "--max-connections=500".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_unicode_ci".into(),
        ];
        args.extend(options.extra_args.iter().cloned());
        let server = ProcessGuard::spawn(
            mariadbd,
            &args,
            &dir.join("guard.pid"),
            &dir.join("stdout.log"),
        )?;
        let secs = 60;
        let ready = wait_for_port(
            port,
            Duration::from_secs(secs),
            || server.is_alive(),
            |b| {
                // MySQL protocol: the server speaks first; byte 4 is the protocol version 10.
                b.len() > 4 && b[4] == 10
            },
        );
        match ready {
            Ok(()) => {
                Self::check_identity(port, &dir.join("data"))?;
                Ok(server)
            }
            Err(why) => Err(TestkitError::NotReady {
                what: format!("mariadbd `{}` on port {port} ({why})", options.name),
                secs,
                log: dir.join("error.log"),
                tail: log_tail(&dir.join("error.log"), 20),
            }),
        }
    }

    /// Fails unless the server answering on `port` runs on `data`: a handshake alone may come
    /// from another server that held the port first (seen: a dev stack seeding a test's server).
    fn check_identity(port: u16, data: &Path) -> Result<(), TestkitError> {
        let client = find_binary("mariadb", &["/usr/bin"]).ok_or(TestkitError::BinaryMissing {
            binary: "mariadb",
            install: INSTALL_HINT,
        })?;
        let out = Command::new(&client)
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h127.0.0.1",
                "-uroot",
                "-N",
                "-B",
            ])
            .arg(format!("-P{port}"))
            .args(["-e", "SELECT @@datadir"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestkitError::io(format!("running {}", client.display()), e))?;
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ours = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
        let same = Path::new(found.trim_end_matches('/'))
            .canonicalize()
            .is_ok_and(|f| f == ours);
        if same {
            Ok(())
        } else {
            Err(TestkitError::ForeignServer {
                port,
                found: if out.status.success() {
                    found
                } else {
                    String::from_utf8_lossy(&out.stderr).trim().to_string()
                },
                ours: ours.display().to_string(),
            })
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The binlog `server_id`.
    pub fn server_id(&self) -> u32 {
        self.options.server_id
    }

    /// `mysql://root@127.0.0.1:PORT` (no database).
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// `mysql://root@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.root_url())
    }

    /// The server's data and log folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.server.is_alive()
    }

    /// Kills the server with SIGKILL (a crash); the data stays for [`MariaDb::restart`].
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port and data (after [`MariaDb::kill`] or to bounce it).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.server.kill();
        let mut last = None;
        // The old socket may linger in TIME_WAIT for a moment.
        for _ in 0..20 {
            match Self::spawn_server(&self.mariadbd, self.dir.path(), self.port, &self.options) {
                Ok(server) => {
                    self.server = server;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Runs one SQL statement as root (no database selected).
    pub async fn execute(&self, sql: &str) -> Result<(), TestkitError> {
        let mut conn = mysql_async::Conn::from_url(self.root_url())
            .await
            .map_err(|source| TestkitError::Sql {
                sql: "connect".into(),
                source,
            })?;
        conn.query_drop(sql)
            .await
            .map_err(|source| TestkitError::Sql {
                sql: sql.to_string(),
                source,
            })?;
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// Creates a new empty database named `<prefix>_<pid>_<n>`, unique on this server.
    pub async fn create_database(&self, prefix: &str) -> Result<TestDatabase, TestkitError> {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name: String = format!("{prefix}_{}_{n}", std::process::id())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.execute(&format!("CREATE DATABASE `{name}`")).await?;
        Ok(TestDatabase {
            url: self.url(&name),
            name,
            port: self.port,
        })
    }
}
