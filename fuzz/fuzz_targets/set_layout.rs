//! Arbitrary `SetLayoutRequest` bytes, handled as the Control service does (`layout_from_wire`,
//! then `Trainer::set_layout`), on a fresh trainer and on one training under a planned layout.
//! A layout it accepts must be usable: one gradient per block from its holders (or per unit,
//! pre-summed) completes a step; the same layout again is accepted; the epoch never goes back.
#![no_main]

use anyk_fuzz::{Checked, settings, values};
use anyk_proto::v1::{InitializeRequest, SetLayoutRequest, Tensor};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn initialize(t: &mut Checked) {
    let req = InitializeRequest {
        worker: 0,
        params: Some(Tensor::from_f32(&values(3, 7))),
    };
    t.initialize(&req);
}

fuzz_target!(
    init: anyk_fuzz::write_seeds(|| {
        anyk_fuzz::seed_layouts()
            .iter()
            .map(|l| SetLayoutRequest { layout: Some(anyk_proto::layout_to_wire(l)) }.encode_to_vec())
            .collect()
    }),
    |data: &[u8]| {
    let Ok(req) = SetLayoutRequest::decode(data) else {
        return;
    };
    let blocks = req
        .layout
        .as_ref()
        .map(|l| l.blocks)
        .filter(|b| (1..=256).contains(b))
        .unwrap_or(6);

    let mut fresh = Checked::new(settings(blocks, 5, false));
    if fresh.set_layout(&req) {
        assert!(fresh.set_layout(&req), "the same layout again was refused");
        initialize(&mut fresh);
        fresh.complete_step(false);
        fresh.complete_step(true);
    }

    let mut training = Checked::new(settings(blocks, 5, false));
    let planned = anyk_core::plan(blocks, 2, 4, 3).expect("a valid plan");
    let wire = SetLayoutRequest {
        layout: Some(anyk_proto::layout_to_wire(&planned)),
    };
    assert!(training.set_layout(&wire));
    initialize(&mut training);
    training.complete_step(true);
    if training.set_layout(&req) {
        training.complete_step(false);
        training.complete_step(true);
    }
}
);
