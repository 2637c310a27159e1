//! Which model-sized request the server reads next. Each one being read holds a model's bytes,
//! and a gradient part that arrives before its sibling in the reduction tree is kept until the
//! sibling comes (docs/design.md, "Aggregation as parts arrive"). So requests are read two at a
//! time ([`MODEL_SIZED_IN_FLIGHT`]), the waiting ones in the order [`policy`] picks: a part that
//! joins a sibling first, then the lowest blocks; the others wait unread, HTTP/2 flow control
//! keeping their bytes at the client.
//!
//! Each request says which part it carries in its metadata ([`PART_METADATA`]). That is only
//! a hint: it changes the order of reading, never a result (the blocks in the message are what
//! is aggregated).

pub mod policy;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

pub use anyk_proto::transport::PART_METADATA;
pub use policy::{Hint, Holding};

/// Model-sized requests (gradient pushes, initial parameters) read at once. Two: one read at a
/// time saves a model size at the server's peak, but on loopback reads 8 workers' pushes about
/// 15% slower (`cargo run --release -p anyk-server --example loopback`), and made 8.5M steps
/// 5-7% slower, with and without stragglers (`anyk local`, 20 steps, 2 runs each).
pub const MODEL_SIZED_IN_FLIGHT: usize = 2;

/// Requests waiting to be read, and what the trainer holds now.
pub struct Admission(Mutex<State>);

struct State {
    free: usize,
    holding: Holding,
    /// In arrival order.
    waiting: Vec<Waiter>,
    /// Admitted and not yet handled, by id: parts on their way into what the trainer holds.
    reading: Vec<(u64, Option<Hint>)>,
    arrivals: u64,
}

struct Waiter {
    id: u64,
    hint: Option<Hint>,
    admit: oneshot::Sender<()>,
}

/// One slot, held while a request is read and handled; handed on when dropped.
pub struct Slot(Arc<Admission>, u64);

impl Admission {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self(Mutex::new(State {
            free: slots,
            holding: Holding::default(),
            waiting: Vec::new(),
            reading: Vec::new(),
            arrivals: 0,
        })))
    }

    /// What the trainer holds changed: waiting requests are judged again.
    pub fn publish(&self, holding: Holding) {
        let mut state = self.state();
        state.holding = holding;
        state.admit();
    }

    /// Waits until the policy picks this request for a free slot.
    pub async fn enter(self: Arc<Self>, hint: Option<Hint>) -> Slot {
        let (admit, mut admitted) = oneshot::channel();
        let id = {
            let mut state = self.state();
            let id = state.arrivals;
            state.arrivals += 1;
            state.waiting.push(Waiter { id, hint, admit });
            state.admit();
            id
        };
        let mut waiting = Waiting {
            admission: self.clone(),
            id,
            admitted: false,
        };
        // The sender is dropped unsent only with its waiter, which is this future.
        let _ = (&mut admitted).await;
        waiting.admitted = true;
        Slot(self, id)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Hands free slots to the requests the policy picks.
    fn admit(&mut self) {
        while self.free > 0 {
            let hints: Vec<Option<Hint>> = self.waiting.iter().map(|w| w.hint).collect();
            let reading: Vec<Option<Hint>> = self.reading.iter().map(|r| r.1).collect();
            let Some(index) = policy::choose(&self.holding, &reading, &hints) else {
                return;
            };
            let waiter = self.waiting.remove(index);
            // A waiter that gave up takes no slot.
            if waiter.admit.send(()).is_ok() {
                self.free -= 1;
                self.reading.push((waiter.id, waiter.hint));
            }
        }
    }

    fn leave(&mut self, id: u64) {
        self.free += 1;
        self.reading.retain(|r| r.0 != id);
        self.admit();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.state().leave(self.1);
    }
}

/// A wait that may be given up (the client went away): it leaves the queue, and a slot handed
/// to it meanwhile is passed on, not lost.
struct Waiting {
    admission: Arc<Admission>,
    id: u64,
    /// Set once the slot is taken over by a [`Slot`].
    admitted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        let mut state = self.admission.state();
        let queued = state.waiting.len();
        state.waiting.retain(|w| w.id != self.id);
        if state.waiting.len() == queued {
            // Not queued any more, and no Slot made: it was admitted as it gave up.
            state.leave(self.id);
        }
    }
}

#[cfg(test)]
mod tests;
