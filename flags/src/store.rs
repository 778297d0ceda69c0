//! The in-memory flag set every evaluation reads: one immutable snapshot behind an `ArcSwap`, so
//! a reload is a single pointer swap and evaluation never waits on a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::error::FlagError;
use crate::eval::{Context, evaluate};
use crate::model::Flag;

/// An immutable set of flags, keyed with a fast hash: each request looks one up, and the keys
/// come from the release managers, not from requests (no flooding to defend against).
#[derive(Debug, Default, Clone)]
pub struct FlagSet {
    pub flags: HashMap<String, Arc<Flag>, foldhash::fast::RandomState>,
}

impl FlagSet {
    /// Builds a set, validating every flag and refusing duplicate keys.
    pub fn new(flags: impl IntoIterator<Item = Flag>) -> Result<Self, FlagError> {
        let mut map = HashMap::default();
        for f in flags {
            f.validate()?;
            let key = f.key.clone();
            if map.insert(key.clone(), Arc::new(f)).is_some() {
                return Err(FlagError::Invalid {
                    key,
                    message: "defined twice".into(),
                });
            }
        }
        Ok(Self { flags: map })
    }

    /// The flag named `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<Flag>> {
        self.flags.get(key)
    }
}

/// Health of the store, for metrics and the admin API.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// Number of snapshots installed (starts at 1 with the first load).
    pub generation: u64,
    /// When the current snapshot was installed.
    pub loaded_at: Option<SystemTime>,
    /// The last reload that was refused, if the newest attempt failed.
    pub last_error: Option<String>,
    /// Reloads refused since start.
    pub failed_reloads: u64,
}

/// The shared, swappable flag set.
#[derive(Debug)]
pub struct FlagStore {
    current: ArcSwap<FlagSet>,
    status: Mutex<StoreStatus>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for FlagStore {
    fn default() -> Self {
        Self::new(FlagSet::default())
    }
}

impl FlagStore {
    /// A store serving `set`.
    pub fn new(set: FlagSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
            status: Mutex::new(StoreStatus {
                generation: 1,
                loaded_at: Some(SystemTime::now()),
                ..StoreStatus::default()
            }),
            changed: tokio::sync::watch::channel(1).0,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.current.load_full()
    }

    /// Evaluates flag `key` and returns the served value as a string, if any.
    pub fn evaluate_str(&self, key: &str, ctx: &Context) -> Option<String> {
        let set = self.current.load();
        let flag = set.get(key)?;
        evaluate(flag, ctx)
            .value
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// Installs a new snapshot (one pointer swap) and tells watchers.
    pub fn install(&self, set: FlagSet) {
        self.current.store(Arc::new(set));
        let generation = {
            let mut s = self.status.lock().expect("status lock");
            s.generation += 1;
            s.loaded_at = Some(SystemTime::now());
            s.last_error = None;
            s.generation
        };
        self.changed.send_replace(generation);
    }

    /// Records a refused reload; the current snapshot keeps serving.
    pub fn refuse(&self, error: &FlagError) {
        tracing::error!(error = %error, "flag reload refused; the previous flags keep serving");
        let mut s = self.status.lock().expect("status lock");
        s.failed_reloads += 1;
        s.last_error = Some(error.to_string());
    }

    /// Health of the store.
    pub fn status(&self) -> StoreStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Notified with the new generation after every install.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
