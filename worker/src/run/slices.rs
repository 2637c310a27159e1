//! A step's parameters arrive in slices for a large model (server/src/chunks.rs).

use std::collections::BTreeSet;

use anyk_proto::v1::StepReady;

use super::Step;

/// Puts together a step's parameters sent in slices (server/src/chunks.rs).
pub(super) struct Slices {
    /// This worker: which late blocks are its own to cover at once.
    worker: u32,
    /// The step, its parameters so far, the late blocks this worker covers at once.
    partial: Option<(u64, Vec<u8>, BTreeSet<u32>)>,
}

impl Slices {
    pub(super) fn new(worker: u32) -> Self {
        Self {
            worker,
            partial: None,
        }
    }

    /// Takes one step event; the step once its parameters are whole.
    pub(super) fn add(&mut self, mut s: StepReady) -> Option<Step> {
        let data = s.params.take().map(|t| t.data).unwrap_or_default();
        if s.params_total == 0 {
            self.partial = None;
            return Some(Step {
                number: s.step,
                params: data,
                late: urgent(&s, self.worker),
            });
        }
        if s.params_offset == 0 {
            let capacity = usize::try_from(s.params_total).unwrap_or(0);
            let late = urgent(&s, self.worker);
            self.partial = Some((s.step, Vec::with_capacity(capacity), late));
        }
        // A slice that does not continue the step in hand (one was missed: the stream would
        // have been closed and the step comes again whole after subscribing) is dropped.
        let (step, bytes, _) = self.partial.as_mut()?;
        if *step != s.step || bytes.len() as u64 != s.params_offset {
            self.partial = None;
            return None;
        }
        bytes.extend_from_slice(&data);
        if (bytes.len() as u64) < s.params_total {
            return None;
        }
        let (number, bytes, late) = self.partial.take()?;
        Some(Step {
            number,
            params: bytes.into(),
            late,
        })
    }
}

/// The late blocks `worker` computes right after its share: those it is the designated backup
/// of, or, from a server that designates none, all of them.
fn urgent(s: &StepReady, worker: u32) -> BTreeSet<u32> {
    if s.late_backups.len() != s.late_blocks.len() {
        return s.late_blocks.iter().copied().collect();
    }
    let mine = s.late_backups.iter().map(|&w| w == worker);
    s.late_blocks
        .iter()
        .zip(mine)
        .filter(|(_, m)| *m)
        .map(|(&b, _)| b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyk_proto::v1::Tensor;

    fn slice(step: u64, bytes: &[u8], offset: u64, total: u64) -> StepReady {
        StepReady {
            step,
            params: Some(Tensor {
                dtype: 1,
                length: (bytes.len() / 4) as u64,
                data: bytes.to_vec().into(),
            }),
            late_blocks: if offset == 0 { vec![2] } else { Vec::new() },
            late_backups: Vec::new(),
            params_offset: offset,
            params_total: total,
        }
    }

    #[test]
    fn slices_in_order_make_the_step_and_a_gap_drops_it() {
        let mut slices = Slices::new(0);
        assert!(slices.add(slice(3, &[1, 2, 3, 4], 0, 12)).is_none());
        assert!(slices.add(slice(3, &[5, 6, 7, 8], 4, 12)).is_none());
        let step = slices.add(slice(3, &[9, 10, 11, 12], 8, 12)).unwrap();
        assert_eq!(
            (step.number, step.params.to_vec()),
            (3, (1..=12).collect::<Vec<u8>>())
        );
        assert_eq!(step.late, BTreeSet::from([2]));
        // A missing middle slice: nothing, until the step comes again from its start.
        assert!(slices.add(slice(4, &[0; 4], 0, 12)).is_none());
        assert!(slices.add(slice(4, &[0; 4], 8, 12)).is_none());
        assert!(slices.add(slice(4, &[0; 4], 4, 12)).is_none());
        // A whole step (no slices) is a step at once.
        assert_eq!(slices.add(slice(5, &[1; 8], 0, 0)).map(|s| s.number), Some(5));
    }
}
