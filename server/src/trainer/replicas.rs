//! Replica agreement as the trainer applies it (docs/design.md, invariant 7): every copy's digest
//! is compared with the other holders', disagreements are counted and logged, and in strict mode
//! a copy waits for a matching one before it is offered.

use anyk_core::part::Part;
use anyk_proto::v1::GradientRequest;

use super::Trainer;
use super::agreement::{Digest, Verdict};

impl Trainer {
    /// Records a copy's digest and counts and logs what it shows (docs/design.md, invariant 7);
    /// `None` when the copy is not compared (too old, or its sender's second copy).
    pub(super) fn compare(&mut self, req: &GradientRequest, digest: Digest) -> Option<Verdict> {
        let verdict = self
            .agreement
            .record(self.step(), req.step, &req.blocks, req.worker, digest)?;
        if !verdict.disagreeing.is_empty() {
            tracing::warn!(
                step = req.step,
                blocks = ?req.blocks,
                worker = req.worker,
                agreeing = ?verdict.agreeing,
                differing = ?verdict.differing,
                "replica disagreement: holders sent different gradients for the same blocks and step"
            );
            self.counters.disagreed(&verdict.disagreeing);
        }
        for &worker in &verdict.outvoted {
            let times = self.counters.outvoted(worker);
            if times == self.settings.faulty_after.max(1) {
                tracing::warn!(
                    worker,
                    outvoted = times,
                    "worker is faulty: outvoted by agreeing holders"
                );
            }
        }
        Some(verdict)
    }

    /// Strict mode: the gradient to offer (its blocks are already accepted, or another holder
    /// sent the same bits), or `None` while it waits for a matching copy, held meanwhile.
    pub(super) fn confirm(
        &mut self,
        req: &GradientRequest,
        gradient: Part,
        digest: Digest,
        verdict: Option<&Verdict>,
    ) -> Option<Part> {
        let covered = self.covered();
        if req.blocks.iter().all(|b| covered.contains(b)) {
            return Some(gradient);
        }
        // A second copy from the same sender confirms nothing.
        let verdict = verdict?;
        if verdict.agreeing.len() >= 2 && self.agreement.confirms(req.step, &req.blocks, digest, &gradient) {
            return Some(gradient);
        }
        let holders = self.layout.as_ref().map_or(0, |l| {
            l.members
                .iter()
                .filter(|&&w| req.blocks.iter().all(|&b| l.holds(w, b)))
                .count()
        });
        if verdict.senders >= holders && verdict.majority < 2 {
            tracing::warn!(
                step = req.step,
                blocks = ?req.blocks,
                senders = verdict.senders,
                "every holder sent a copy and no two agree: the blocks stay unaccepted until a holder is replaced"
            );
        }
        self.agreement.hold(req.step, &req.blocks, digest, gradient);
        None
    }
}
