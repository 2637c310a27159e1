//! Replica agreement (docs/design.md, invariant 7): every holder of a block must send the same
//! bits for a step. The server keeps a digest of every copy it decodes, per step and block set,
//! for the current and the previous step only, and judges each new copy against the others.
//! In strict mode it also holds the not yet confirmed gradients here, one per distinct digest.

use std::collections::{BTreeMap, BTreeSet};

use anyk_core::part::Part;
use sha2::{Digest as _, Sha256};

/// The first 8 bytes of a copy's SHA-256, little-endian.
pub type Digest = u64;

/// Digest of a gradient's exact wire bytes.
pub(super) fn digest(bytes: &[u8]) -> Digest {
    let hash = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// The copies of one block set (a single block, or a pre-summed unit) at one step.
#[derive(Default)]
struct Copies {
    /// Each sender's digest; a sender's first copy counts, later ones from it are ignored.
    sent: BTreeMap<u32, Digest>,
    /// Senders already counted as disagreeing (once per copy).
    disagreeing: BTreeSet<u32>,
    /// Senders already counted as outvoted (once per copy).
    outvoted: BTreeSet<u32>,
    /// Strict mode: gradients not yet accepted, one per distinct digest.
    held: BTreeMap<Digest, Part>,
}

/// What one new copy changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Senders of the same digest, this one included.
    pub agreeing: Vec<u32>,
    /// Senders of another digest.
    pub differing: Vec<u32>,
    /// Senders counted as disagreeing because of this copy (this one and/or earlier ones).
    pub disagreeing: Vec<u32>,
    /// Senders newly outvoted: two other senders agree with each other against them.
    pub outvoted: Vec<u32>,
    /// Distinct senders of this block set so far.
    pub senders: usize,
    /// The most senders that agree on one digest.
    pub majority: usize,
}

/// Digests of the current and the previous step.
#[derive(Default)]
pub(super) struct Agreement {
    steps: BTreeMap<u64, BTreeMap<Vec<u32>, Copies>>,
}

impl Agreement {
    /// Records `worker`'s copy of `blocks` at `step` while the server is at step `current`.
    /// `None` when the copy is not compared: a step older than the previous one, or a second
    /// copy from the same sender.
    pub fn record(
        &mut self,
        current: u64,
        step: u64,
        blocks: &[u32],
        worker: u32,
        digest: Digest,
    ) -> Option<Verdict> {
        // Bounded memory: only the current and the previous step are kept.
        self.steps.retain(|&s, _| s + 1 >= current);
        if step + 1 < current {
            return None;
        }
        let copies = self
            .steps
            .entry(step)
            .or_default()
            .entry(blocks.to_vec())
            .or_default();
        if copies.sent.contains_key(&worker) {
            return None;
        }
        copies.sent.insert(worker, digest);
        Some(copies.judge(worker, digest))
    }

    /// Strict mode: whether another sender's held copy of `blocks` at `step` has exactly the
    /// bits of `gradient` (the digest finds it, the comparison rules out a collision).
    pub fn confirms(&self, step: u64, blocks: &[u32], digest: Digest, gradient: &Part) -> bool {
        self.copies(step, blocks)
            .and_then(|c| c.held.get(&digest))
            .is_some_and(|held| held.same_bits(gradient))
    }

    /// Strict mode: keeps `gradient` until a second holder confirms it (the first copy of each
    /// digest is kept).
    pub fn hold(&mut self, step: u64, blocks: &[u32], digest: Digest, gradient: Part) {
        if let Some(copies) = self.steps.get_mut(&step).and_then(|s| s.get_mut(blocks)) {
            copies.held.entry(digest).or_insert(gradient);
        }
    }

    /// Drops every held gradient of steps before `step`: they can no longer be accepted.
    pub fn release_before(&mut self, step: u64) {
        for copies in self.steps.range_mut(..step).flat_map(|(_, s)| s.values_mut()) {
            copies.held.clear();
        }
    }

    /// Drops the held gradients of `blocks` at `step` once the block set is accepted.
    pub fn accepted(&mut self, step: u64, blocks: &[u32]) {
        if let Some(copies) = self.steps.get_mut(&step).and_then(|s| s.get_mut(blocks)) {
            copies.held.clear();
        }
    }

    /// Forgets `worker`'s copies (it joined again: a replacement starts with a clean record and
    /// its copies are compared anew).
    pub fn forget(&mut self, worker: u32) {
        for copies in self.steps.values_mut().flat_map(BTreeMap::values_mut) {
            copies.sent.remove(&worker);
            copies.disagreeing.remove(&worker);
            copies.outvoted.remove(&worker);
            let live: BTreeSet<Digest> = copies.sent.values().copied().collect();
            copies.held.retain(|d, _| live.contains(d));
        }
    }

    fn copies(&self, step: u64, blocks: &[u32]) -> Option<&Copies> {
        self.steps.get(&step).and_then(|s| s.get(blocks))
    }
}

impl Copies {
    /// Judges the copies after `worker`'s new one with `digest` was recorded.
    fn judge(&mut self, worker: u32, digest: Digest) -> Verdict {
        let (mut agreeing, mut differing) = (Vec::new(), Vec::new());
        for (&w, &d) in &self.sent {
            if d == digest {
                agreeing.push(w);
            } else {
                differing.push(w);
            }
        }
        let mut disagreeing = Vec::new();
        if !differing.is_empty() {
            // The new copy differs from another, and so does every copy of another digest.
            for &w in std::iter::once(&worker).chain(&differing) {
                if self.disagreeing.insert(w) {
                    disagreeing.push(w);
                }
            }
        }
        let mut tally: BTreeMap<Digest, usize> = BTreeMap::new();
        for &d in self.sent.values() {
            *tally.entry(d).or_default() += 1;
        }
        let mut outvoted = Vec::new();
        for (&w, &mine) in &self.sent {
            let against = tally.iter().any(|(&d, &n)| d != mine && n >= 2);
            if against && self.outvoted.insert(w) {
                outvoted.push(w);
            }
        }
        Verdict {
            agreeing,
            differing,
            disagreeing,
            outvoted,
            senders: self.sent.len(),
            majority: tally.values().copied().max().unwrap_or(0),
        }
    }
}
