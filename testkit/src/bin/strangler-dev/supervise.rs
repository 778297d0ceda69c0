//! The stack's processes kept running as Kubernetes keeps containers: one that dies is started
//! again after a growing delay (0.5 s, doubling to 30 s, back to 0.5 s after a minute up), each
//! restart logged to `supervisor.log` and counted in `restarts.json` in the state folder.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::ProcessGuard;

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Up this long after a restart, the next death is treated as a first one again.
const STABLE: Duration = Duration::from_secs(60);

/// How to start one program of the stack, and the running copy.
pub struct Supervised {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    pidfile: PathBuf,
    log: PathBuf,
    guard: ProcessGuard,
    started: Instant,
    restarts: u32,
    delay: Duration,
    down_since: Option<Instant>,
}

impl Supervised {
    /// Starts `program args…` with `env`, output appended to `log`.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
        pidfile: PathBuf,
        log: PathBuf,
    ) -> Result<Self, String> {
        let guard = ProcessGuard::spawn_with_env(program, &args, &env, &pidfile, &log)
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Self {
            name,
            program: program.to_path_buf(),
            args,
            env,
            pidfile,
            log,
            guard,
            started: Instant::now(),
            restarts: 0,
            delay: FIRST_DELAY,
            down_since: None,
        })
    }

    /// The running copy.
    pub fn guard(&self) -> &ProcessGuard {
        &self.guard
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts the program again when it has been down for its delay; what happened, if anything.
    fn tend(&mut self) -> Option<String> {
        if self.guard.is_alive() {
            if self.started.elapsed() > STABLE {
                self.delay = FIRST_DELAY;
            }
            return None;
        }
        let now = Instant::now();
        let Some(since) = self.down_since else {
            self.down_since = Some(now);
            return Some(format!(
                "{} (pid {}) exited; starting it again in {:.1} s (log: {})",
                self.name,
                self.guard.pid(),
                self.delay.as_secs_f64(),
                self.log.display()
            ));
        };
        if now.duration_since(since) < self.delay {
            return None;
        }
        match ProcessGuard::spawn_with_env(
            &self.program,
            &self.args,
            &self.env,
            &self.pidfile,
            &self.log,
        ) {
            Ok(guard) => {
                self.guard = guard;
                self.restarts += 1;
                self.started = now;
                self.down_since = None;
                self.delay = (self.delay * 2).min(MAX_DELAY);
                Some(format!(
                    "{} restarted (restart {}, pid {})",
                    self.name,
                    self.restarts,
                    self.guard.pid()
                ))
            }
            Err(e) => {
                self.down_since = Some(now);
                self.delay = (self.delay * 2).min(MAX_DELAY);
                Some(format!("{}: starting again failed: {e}", self.name))
            }
        }
    }
}

/// Watches the stack's processes on a thread of its own; dropping it stops them, in the order
/// they were handed over.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Supervised>>>,
}

impl Supervisor {
    /// Takes over `processes`, recording in `state_dir`.
    pub fn start(mut processes: Vec<Supervised>, state_dir: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log_path = state_dir.join("supervisor.log");
        let counts_path = state_dir.join("restarts.json");
        let _ = std::fs::write(&counts_path, "{}\n");
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let mut changed = false;
                for process in &mut processes {
                    if let Some(line) = process.tend() {
                        eprintln!("supervisor: {line}");
                        if let Ok(mut f) = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log_path)
                        {
                            let _ = writeln!(f, "{} {line}", chrono_free_now());
                        }
                        changed = true;
                    }
                }
                if changed {
                    let counts: BTreeMap<&str, u32> =
                        processes.iter().map(|p| (p.name, p.restarts)).collect();
                    let _ = std::fs::write(
                        &counts_path,
                        serde_json::to_string_pretty(&counts).unwrap_or_default() + "\n",
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            processes
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Dropping the processes kills them, first handed over first.
            for process in thread.join().unwrap_or_default() {
                drop(process);
            }
        }
    }
}

/// Seconds since the Unix epoch, for log lines (`date -d @…` reads them).
fn chrono_free_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}
