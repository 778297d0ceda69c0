//! Containers for tests, through the `docker` CLI: a private network on which each container
//! answers to its name (as a Kubernetes Service does), containers removed when dropped, and a
//! clear error when the engine is not reachable.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::TestkitError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs `docker ARGS`, returning stdout; a failure carries docker's stderr.
pub fn docker(args: &[&str]) -> Result<String, TestkitError> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TestkitError::BinaryMissing {
                binary: "docker",
                install: "apt-get install docker.io (./dev test does)",
            },
            _ => TestkitError::io("running docker", e),
        })?;
    if !out.status.success() {
        return Err(failed(&format!("docker {}", args.join(" ")), &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn failed(what: &str, out: &Output) -> TestkitError {
    TestkitError::CommandFailed {
        what: what.to_string(),
        log: PathBuf::from("(stderr)"),
        tail: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Fails with how to start it when the Docker engine does not answer.
pub fn require_engine() -> Result<(), TestkitError> {
    docker(&["version", "--format", "{{.Server.Version}}"]).map_err(|e| {
        TestkitError::CommandFailed {
            what: "the Docker engine is not reachable (./dev test starts dockerd)".into(),
            log: PathBuf::from("(docker version)"),
            tail: e.to_string(),
        }
    })?;
    Ok(())
}

/// A user-defined bridge network, removed (with its containers) on drop.
pub struct DockerNetwork {
    name: String,
    gateway: String,
}

/// What to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub image: String,
    /// The container's name on the network (what other containers resolve).
    pub name: String,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `uid:gid`, as Kubernetes' `runAsUser`/`runAsGroup`.
    pub user: Option<String>,
    /// A read-only root file system, as `readOnlyRootFilesystem: true`.
    pub read_only: bool,
    /// Writable in-memory folders (an `emptyDir`).
    pub tmpfs: Vec<String>,
    /// Host folder → container folder, read only (a mounted ConfigMap or Secret).
    pub mounts: Vec<(PathBuf, String)>,
    /// More names it answers to on the network (the Services that select its pod).
    pub aliases: Vec<String>,
}

/// A running container, removed on drop.
pub struct Container {
    id: String,
    name: String,
    ip: String,
}

impl DockerNetwork {
    /// Creates a network named `strangler-<prefix>-<pid>-<n>`.
    pub fn create(prefix: &str) -> Result<Self, TestkitError> {
        require_engine()?;
        let name = format!(
            "strangler-{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        docker(&["network", "create", &name])?;
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &name,
        ])?;
        Ok(Self { name, gateway })
    }

    /// The host's address on this network (where a server on the host is reached from inside).
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    fn run_args(&self, spec: &ContainerSpec, detach: bool) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        if detach {
            a.push("-d".into());
        } else {
            a.push("--rm".into());
        }
        a.extend(["--network".into(), self.name.clone()]);
        if detach {
            a.extend([
                "--name".into(),
                format!("{}-{}", self.name, spec.name),
                "--network-alias".into(),
                spec.name.clone(),
            ]);
            for alias in &spec.aliases {
                a.extend(["--network-alias".into(), alias.clone()]);
            }
        }
        if let Some(e) = &spec.entrypoint {
            a.extend(["--entrypoint".into(), e.clone()]);
        }
        if let Some(u) = &spec.user {
            a.extend(["--user".into(), u.clone()]);
        }
        if spec.read_only {
            a.push("--read-only".into());
        }
        for t in &spec.tmpfs {
            a.extend(["--tmpfs".into(), t.clone()]);
        }
        for (host, inside) in &spec.mounts {
            a.extend(["-v".into(), format!("{}:{inside}:ro", host.display())]);
        }
        for (k, v) in &spec.env {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        a.push(spec.image.clone());
        a.extend(spec.args.iter().cloned());
        a
    }

    /// Runs a container to its end (an init container, a one-off command); fails with its output
    /// when it exits non-zero.
    pub fn run_to_end(&self, spec: &ContainerSpec) -> Result<String, TestkitError> {
        let args = self.run_args(spec, false);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs)
    }

    /// Starts a container in the background.
    pub fn start(&self, spec: &ContainerSpec) -> Result<Container, TestkitError> {
        let args = self.run_args(spec, true);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker(&refs)?;
        let ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &id,
        ])?;
        Ok(Container {
            id,
            name: spec.name.clone(),
            ip,
        })
    }
}

impl Drop for DockerNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

impl Container {
    /// Its address on the network, reachable from the host.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.id]).is_ok_and(|s| s == "true")
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", &self.id])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    /// Runs a command inside it (`docker exec`), with extra environment variables.
    pub fn exec(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, TestkitError> {
        let mut a = vec!["exec".to_string()];
        for (k, v) in env {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        a.push(self.id.clone());
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        docker(&refs)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}
