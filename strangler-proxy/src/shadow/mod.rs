//! Shadow traffic: the user gets the monolith's answer; afterwards a copy of the request goes to
//! the service (and, for reads, a second time to the monolith, Diffy-style, to learn which fields
//! differ anyway), and the answers are compared field by field.

mod compare;
mod mirror;

pub use compare::{Difference, diff_json, path_matches};
pub use mirror::{ShadowJob, ShadowWorker};

use std::collections::HashSet;
use std::sync::Mutex;

/// Fields learned to differ between two answers of the monolith itself (timestamps, ids).
#[derive(Debug, Default)]
pub struct NoiseModel {
    paths: Mutex<HashSet<String>>,
}

impl NoiseModel {
    /// Remembers fields that differ between two monolith answers.
    pub fn learn(&self, paths: impl IntoIterator<Item = String>) {
        let mut p = self.paths.lock().expect("noise lock");
        for path in paths {
            if p.len() < 10_000 {
                p.insert(path);
            }
        }
    }

    /// Whether `path` is known noise.
    pub fn is_noise(&self, path: &str) -> bool {
        self.paths.lock().expect("noise lock").contains(path)
    }

    /// Every learned noisy field.
    pub fn snapshot(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .paths
            .lock()
            .expect("noise lock")
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }
}
