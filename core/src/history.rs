//! A job's history, carried in its checkpoint so that a resumed server goes on with it and
//! `anyk plot` can draw it: a point per completed step (loss, step time, stragglers skipped,
//! coverage margin) and an entry per layout change (repair, rebalance).
//!
//! Bounded: every step has its own point up to [`MAX_POINTS`]; then neighbouring points are
//! merged pairwise, so that each point stands for 2 (then 4, 8, ...) consecutive steps, with
//! their mean loss and step time, their summed stragglers and their least margin. A long job
//! thus keeps its whole curve at a coarser grain, and the totals stay exact. Only the newest
//! [`MAX_CHANGES`] layout changes are kept.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Layout, coverage_of};

/// The most step points a history holds: about 11 MB of checkpoint header when full (110 bytes
/// of JSON a point, measured at step numbers around a million).
pub const MAX_POINTS: usize = 100_000;
/// The most layout changes a history holds; older ones are dropped first.
pub const MAX_CHANGES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Steps each point stands for once full: 1, doubled each time the points fill up.
    pub span: u64,
    /// Completed steps, oldest first, by strictly increasing `step`.
    pub steps: Vec<StepPoint>,
    /// Layout changes, oldest first.
    pub changes: Vec<LayoutChange>,
}

/// One completed step, or (past [`MAX_POINTS`]) a run of consecutive ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPoint {
    /// The last step it stands for: completed steps after it (1 for the job's first step).
    pub step: u64,
    /// How many consecutive steps it stands for.
    pub steps: u64,
    /// Mean training loss over its blocks and steps; `None` when not finite (JSON has no NaN).
    pub loss: Option<f32>,
    /// Mean milliseconds from release to aggregation; `None` when no step of it was timed (the
    /// first step after a start or resume also waits for workers to boot).
    pub step_ms: Option<f32>,
    /// Members that contributed nothing (stragglers the server did not wait for), summed.
    pub skipped: u64,
    /// How many more workers the layout could lose (least over its steps).
    pub margin: i64,
    /// Milliseconds the job had trained when it completed (summed over server lives, as far
    /// as checkpoints reach).
    pub elapsed_ms: u64,
}

/// What a layout change did, as far as the membership tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The job's first layout.
    First,
    /// Members were lost and their copies moved to survivors.
    Repair,
    /// Members joined and copies moved to them.
    Rebalance,
    /// Copies moved without a change of members.
    Relayout,
}

/// A new layout epoch installed while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutChange {
    pub epoch: u64,
    /// Completed steps when it was installed.
    pub step: u64,
    /// Milliseconds the job had trained then (see [`StepPoint::elapsed_ms`]).
    pub elapsed_ms: u64,
    pub kind: ChangeKind,
    /// Members the old layout had and the new one does not.
    pub lost: Vec<u32>,
    /// Members the new layout has and the old one did not.
    pub joined: Vec<u32>,
    /// Block copies on a worker that did not hold that block before.
    pub copies_moved: u64,
    /// How many more workers the new layout can lose.
    pub margin: i64,
}

/// What one completed step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f32,
    pub step_ms: Option<f32>,
    pub skipped: u64,
    pub margin: i64,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("more than {MAX_POINTS} step points or {MAX_CHANGES} layout changes")]
    TooLong,
    #[error("a point's span is 0 or exceeds the history's")]
    Span,
    #[error("step points are not in strictly increasing step order")]
    Order,
    #[error("a loss or step time is not finite")]
    NotFinite,
}

impl Default for History {
    fn default() -> Self {
        Self {
            span: 1,
            steps: Vec::new(),
            changes: Vec::new(),
        }
    }
}

impl History {
    /// Adds a completed step. A step at or before points already held (a job resumed from an
    /// older checkpoint redoes steps) replaces them: the history follows the parameters.
    pub fn record_step(&mut self, record: StepRecord) {
        if self.steps.last().is_some_and(|p| p.step >= record.step) {
            self.steps.retain(|p| p.step < record.step);
        }
        let point = StepPoint {
            step: record.step,
            steps: 1,
            loss: finite(record.loss),
            step_ms: record.step_ms.and_then(finite),
            skipped: record.skipped,
            margin: record.margin,
            elapsed_ms: record.elapsed_ms,
        };
        match self.steps.last_mut() {
            Some(last) if last.steps < self.span && last.step + 1 == record.step => {
                *last = merged(last, &point);
            }
            _ => self.steps.push(point),
        }
        if self.steps.len() > MAX_POINTS {
            self.halve();
        }
    }

