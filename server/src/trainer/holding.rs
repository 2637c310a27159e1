//! What the step being collected holds, told to the admission (crate::admission) so that it
//! reads pushes in an order that lets parts of the reduction tree meet.

use anyk_core::aggregate::StepAggregator;

use super::Trainer;
use crate::admission::Holding;

impl Trainer {
    pub fn holding(&self) -> Holding {
        let model = self.model.as_ref();
        let aggregator = model.and_then(|m| m.round.as_ref()).map(|r| &r.aggregator);
        Holding {
            step: self.step(),
            tree: aggregator.map(|a| a.tree().clone()),
            present: aggregator.map(StepAggregator::present).unwrap_or_default(),
        }
    }
}
