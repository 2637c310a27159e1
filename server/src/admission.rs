//! Which model-sized request the server reads next. Each one being read holds a model's bytes,
//! and a gradient part that arrives before its sibling in the reduction tree is kept until the
//! sibling comes (docs/design.md, "Aggregation as parts arrive"). Reading the waiting pushes
//! lowest first block first, rather than in arrival order, lets siblings meet sooner: when the
//! workers' unit sums all wait at once, they are combined almost in tree order and at most
//! about log2(units) partial sums wait, not half the units.
//!
//! The order is a hint from the client (request metadata, [`FIRST_BLOCK_METADATA`]); it
//! changes only memory, never a result: the blocks in the message are what is aggregated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

pub use anyk_proto::transport::FIRST_BLOCK_METADATA;

/// The sans-IO part: free slots, and the waiters in the order they are to be let in.
#[derive(Debug)]
pub struct Queue<W> {
    free: usize,
    /// Keyed by (first block, arrival): lowest block first, then first come.
    waiting: BTreeMap<(u32, u64), W>,
    arrivals: u64,
}

impl<W> Queue<W> {
    pub fn new(slots: usize) -> Self {
        Self {
            free: slots,
            waiting: BTreeMap::new(),
            arrivals: 0,
        }
    }

    /// Takes a free slot if there is one and nobody waits for it.
    pub fn try_enter(&mut self) -> bool {
        let entered = self.free > 0 && self.waiting.is_empty();
        self.free -= usize::from(entered);
        entered
    }

    /// Queues `waiter`, to be let in by [`Queue::leave`] after those with a lower `key`.
    pub fn wait(&mut self, key: u32, waiter: W) {
        self.waiting.insert((key, self.arrivals), waiter);
        self.arrivals += 1;
    }

    /// A slot is given back: the next waiter, who takes it over, or `None` (the slot is free).
    pub fn leave(&mut self) -> Option<W> {
        let next = self.waiting.pop_first().map(|(_, w)| w);
        self.free += usize::from(next.is_none());
        next
    }
}

/// [`Queue`] shared by the service's requests.
pub struct Admission(Mutex<Queue<oneshot::Sender<()>>>);

/// One slot, held while a request is read and handled; given to the next waiter when dropped.
pub struct Slot(Arc<Admission>);

impl Admission {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Queue::new(slots))))
    }

    /// Waits for a slot; requests with a lower `key` that wait too go first.
    pub async fn enter(self: Arc<Self>, key: u32) -> Slot {
        let rx = {
            let mut queue = self.queue();
            if queue.try_enter() {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                queue.wait(key, tx);
                Some(rx)
            }
        };
        let Some(rx) = rx else {
            return Slot(self);
        };
        let mut waiting = Waiting(self.clone(), Some(rx));
        if let Some(rx) = waiting.1.as_mut() {
            // The sender is only dropped unsent by `leave` skipping a waiter that gave up.
            let _ = rx.await;
        }
        waiting.1 = None;
        Slot(self)
    }

    fn queue(&self) -> MutexGuard<'_, Queue<oneshot::Sender<()>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the slot to the next waiter still waiting, or frees it.
    fn leave(&self) {
        let mut queue = self.queue();
        while let Some(next) = queue.leave() {
            if next.send(()).is_ok() {
                return;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A wait that may be given up (the client went away): a slot handed to it in the meantime is
/// passed on, not lost.
struct Waiting(Arc<Admission>, Option<oneshot::Receiver<()>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.1.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.0.leave();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waiters_enter_lowest_key_first_then_in_arrival_order() {
        let mut queue = Queue::new(1);
        assert!(queue.try_enter());
        assert!(!queue.try_enter());
        for (key, name) in [(6, "u6"), (2, "u2a"), (4, "u4"), (2, "u2b"), (u32::MAX, "init")] {
            queue.wait(key, name);
        }
        let order: Vec<_> = std::iter::from_fn(|| queue.leave()).collect();
        assert_eq!(order, ["u2a", "u2b", "u4", "u6", "init"]);
        // Nobody waits: the slot is free again, for one request.
        assert!(queue.try_enter());
        assert!(!queue.try_enter());
    }

    #[tokio::test]
    async fn a_slot_given_to_a_waiter_that_left_passes_to_the_next() {
        let admission = Admission::new(1);
        let first = admission.clone().enter(9).await;
        let gone = tokio::spawn(admission.clone().enter(1));
        let next = tokio::spawn(admission.clone().enter(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        drop(first);
        let slot = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next waiter got the slot")
            .unwrap();
        drop(slot);
        // And the slot is free again afterwards.
        let again = tokio::time::timeout(Duration::from_secs(5), admission.enter(0)).await;
        assert!(again.is_ok());
    }
}
