//! Arbitrary `InitializeRequest` bytes, handled as the Training service does
//! (`Trainer::initialize(req.worker, req.params)`), before and after a layout; parameters it takes
//! must checkpoint, and one gradient per block of their size must complete a step.
#![no_main]

use anyk_core::checkpoint::Checkpoint;
use anyk_fuzz::{Checked, settings};
use anyk_proto::v1::{InitializeRequest, SetLayoutRequest, Tensor};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(
    init: anyk_fuzz::write_seeds(|| {
        [(0, 3), (3, 5), (1, 1), (2, 0)]
            .into_iter()
            .map(|(worker, len)| InitializeRequest {
                worker,
                params: Some(Tensor::from_f32(&anyk_fuzz::values(len, worker))),
            }
            .encode_to_vec())
            .collect()
    }),
    |data: &[u8]| {
    let Ok(req) = InitializeRequest::decode(data) else {
        return;
    };
    let mut t = Checked::new(settings(6, 3, false));
    t.initialize(&req);
    assert!(t.trainer.current_event().is_none(), "initialized without a layout");
    let layout = anyk_core::plan(6, 2, 4, 3).expect("a valid plan");
    let wire = SetLayoutRequest {
        layout: Some(anyk_proto::layout_to_wire(&layout)),
    };
    assert!(t.set_layout(&wire));
    t.initialize(&req);
    if t.trainer.current_event().is_none() {
        return;
    }
    let ckpt = t.trainer.checkpoint().expect("parameters exist");
    let bytes = ckpt.encode();
    let decoded = Checkpoint::decode(&bytes).expect("a checkpoint decodes");
    assert_eq!(decoded.encode(), bytes);
    t.complete_step(false);
    t.initialize(&req);
    assert_eq!(t.trainer.step(), 1, "a later initialization changed the step");
}
);
