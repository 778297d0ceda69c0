//! The watermark bookkeeping (DBLog): keys the binlog changed while a chunk's window was open
//! are dropped from the chunk, which is written when the stream reaches its high watermark.

use std::collections::{HashMap, HashSet};

use mysql_async::Value;

/// One chunk read between watermarks, waiting for the stream to reach its high watermark.
pub struct Chunk {
    /// Its high watermark's signal id; the low one is the same with `low` for `high`.
    pub high_id: String,
    /// Index of its key range.
    pub range: usize,
    /// Key literal of each row, and the row's values: mapped target columns then defaults
    /// (direct mode), or every source column in snapshot form (Kafka mode).
    pub rows: Vec<(String, Vec<Value>)>,
    pub last_key: Option<Vec<Value>>,
    pub done: bool,
    pub applied: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// What the apply loop must do after a transaction.
pub enum Step {
    Nothing,
    /// Write this chunk now (after everything up to and including this transaction).
    Copy(Chunk, HashSet<String>),
}

/// The open windows and the chunks waiting for their high watermark, of one backfill.
#[derive(Default)]
pub struct Watermarks {
    /// Chunks read, by high watermark id, waiting for the stream to reach it.
    pending: HashMap<String, Chunk>,
    /// Open windows: low watermark id → keys the binlog changed since.
    windows: HashMap<String, HashSet<String>>,
}

/// The low watermark id that pairs with a high watermark id.
pub fn low_of(high_id: &str) -> String {
    high_id.replacen("backfill-high-", "backfill-low-", 1)
}

impl Watermarks {
    /// The stream met a low watermark: a window opens.
    pub fn open(&mut self, low_id: String) {
        self.windows.insert(low_id, HashSet::new());
    }

    /// Whether any window is open (changed keys need recording).
    pub fn any_open(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The stream changed these keys: every open window drops them from its chunk.
    pub fn changed(&mut self, keys: &[String]) {
        for window in self.windows.values_mut() {
            window.extend(keys.iter().cloned());
        }
    }

    /// A chunk arrived from a range reader (before its high watermark was written).
    pub fn arrived(&mut self, chunk: Chunk) {
        self.pending.insert(chunk.high_id.clone(), chunk);
    }

    /// Whether chunks are still waiting for their high watermark.
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The stream met a high watermark: its chunk and window, to copy now. A chunk whose low
    /// watermark was never seen has an unknown window, so copying could overwrite a newer row:
    /// its reader is told to read it again. Marks of an earlier run match nothing.
    pub fn close(&mut self, high_id: &str) -> Step {
        let low = low_of(high_id);
        let window = self.windows.remove(&low);
        match (self.pending.remove(high_id), window) {
            (Some(chunk), Some(window)) => Step::Copy(chunk, window),
            (Some(chunk), None) => {
                let _ = chunk.applied.send(Err(format!(
                    "the low watermark {low} of a chunk was not seen in the binlog"
                )));
                Step::Nothing
            }
            _ => Step::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(
        high: &str,
        keys: &[&str],
    ) -> (Chunk, tokio::sync::oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = Chunk {
            high_id: high.to_string(),
            range: 0,
            rows: keys
                .iter()
                .map(|k| (k.to_string(), vec![Value::Bytes(k.as_bytes().to_vec())]))
                .collect(),
            last_key: None,
            done: false,
            applied: tx,
        };
        (c, rx)
    }

    #[test]
    fn keys_changed_inside_the_window_are_reported_with_the_chunk() {
        let mut w = Watermarks::default();
        assert!(!w.any_open());
        w.changed(&["0".into()]); // before any window: recorded nowhere
        w.open("backfill-low-1".into());
        assert!(w.any_open());
        w.changed(&["1".into(), "2".into()]);
        let (c, _rx) = chunk("backfill-high-1", &["1", "2", "3"]);
        w.arrived(c);
        assert!(w.waiting());
        let Step::Copy(c, window) = w.close("backfill-high-1") else {
            panic!("the chunk is due at its high watermark");
        };
        assert_eq!(c.rows.len(), 3);
        assert_eq!(window, HashSet::from(["1".to_string(), "2".to_string()]));
        assert!(!w.any_open() && !w.waiting());
        // Changes after the high watermark belong to no window.
        w.changed(&["3".into()]);
        assert!(!w.any_open());
    }

    #[test]
    fn parallel_windows_each_see_every_change_while_open() {
        let mut w = Watermarks::default();
        w.open("backfill-low-a".into());
        w.changed(&["1".into()]);
        w.open("backfill-low-b".into());
        w.changed(&["2".into()]);
        let (a, _ra) = chunk("backfill-high-a", &["1"]);
        let (b, _rb) = chunk("backfill-high-b", &["2"]);
        w.arrived(a);
        w.arrived(b);
        let Step::Copy(_, wa) = w.close("backfill-high-a") else {
            panic!()
        };
        w.changed(&["3".into()]);
        let Step::Copy(_, wb) = w.close("backfill-high-b") else {
            panic!()
        };
        assert_eq!(wa, HashSet::from(["1".to_string(), "2".to_string()]));
        assert_eq!(wb, HashSet::from(["2".to_string(), "3".to_string()]));
    }

    #[test]
    fn a_chunk_without_its_low_watermark_is_sent_back_to_be_read_again() {
        let mut w = Watermarks::default();
        let (c, mut rx) = chunk("backfill-high-9", &["1"]);
        w.arrived(c);
        assert!(matches!(w.close("backfill-high-9"), Step::Nothing));
        let err = rx.try_recv().unwrap().unwrap_err();
        assert!(err.contains("backfill-low-9"), "{err}");
        // A high watermark of an earlier run (no chunk waiting) changes nothing.
        w.open("backfill-low-old".into());
        assert!(matches!(w.close("backfill-high-old"), Step::Nothing));
        assert!(!w.any_open());
    }
}
