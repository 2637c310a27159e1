//! The job's history as the server records it: a point per completed step and an entry per new
//! layout epoch, carried in every checkpoint and continued by a resumed server.

use std::time::{Duration, Instant};

use anyk_core::Layout;
use anyk_core::history::{History, StepRecord, layout_margin};

use super::Trainer;
use super::model::Round;

pub(super) struct Recorder {
    history: History,
    /// Milliseconds the job trained before this server took over (from its checkpoint): the
    /// history's clock goes on across resumes.
    base_ms: u64,
    /// The current layout's margin, by epoch: computed once per layout, not once per step.
    margin: Option<(u64, i64)>,
}

impl Recorder {
    pub fn new(history: History) -> Self {
        Self {
            base_ms: history.elapsed_ms(),
            history,
            margin: None,
        }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    fn elapsed_ms(&self, elapsed: Duration) -> u64 {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(ms)
    }

    fn margin(&mut self, layout: Option<&Layout>) -> i64 {
        let Some(layout) = layout else { return -1 };
        match self.margin {
            Some((epoch, margin)) if epoch == layout.epoch => margin,
            _ => {
                let margin = layout_margin(layout);
                self.margin = Some((layout.epoch, margin));
                margin
            }
        }
    }
}

impl Trainer {
    /// Records the step that `round` completed (now the trainer's last step) and whom it skipped.
    pub(super) fn record_step(&mut self, round: &Round, now: Instant) {
        let Some(model) = self.model.as_ref() else {
            return;
        };
        let elapsed = now.saturating_duration_since(self.started);
        let recorder = &mut self.history;
        let record = StepRecord {
            step: model.step,
            loss: model.loss,
            step_ms: round
                .timed
                .then(|| (now.saturating_duration_since(round.released).as_secs_f64() * 1e3) as f32),
            skipped: self.counters.skipped_last_step().len() as u64,
            margin: recorder.margin(self.layout.as_ref()),
            elapsed_ms: recorder.elapsed_ms(elapsed),
        };
        recorder.history.record_step(record);
    }

    /// Records `new` replacing the current layout (nothing for the same epoch again).
    pub(super) fn record_layout(&mut self, new: &Layout) {
        let elapsed = Instant::now().saturating_duration_since(self.started);
        let recorder = &mut self.history;
        let elapsed_ms = recorder.elapsed_ms(elapsed);
        let step = self.model.as_ref().map_or(0, |m| m.step);
        recorder
            .history
            .record_change(self.layout.as_ref(), new, step, elapsed_ms);
    }

    /// The history so far (what the next checkpoint carries).
    pub fn history(&self) -> &History {
        self.history.history()
    }
}
