//! Write holds for an ownership switch: while a flag is held, this replica keeps each new write
//! request of the flag's routes waiting (reads pass) until the hold is released or its bound
//! passes, and counts the writes in flight, so a controller knows when no write is under way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The hold state of one flag.
#[derive(Default)]
struct Hold {
    held: AtomicBool,
    inflight: AtomicI64,
    waiting: AtomicI64,
    released: tokio::sync::Notify,
    /// When the hold ends by itself (a controller that died must not hold writes forever).
    until: Mutex<Option<Instant>>,
}

impl Hold {
    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        *self.until.lock().expect("not poisoned") = None;
        self.released.notify_waiters();
    }

    /// Ends the hold if its bound passed; how long it still runs otherwise.
    fn remaining(&self) -> Option<Duration> {
        let until = *self.until.lock().expect("not poisoned");
        match until {
            Some(t) if t > Instant::now() => Some(t - Instant::now()),
            _ => {
                self.release();
                None
            }
        }
    }
}

/// What a controller reads of a flag's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HoldStatus {
    pub held: bool,
    /// Write requests of the flag's routes on their way to a backend.
    pub inflight: i64,
    /// Write requests waiting for the hold to end.
    pub waiting: i64,
    /// Milliseconds until the hold ends by itself.
    pub remaining_ms: u64,
}

/// A write in flight: counted until dropped (when its request is done).
pub struct InFlight(Arc<Hold>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every flag's hold on this replica.
#[derive(Default)]
pub struct Holds {
    by_flag: RwLock<HashMap<String, Arc<Hold>>>,
}

impl Holds {
    fn get(&self, flag: &str) -> Arc<Hold> {
        if let Some(h) = self.by_flag.read().expect("not poisoned").get(flag) {
            return h.clone();
        }
        self.by_flag
            .write()
            .expect("not poisoned")
            .entry(flag.to_string())
            .or_default()
            .clone()
    }

    /// Holds new writes of `flag` for at most `max`.
    pub fn hold(&self, flag: &str, max: Duration) -> HoldStatus {
        let hold = self.get(flag);
        *hold.until.lock().expect("not poisoned") = Some(Instant::now() + max);
        hold.held.store(true, Ordering::SeqCst);
        self.status(flag)
    }

    /// Lets the held writes of `flag` go on, to wherever the flag now routes them.
    pub fn release(&self, flag: &str) -> HoldStatus {
        self.get(flag).release();
        self.status(flag)
    }

    /// The hold of `flag` now.
    pub fn status(&self, flag: &str) -> HoldStatus {
        let hold = self.get(flag);
        let remaining = if hold.held.load(Ordering::SeqCst) {
            hold.remaining()
        } else {
            None
        };
        HoldStatus {
            held: remaining.is_some(),
            inflight: hold.inflight.load(Ordering::SeqCst),
            waiting: hold.waiting.load(Ordering::SeqCst),
            remaining_ms: remaining.map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Admits one write request of `flag`: at once when the flag is not held, else when the
    /// hold ends. Counted as in flight until the returned guard drops. `true` in the second
    /// place when it waited.
    pub async fn enter_write(&self, flag: &str) -> (InFlight, bool) {
        let hold = self.get(flag);
        let mut waited = false;
        loop {
            // Counted before looking at the hold: a controller that set the hold and then reads
            // zero in flight knows every later write sees the hold (both sides SeqCst).
            hold.inflight.fetch_add(1, Ordering::SeqCst);
            if !hold.held.load(Ordering::SeqCst) {
                return (InFlight(hold), waited);
            }
            hold.inflight.fetch_sub(1, Ordering::SeqCst);
            let released = hold.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !hold.held.load(Ordering::SeqCst) {
                continue;
            }
            let Some(remaining) = hold.remaining() else {
                continue;
            };
            waited = true;
            hold.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(remaining, released).await;
            hold.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_wait_for_the_release_and_are_counted_in_flight() {
        let holds = Arc::new(Holds::default());
        let (first, waited) = holds.enter_write("route.users").await;
        assert!(!waited);
        assert_eq!(holds.status("route.users").inflight, 1);
        holds.hold("route.users", Duration::from_secs(30));
        let h = holds.clone();
        let waiter = tokio::spawn(async move { h.enter_write("route.users").await.1 });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = holds.status("route.users");
        assert!(status.held);
        assert_eq!((status.inflight, status.waiting), (1, 1));
        assert!(!waiter.is_finished());
        // Other flags pass.
        let (_other, waited) = holds.enter_write("route.orders").await;
        assert!(!waited);
        drop(first);
        assert_eq!(holds.status("route.users").inflight, 0);
        holds.release("route.users");
        assert!(waiter.await.unwrap());
        assert_eq!(holds.status("route.users").waiting, 0);
    }

    #[tokio::test]
    async fn a_hold_ends_by_itself_at_its_bound() {
        let holds = Holds::default();
        holds.hold("route.users", Duration::from_millis(100));
        let started = Instant::now();
        let (_w, waited) = holds.enter_write("route.users").await;
        assert!(waited);
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(!holds.status("route.users").held);
    }
}
