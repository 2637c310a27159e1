//! The trainer's progress report.

use std::sync::Arc;

use anyk_proto::v1::Progress;

use super::Trainer;
use super::model::Params;

impl Trainer {
    /// Progress without hashing the parameters under the caller's lock: `param_sha256` is
    /// filled only when already known, and the parameters come along for the caller to hash
    /// after it let go of the lock ([`Params::digest`]).
    pub fn progress_unhashed(&self) -> (Progress, Option<Arc<Params>>) {
        let params = self.model.as_ref().map(|m| m.params.clone());
        let mut progress = self.progress_with(|_| String::new());
        if let Some(known) = params.as_ref().and_then(|p| p.known_digest()) {
            progress.param_sha256 = known.to_string();
        }
        (progress, params)
    }

    pub fn progress(&self) -> Progress {
        self.progress_with(|params| params.digest().to_string())
    }

    fn progress_with(&self, digest: impl Fn(&Params) -> String) -> Progress {
        let model = self.model.as_ref();
        Progress {
            step: self.step(),
            total_steps: self.settings.total_steps,
            loss: model.map_or(f32::NAN, |m| m.loss),
            epoch: self.layout.as_ref().map_or(0, |l| l.epoch),
            finished: self.is_finished(),
            param_sha256: model.map(|m| digest(&m.params)).unwrap_or_default(),
            strict: self.settings.strict,
            failed_reason: self
                .failure
                .as_ref()
                .map(|f| f.reason.to_string())
                .unwrap_or_default(),
            failed_step: self.failure.as_ref().map_or(0, |f| f.step),
            ..self
                .counters
                .progress(self.started.elapsed(), self.settings.faulty_after)
        }
    }
}
