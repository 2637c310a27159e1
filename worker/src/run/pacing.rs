//! When a worker starts backups of blocks that were not late last step (sans-IO).
//!
//! Such a backup is wasted work when the step would have been aggregated without it, and on a
//! machine whose cores the workers share it also slows the primaries it races. So a worker waits
//! until the step is clearly overdue: longer than `PERIOD_SLACK` times the shortest step period it
//! observed over the last `WINDOW` steps (from one step's start to the next), and never less than
//! `SHARE_PATIENCE` times its own share's time beyond that share (the only yardstick before a
//! period has been seen). The shortest, not an average: steps that waited for a straggler must not
//! teach the worker to wait longer (an average did, at 0.3M parameters: the straggler then made
//! every step in time, was never seen as late, and every step took its time). Measured at
//! 8.5M parameters on 2 cores: waiting half the share time alone started backups in nearly every
//! straggler-free step (25 gradients per step instead of 8, 15 dropped as late). Persistent
//! stragglers are not waited for at all: their blocks come as `late_blocks`, each with the one
//! holder that computes it at once (server/src/trainer/late.rs).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much longer than the shortest recent step period a step must run before backups start.
pub(super) const PERIOD_SLACK: f64 = 1.25;
/// How many recent step periods are remembered.
pub(super) const WINDOW: usize = 16;
/// Before any period is known: wait this fraction of the share's own time after the share.
pub(super) const SHARE_PATIENCE: f64 = 0.5;

/// The step periods a worker has seen.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    last_start: Option<(u64, Instant)>,
    periods: VecDeque<Duration>,
}

impl Pacing {
    /// Step `step` starts at `now` (its parameters are in the model). A period is only measured
    /// between consecutive steps: a gap (a missed step, a rejoin) says nothing about the pace.
    pub(super) fn started(&mut self, step: u64, now: Instant) {
        if let Some((last, at)) = self.last_start
            && step == last + 1
        {
            if self.periods.len() == WINDOW {
                self.periods.pop_front();
            }
            self.periods.push_back(now.saturating_duration_since(at));
        }
        self.last_start = Some((step, now));
    }

    /// How long after the step's start to begin backups that are not urgent, given that the
    /// worker's own share took `share`.
    pub(super) fn backup_deadline(&self, share: Duration) -> Duration {
        let own = share.mul_f64(1.0 + SHARE_PATIENCE);
        let shortest = self.periods.iter().min();
        shortest.map_or(own, |p| own.max(p.mul_f64(PERIOD_SLACK)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn without_a_period_the_share_sets_the_deadline() {
        let mut pacing = Pacing::default();
        assert_eq!(pacing.backup_deadline(ms(400)), ms(600));
        // One start is no period yet.
        pacing.started(7, Instant::now());
        assert_eq!(pacing.backup_deadline(ms(400)), ms(600));
    }

    #[test]
    fn consecutive_steps_set_a_period_that_backups_wait_beyond() {
        let t0 = Instant::now();
        let mut pacing = Pacing::default();
        pacing.started(1, t0);
        pacing.started(2, t0 + ms(1000));
        // Share 400 ms: 1.5 x 400 = 600 < 1.25 x 1000.
        assert_eq!(pacing.backup_deadline(ms(400)), ms(1250));
        // A share far longer than the period (this worker is the slow one) still waits on it.
        assert_eq!(pacing.backup_deadline(ms(1000)), ms(1500));
        // A slow step (one that waited for a straggler) does not move it.
        pacing.started(3, t0 + ms(4000));
        assert_eq!(pacing.backup_deadline(ms(400)), ms(1250));
        // Steps that are all slower, for a whole window, do.
        for step in 4..4 + WINDOW as u64 {
            pacing.started(step, t0 + ms(4000 + 2000 * (step - 3)));
        }
        assert_eq!(pacing.backup_deadline(ms(400)), ms(2500));
    }

    #[test]
    fn a_gap_between_steps_is_not_a_period() {
        let t0 = Instant::now();
        let mut pacing = Pacing::default();
        pacing.started(1, t0);
        pacing.started(5, t0 + ms(60_000));
        assert_eq!(pacing.backup_deadline(ms(400)), ms(600));
        pacing.started(6, t0 + ms(61_000));
        assert_eq!(pacing.backup_deadline(ms(400)), ms(1250));
    }
}
