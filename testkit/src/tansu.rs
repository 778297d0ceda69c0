//! A real Kafka-compatible broker (`tansu`) on a free loopback port, in-memory storage by default
//! or PostgreSQL storage for durability across broker restarts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{TestkitError, log_tail};
use crate::process::{ProcessGuard, TempDir, find_binary, free_port, wait_for_port};

const INSTALL_HINT: &str = "cargo install tansu --locked --features dynostore,postgres";

/// A running tansu broker; killed when dropped.
#[derive(Debug)]
pub struct Tansu {
    broker: ProcessGuard,
    binary: PathBuf,
    port: u16,
    storage: String,
    dir: TempDir,
}

impl Tansu {
    /// Starts a broker with in-memory storage (`memory://tansu/`).
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with_storage("memory://tansu/")
    }

    /// Starts a broker with the given storage engine URL (e.g. `postgres://postgres@localhost`).
    pub fn start_with_storage(storage: &str) -> Result<Self, TestkitError> {
        let binary = find_binary("tansu", &[]).ok_or(TestkitError::BinaryMissing {
            binary: "tansu",
            install: INSTALL_HINT,
        })?;
        let dir = TempDir::new("tansu")?;
        let mut last = None;
        for _ in 0..3 {
            let port = free_port();
            match Self::spawn(&binary, &dir, port, storage) {
                Ok(broker) => {
                    return Ok(Self {
                        broker,
                        binary,
                        port,
                        storage: storage.to_string(),
                        dir,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn(
        binary: &Path,
        dir: &TempDir,
        port: u16,
        storage: &str,
    ) -> Result<ProcessGuard, TestkitError> {
        let url = format!("tcp://127.0.0.1:{port}");
        let args = vec![
            "broker".to_string(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            storage.to_string(),
        ];
        let log = dir.path().join("broker.log");
        let broker = ProcessGuard::spawn(binary, &args, &dir.path().join("guard.pid"), &log)?;
        let secs = 30;
        // Kafka clients speak first, so a connection that is accepted and stays open is ready.
        wait_for_port(
            port,
            Duration::from_secs(secs),
            || broker.is_alive(),
            |b| b.is_empty(),
        )
        .map_err(|why| TestkitError::NotReady {
            what: format!("tansu broker on port {port} ({why})"),
            secs,
            tail: log_tail(&log, 20),
            log,
        })?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (a crash).
    pub fn kill(&mut self) {
        self.broker.kill();
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.broker.pid().to_string())
            .status();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.broker.kill();
        let mut last = None;
        for _ in 0..20 {
            match Self::spawn(&self.binary, &self.dir, self.port, &self.storage) {
                Ok(b) => {
                    self.broker = b;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Creates a topic with `partitions` partitions through `tansu topic create`.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), TestkitError> {
        let log = self.dir.path().join("topic.log");
        let file =
            std::fs::File::create(&log).map_err(|e| TestkitError::io("creating topic log", e))?;
        let status = Command::new(&self.binary)
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(name)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| TestkitError::io("log", e))?)
            .stderr(file)
            .status()
            .map_err(|e| TestkitError::io("running tansu topic create", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(TestkitError::CommandFailed {
                what: format!("tansu topic create {name} ({status})"),
                tail: log_tail(&log, 20),
                log,
            })
        }
    }
}
