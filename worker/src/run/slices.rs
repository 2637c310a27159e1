//! A step's parameters arrive in slices for a large model (server/src/chunks.rs).

use std::collections::BTreeSet;

use anyk_proto::v1::StepReady;

use super::Step;

/// Puts together a step's parameters sent in slices (server/src/chunks.rs).
#[derive(Default)]
pub(super) struct Slices {
    /// The step, its parameters so far, its late blocks.
    partial: Option<(u64, Vec<u8>, BTreeSet<u32>)>,
}

impl Slices {
    /// Takes one step event; the step once its parameters are whole.
    pub(super) fn add(&mut self, s: StepReady) -> Option<Step> {
        let data = s.params.map(|t| t.data).unwrap_or_default();
        if s.params_total == 0 {
            self.partial = None;
            return Some(Step {
                number: s.step,
                params: data,
                late: s.late_blocks.into_iter().collect(),
            });
        }
        if s.params_offset == 0 {
            let capacity = usize::try_from(s.params_total).unwrap_or(0);
            let late = s.late_blocks.into_iter().collect();
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
            params_offset: offset,
            params_total: total,
        }
    }

    #[test]
    fn slices_in_order_make_the_step_and_a_gap_drops_it() {
        let mut slices = Slices::default();
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
