//! Child processes and temp folders that cannot outlive their owner: a small shell guard reads
//! a pipe from us and, at end of file (we dropped it, exited or were killed), kills the child
//! and removes the folder. Nothing is left behind even after `kill -9` of a test binary.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::TestkitError;

/// Guard script: start the program, remember its pid, wait for EOF on stdin, then kill it.
const GUARD: &str = r#"
pidfile="$1"; log="$2"; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo $pid >"$pidfile"
cat >/dev/null
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
exit 0
"#;

/// A binary of this workspace's build, beside the running test's own folder (`cargo test
/// --workspace` builds them all); panics naming the command that builds it when missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it (cargo build --workspace, or ./dev test)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound, read, released; callers retry on the rare race).
///
/// The port is free when this returns, not reserved: the kernel may hand it out again before
/// the caller's program binds it. Within this process a port is never returned twice, so two
/// tests running side by side cannot be given the same one (a proxy whose admin port another
/// test's proxy took would otherwise answer for it).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The standard output of a finished command; a panic showing its exit status, output and
/// errors (headed by `what`, which names the command) when it did not exit with 0.
#[track_caller]
pub fn assert_success(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A running program that is killed when this guard is dropped or its owner process exits.
#[derive(Debug)]
pub struct ProcessGuard {
    guard: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl ProcessGuard {
    /// Starts `program args…` with output appended to `log`; `pidfile` is scratch space.
    pub fn spawn(
        program: &Path,
        args: &[String],
        pidfile: &Path,
        log: &Path,
    ) -> Result<Self, TestkitError> {
        Self::spawn_with_env(program, args, &[], pidfile, log)
    }

    /// Like [`ProcessGuard::spawn`], with extra environment variables for the program.
    pub fn spawn_with_env(
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        pidfile: &Path,
        log: &Path,
    ) -> Result<Self, TestkitError> {
        let _ = std::fs::remove_file(pidfile);
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(pidfile)
            .arg(log)
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning {}", program.display()), e))?;
        let stdin = guard.stdin.take();
        let started = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(TestkitError::NotReady {
                    what: format!("guard for {}", program.display()),
                    secs: 10,
                    log: log.to_path_buf(),
                    tail: crate::error::log_tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(Self {
            guard,
            stdin,
            pid,
            log: log.to_path_buf(),
        })
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the program is still running.
    pub fn is_alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // A zombie (state Z) has exited but not been reaped yet.
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    /// The file that collects the program's output.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills the program with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.guard.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A folder removed when dropped or when the owning process exits, whatever the way.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    remover: Option<(Child, ChildStdin)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    /// Creates a new folder under the system temp dir, named `strangler-<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Result<Self, TestkitError> {
        // Process ids are reused quickly in small PID namespaces, and an earlier owner's remover
        // may still be about to delete its folder: names also carry the time, and a folder that
        // already exists is never reused.
        let path = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "strangler-{prefix}-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(TestkitError::io(format!("creating {}", path.display()), e));
                }
            }
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"cat >/dev/null; sleep 0.2; rm -rf "$1""#)
            .arg("sh")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestkitError::io("spawning temp dir remover", e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        Ok(Self {
            path,
            remover: Some((child, stdin)),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.remover.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Waits until something listens on `port` and its first bytes satisfy `ready`.
pub(crate) fn wait_for_port(
    port: u16,
    timeout: Duration,
    alive: impl Fn() -> bool,
    ready: impl Fn(&[u8]) -> bool,
) -> Result<(), &'static str> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if !alive() {
            return Err("exited while starting");
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            match stream.read(&mut buf) {
                Ok(n) if ready(&buf[..n]) => return Ok(()),
                // A server that speaks second (Kafka) times out here: accepting is enough.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && ready(&[]) =>
                {
                    return Ok(());
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("timed out")
}

/// Finds `name` on PATH or in `~/.cargo/bin`.
pub(crate) fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra_dirs.iter().map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    #[test]
    fn assert_success_returns_stdout() {
        let out = Command::new("sh")
            .args(["-c", "echo hello"])
            .output()
            .unwrap();
        assert_eq!(super::assert_success(&out, "echo"), "hello\n");
    }

    #[test]
    #[should_panic(expected = "failing step: exit status: 3\nsaid\nwhy")]
    fn assert_success_shows_what_a_failed_command_printed() {
        let out = Command::new("sh")
            .args(["-c", "echo said; echo why >&2; exit 3"])
            .output()
            .unwrap();
        super::assert_success(&out, "failing step");
    }
}