    /// Adds the change from `old` (none: the first layout) to `new`, installed after `step`
    /// completed steps; the same epoch again (a restarted operator) is no change.
    pub fn record_change(&mut self, old: Option<&Layout>, new: &Layout, step: u64, elapsed_ms: u64) {
        if old.is_some_and(|o| o.epoch == new.epoch) {
            return;
        }
        let members = |l: Option<&Layout>| l.map(|l| l.members.clone()).unwrap_or_default();
        let (before, after): (BTreeSet<u32>, _) = (members(old), members(Some(new)));
        let lost: Vec<u32> = before.difference(&after).copied().collect();
        let joined: Vec<u32> = after.difference(&before).copied().collect();
        let kind = match old {
            None => ChangeKind::First,
            Some(_) if !lost.is_empty() => ChangeKind::Repair,
            Some(_) if !joined.is_empty() => ChangeKind::Rebalance,
            Some(_) => ChangeKind::Relayout,
        };
        self.changes.push(LayoutChange {
            epoch: new.epoch,
            step,
            elapsed_ms,
            kind,
            lost,
            joined,
            copies_moved: old.map_or(0, |o| copies_added(o, new)),
            margin: layout_margin(new),
        });
        if self.changes.len() > MAX_CHANGES {
            self.changes.drain(..self.changes.len() - MAX_CHANGES);
        }
    }

    /// Merges neighbouring points pairwise: half as many, each standing for twice the steps.
    fn halve(&mut self) {
        self.steps = self
            .steps
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => merged(a, b),
                _ => pair[0].clone(),
            })
            .collect();
        self.span = self.span.saturating_mul(2);
    }

    /// Nothing recorded (what files from before histories decode to).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Milliseconds trained by the newest record (0 for an empty history).
    pub fn elapsed_ms(&self) -> u64 {
        let step = self.steps.last().map_or(0, |p| p.elapsed_ms);
        let change = self.changes.last().map_or(0, |c| c.elapsed_ms);
        step.max(change)
    }

    /// Stragglers skipped over the whole history (exact, whatever the merging).
    pub fn skipped(&self) -> u64 {
        self.steps.iter().map(|p| p.skipped).sum()
    }

    /// The invariants [`History::record_step`] keeps, for a history read from a file.
    pub fn check(&self) -> Result<(), HistoryError> {
        if self.steps.len() > MAX_POINTS || self.changes.len() > MAX_CHANGES {
            return Err(HistoryError::TooLong);
        }
        if self.span == 0 || self.steps.iter().any(|p| p.steps == 0 || p.steps > self.span) {
            return Err(HistoryError::Span);
        }
        if self.steps.windows(2).any(|w| w[0].step >= w[1].step) {
            return Err(HistoryError::Order);
        }
        let values = self.steps.iter().flat_map(|p| [p.loss, p.step_ms]).flatten();
        if !values.into_iter().all(f32::is_finite) {
            return Err(HistoryError::NotFinite);
        }
        Ok(())
    }
}

/// How many more workers `layout` can lose with all its members alive.
pub fn layout_margin(layout: &Layout) -> i64 {
    coverage_of(layout, &layout.members).margin
}

/// `a` then `b` as one point: means weighted by the steps that have a value.
fn merged(a: &StepPoint, b: &StepPoint) -> StepPoint {
    StepPoint {
        step: b.step,
        steps: a.steps + b.steps,
        loss: mean(a.loss, a.steps, b.loss, b.steps),
        step_ms: mean(a.step_ms, a.steps, b.step_ms, b.steps),
        skipped: a.skipped + b.skipped,
        margin: a.margin.min(b.margin),
        elapsed_ms: b.elapsed_ms,
    }
}

fn mean(a: Option<f32>, wa: u64, b: Option<f32>, wb: u64) -> Option<f32> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (wa, wb) = (wa as f64, wb as f64);
            finite(((f64::from(a) * wa + f64::from(b) * wb) / (wa + wb)) as f32)
        }
        (a, b) => a.or(b),
    }
}

fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

/// Copies that `after` places on a worker that did not hold that block in `before`.
fn copies_added(before: &Layout, after: &Layout) -> u64 {
    before
        .holders
        .iter()
        .zip(&after.holders)
        .map(|(old, new)| new.iter().filter(|w| !old.contains(w)).count() as u64)
        .sum()
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
