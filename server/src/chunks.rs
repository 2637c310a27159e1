//! Parameters go to workers in slices: every subscriber's stream encodes what it sends into a
//! buffer of its own, so a whole model per event would put one encoded copy of the model per
//! worker in the server's memory at every step boundary (8 at n = 8). Slices of the one shared
//! parameter buffer (`Bytes::slice`, no copy) bound that to a slice per worker.

use anyk_proto::v1::{StepReady, Tensor, WorkerEvent, worker_event::Event};

/// Largest slice of parameters per event: 33 events per step at 34M parameters, so a worker may
/// fall a few steps behind before its queue ([`crate::service`]) is full. Each stream's encoder
/// copies an event into a buffer of its own while it waits for HTTP/2 flow control: at 8 MiB
/// that held about one model size (34M parameters, 8 workers) at the server's peak.
pub const CHUNK_BYTES: usize = 4 << 20;

/// `event` as the events that deliver it: a step whose parameters are larger than `chunk`
/// bytes becomes one event per slice (`params_offset`, `params_total` in bytes; the late blocks
/// ride with the first); anything else is itself.
pub fn split(event: &WorkerEvent, chunk: usize) -> Vec<WorkerEvent> {
    let Some(Event::Step(step)) = &event.event else {
        return vec![event.clone()];
    };
    let Some(params) = step
        .params
        .as_ref()
        .filter(|p| p.data.len() > chunk && chunk >= 4)
    else {
        return vec![event.clone()];
    };
    let total = params.data.len();
    // Whole f32 values per slice.
    let chunk = chunk / 4 * 4;
    (0..total)
        .step_by(chunk)
        .map(|offset| {
            let end = (offset + chunk).min(total);
            let data = params.data.slice(offset..end);
            let step = StepReady {
                step: step.step,
                params: Some(Tensor {
                    dtype: params.dtype,
                    ..Tensor::from_f32_bytes(data)
                }),
                late_blocks: if offset == 0 {
                    step.late_blocks.clone()
                } else {
                    Vec::new()
                },
                late_backups: if offset == 0 {
                    step.late_backups.clone()
                } else {
                    Vec::new()
                },
                params_offset: offset as u64,
                params_total: total as u64,
            };
            WorkerEvent {
                event: Some(Event::Step(step)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(values: &[f32]) -> WorkerEvent {
        WorkerEvent {
            event: Some(Event::Step(StepReady {
                step: 7,
                params: Some(Tensor::from_f32(values)),
                late_blocks: vec![3, 4],
                late_backups: vec![1, 2],
                params_offset: 0,
                params_total: 0,
            })),
        }
    }

    fn parts(events: &[WorkerEvent]) -> Vec<(u64, u64, usize, Vec<u32>)> {
        events
            .iter()
            .map(|e| match &e.event {
                Some(Event::Step(s)) => (
                    s.params_offset,
                    s.params_total,
                    s.params.as_ref().map_or(0, |p| p.data.len()),
                    [s.late_blocks.clone(), s.late_backups.clone()].concat(),
                ),
                _ => panic!("not a step"),
            })
            .collect()
    }

    #[test]
    fn a_large_step_goes_in_whole_value_slices_that_rebuild_it() {
        let values: Vec<f32> = (0..10).map(|i| i as f32 * 0.5).collect();
        let events = split(&step(&values), 15);
        assert_eq!(
            parts(&events),
            vec![
                (0, 40, 12, vec![3, 4, 1, 2]),
                (12, 40, 12, vec![]),
                (24, 40, 12, vec![]),
                (36, 40, 4, vec![])
            ]
        );
        let rebuilt: Vec<u8> = events
            .iter()
            .flat_map(|e| match &e.event {
                Some(Event::Step(s)) => s.params.as_ref().unwrap().data.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(rebuilt, anyk_core::tensor_bytes::to_bytes(&values));
    }

    #[test]
    fn small_steps_and_other_events_go_whole() {
        let small = step(&[1.0, 2.0]);
        assert_eq!(split(&small, 8), vec![small.clone()]);
        let other = WorkerEvent { event: None };
        assert_eq!(split(&other, 4), vec![other.clone()]);
    }
}
