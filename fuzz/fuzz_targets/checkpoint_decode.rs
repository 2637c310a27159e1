//! Checkpoint files: arbitrary bytes (first byte even), or arbitrary contents sealed with the
//! magic and a valid checksum (first byte odd) so the fuzzer gets past the SHA-256 into the header
//! and arrays. What decodes must re-encode to a file that decodes to the same bytes, and must
//! resume a trainer as the server does.
#![no_main]

use std::time::Instant;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::optimizer::OptimizerConfig;
use anyk_fuzz::{Checked, settings};
use anyk_proto::v1::{InitializeRequest, SetLayoutRequest, Tensor};
use anyk_server::Trainer;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// Checkpoints as the server writes them, whole (first byte 0) and as sealed contents (1).
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (layout, adam) in anyk_fuzz::seed_layouts()
        .into_iter()
        .zip([false, true].into_iter().cycle())
        .take(4)
    {
        let mut settings = settings(layout.blocks, 100, false);
        if adam {
            settings.optimizer = OptimizerConfig::adam(0.01);
        }
        let mut t = Checked::new(settings);
        t.set_layout(&SetLayoutRequest {
            layout: Some(anyk_proto::layout_to_wire(&layout)),
        });
        t.initialize(&InitializeRequest {
            worker: 0,
            params: Some(Tensor::from_f32(&anyk_fuzz::values(3, 1))),
        });
        t.complete_step(false);
        let bytes = t.trainer.checkpoint().expect("parameters exist").encode();
        seeds.push([&[0], &bytes[..]].concat());
        seeds.push([&[1], &bytes[10..bytes.len() - 32]].concat());
    }
    seeds
}

fuzz_target!(init: anyk_fuzz::write_seeds(seeds), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut body = b"ANYKCKPT1\n".to_vec();
        body.extend_from_slice(rest);
        let sum = Sha256::digest(&body);
        body.extend(sum);
        body
    };
    let Ok(ckpt) = Checkpoint::decode(&bytes) else {
        return;
    };
    let encoded = ckpt.encode();
    let again = Checkpoint::decode(&encoded).expect("an encoded checkpoint decodes");
    assert_eq!(again.encode(), encoded, "encode and decode disagree");
    let blocks = ckpt.layout.as_ref().map_or(6, |l| l.blocks);
    let trainer = Trainer::resume(settings(blocks, 100, false), ckpt, Instant::now());
    let _ = trainer.progress();
    let _ = trainer.current_event();
    // A checkpoint without parameters resumes only its layout (and asks for initial ones).
    match trainer.checkpoint() {
        Some(resaved) => assert_eq!(resaved.step, again.step),
        None => assert!(again.params.is_empty(), "parameters lost on resume"),
    }
});
