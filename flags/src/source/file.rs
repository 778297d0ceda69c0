//! Flags in a JSON file: loaded at start, re-read when the file changes (polled), rewritten
//! atomically (temp file + rename) when a flag is set. A bad edit is refused, the old flags stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::FlagError;
use crate::model::Flag;
use crate::source::{FlagDocument, parse_document};
use crate::store::{FlagSet, FlagStore};

/// A flag file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

/// What tells a changed file: modification time, size and inode (a rename swaps the inode).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl FileSource {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Reads and validates the file.
    pub fn load(&self) -> Result<FlagSet, FlagError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| FlagError::Io {
            what: format!("reading {}", self.path.display()),
            source,
        })?;
        parse_document(&self.path.display().to_string(), &text)
    }

    /// Reloads into `store` now: installs on success, records the refusal otherwise.
    pub fn reload(&self, store: &FlagStore) -> Result<(), FlagError> {
        match self.load() {
            Ok(set) => {
                store.install(set);
                Ok(())
            }
            Err(e) => {
                store.refuse(&e);
                Err(e)
            }
        }
    }

    /// Polls the file every `interval` and reloads `store` when it changed since this call.
    pub fn watch(self, store: Arc<FlagStore>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let mut last = stamp(&self.path);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let now = stamp(&self.path);
                if now != last {
                    last = now;
                    let _ = self.reload(&store);
                }
            }
        })
    }

    /// Writes `flag` into the file (replacing the one with its key), bumping its version past
    /// the stored one; atomic for readers of the file.
    pub fn put(&self, mut flag: Flag) -> Result<Flag, FlagError> {
        let mut doc: FlagDocument = match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| FlagError::Parse {
                source_name: self.path.display().to_string(),
                path: ".".into(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FlagDocument::default(),
            Err(source) => {
                return Err(FlagError::Io {
                    what: format!("reading {}", self.path.display()),
                    source,
                });
            }
        };
        flag.validate()?;
        let previous = doc.flags.get(&flag.key).map(|f| f.version).unwrap_or(0);
        flag.version = previous.max(flag.version) + 1;
        doc.flags.insert(flag.key.clone(), flag.clone());
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&doc).expect("flags serialize");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|source| FlagError::Io {
                what: format!("writing {}", self.path.display()),
                source,
            })?;
        Ok(flag)
    }
}
