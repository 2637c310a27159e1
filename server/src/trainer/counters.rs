//! What the server counts for progress reports: stragglers skipped, gradients dropped, step
//! times, replica disagreements, and per-worker statistics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyk_core::Layout;
use anyk_proto::v1::{Progress, WorkerStats};

use super::model::Round;

#[derive(Default, Clone)]
pub(super) struct WorkerCounters {
    pub joins: u64,
    accepted: u64,
    latency_total: Duration,
    skipped: u64,
    /// Replica agreement since this worker id last joined (docs/design.md, invariant 7).
    disagreements: u64,
    outvoted: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    stragglers_skipped: u64,
    pub late_dropped: u64,
    pub redundant_dropped: u64,
    pub received: u64,
    step_time_total: Duration,
    steps_timed: u64,
    skipped_last_step: Vec<u32>,
    replica_disagreements: u64,
    pub workers: BTreeMap<u32, WorkerCounters>,
}

impl Counters {
    /// A worker id joined (again): its agreement record starts over.
    pub fn joined(&mut self, worker: u32) {
        let stats = self.workers.entry(worker).or_default();
        stats.joins += 1;
        stats.disagreements = 0;
        stats.outvoted = 0;
    }

    /// Counts one disagreeing copy for each of `workers`.
    pub fn disagreed(&mut self, workers: &[u32]) {
        for &w in workers {
            self.workers.entry(w).or_default().disagreements += 1;
        }
        self.replica_disagreements += workers.len() as u64;
    }

    /// Counts `worker` outvoted once; returns its count since it joined.
    pub fn outvoted(&mut self, worker: u32) -> u64 {
        let stats = self.workers.entry(worker).or_default();
        stats.outvoted += 1;
        stats.outvoted
    }

    pub fn accepted(&mut self, worker: u32, latency: Duration) {
        let stats = self.workers.entry(worker).or_default();
        stats.accepted += 1;
        stats.latency_total += latency;
    }

    /// The members that contributed nothing to the last step.
    pub fn skipped_last_step(&self) -> &[u32] {
        &self.skipped_last_step
    }

    /// Counts the members that contributed nothing to `round` as skipped, and its time.
    pub fn step_done(&mut self, round: &Round, layout: Option<&Layout>, now: Instant) {
        let skipped: Vec<u32> = layout
            .map(|l| {
                l.members
                    .iter()
                    .copied()
                    .filter(|w| !round.contributors.contains(w))
                    .collect()
            })
            .unwrap_or_default();
        for w in &skipped {
            self.workers.entry(*w).or_default().skipped += 1;
        }
        self.stragglers_skipped += skipped.len() as u64;
        self.skipped_last_step = skipped;
        if round.timed {
            self.step_time_total += now - round.released;
            self.steps_timed += 1;
        }
    }

    /// The counted part of a progress report, `elapsed` after the server started; a worker
    /// outvoted `faulty_after` times is faulty.
    pub fn progress(&self, elapsed: Duration, faulty_after: u64) -> Progress {
        let elapsed = elapsed.as_secs_f64();
        Progress {
            steps_per_second: if elapsed > 0.0 {
                self.steps_timed as f64 / elapsed
            } else {
                0.0
            },
            mean_step_ms: mean_ms(self.step_time_total, self.steps_timed),
            skipped_last_step: self.skipped_last_step.clone(),
            stragglers_skipped: self.stragglers_skipped,
            late_gradients_dropped: self.late_dropped,
            gradients_received: self.received,
            workers: self
                .workers
                .iter()
                .map(|(&worker, w)| WorkerStats {
                    worker,
                    mean_latency_ms: mean_ms(w.latency_total, w.accepted),
                    gradients_accepted: w.accepted,
                    steps_skipped: w.skipped,
                    joins: w.joins,
                    disagreements: w.disagreements,
                    outvoted: w.outvoted,
                    faulty: is_faulty(w.outvoted, faulty_after),
                })
                .collect(),
            redundant_gradients_dropped: self.redundant_dropped,
            replica_disagreements: self.replica_disagreements,
            ..Progress::default()
        }
    }
}

/// Outvoted at least `faulty_after` times; a worker never outvoted is never faulty (so 0
/// behaves as 1).
pub(super) fn is_faulty(outvoted: u64, faulty_after: u64) -> bool {
    outvoted >= faulty_after.max(1)
}

/// `total` over `count` in milliseconds; 0 when nothing was counted.
fn mean_ms(total: Duration, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total.as_secs_f64() * 1e3 / count as f64
    }
}
