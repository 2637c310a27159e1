//! The end of a job, checkpoints, and resuming from one.

use std::time::Instant;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::digest::param_sha256;
use anyk_proto::v1::worker_event::Event;

use super::{BLOCKS, PARAMS, complete_step, fractional, push, ready, ready_with, settings, step_params};
use crate::settings::Settings;
use crate::trainer::Trainer;

#[test]
fn a_resumed_trainer_continues_bit_identically() {
    let layout = fractional();
    let mut original = ready(&layout);
    complete_step(&mut original, &layout);
    complete_step(&mut original, &layout);
    let ckpt = original.checkpoint().unwrap();
    assert_eq!((ckpt.step, ckpt.layout.as_ref()), (2, Some(&layout)));
    let job = ckpt.job.as_ref().unwrap();
    assert_eq!(
        (&job.config, &job.units, job.params),
        (&settings().job_config(), &layout.units, PARAMS as u64)
    );
    // Through the file format, as a restarted server reads it.
    let ckpt = Checkpoint::decode(&ckpt.encode()).unwrap();

    let mut resumed = Trainer::resume(settings(), ckpt, Instant::now());
    let (before, after) = (original.progress(), resumed.progress());
    assert_eq!(
        (after.step, after.epoch, after.loss),
        (2, layout.epoch, before.loss)
    );
    assert_eq!(after.param_sha256, before.param_sha256);
    assert_eq!(
        resumed.join(1).unwrap(),
        PARAMS as u64,
        "no initialization needed"
    );
    assert_eq!(resumed.current_event(), original.current_event());
    let ignored = resumed.initialize(0, Some(&super::tensor(&[9.0; PARAMS])), Instant::now());
    assert!(
        ignored.unwrap().is_none(),
        "resumed parameters must not be replaced"
    );

    let next = complete_step(&mut resumed, &layout);
    assert_eq!(next, complete_step(&mut original, &layout));
    assert_eq!(step_params(&next).0, 3);
}

fn with_steps(total_steps: u64, checkpoint_every: u64) -> Settings {
    Settings {
        total_steps,
        checkpoint_every,
        ..settings()
    }
}

#[test]
fn the_job_finishes_after_its_last_step() {
    let layout = fractional();
    let mut t = ready_with(with_steps(2, 0), &layout);
    complete_step(&mut t, &layout);
    assert!(!t.is_finished());
    let end = complete_step(&mut t, &layout);
    let Some(Event::Finished(finished)) = &end.event else {
        panic!("expected the end, got {end:?}")
    };
    let params = t.checkpoint().unwrap().params;
    assert_eq!(finished.step, 2);
    assert_eq!(finished.param_sha256, param_sha256(&params));
    assert!(t.is_finished() && t.progress().finished);
    assert_eq!(t.current_event().as_ref(), Some(&end));
    // Gradients after the end change nothing: they are late.
    let late = push(&mut t, layout.holders[0][0], 2, 0).unwrap();
    assert!(!late.response.accepted && late.response.step_done);
    assert_eq!((t.step(), t.progress().late_gradients_dropped), (2, 1));
    assert!(t.checkpoint_due(), "the final step is always checkpointed");
}

#[test]
fn a_job_resumed_after_its_last_step_is_finished() {
    let layout = fractional();
    let mut t = ready_with(with_steps(1, 0), &layout);
    complete_step(&mut t, &layout);
    let resumed = Trainer::resume(with_steps(1, 0), t.checkpoint().unwrap(), Instant::now());
    assert!(resumed.is_finished());
    assert_eq!(resumed.current_event(), t.current_event());
}

#[test]
fn checkpoints_are_due_every_interval() {
    let layout = fractional();
    let mut t = ready_with(with_steps(100, 2), &layout);
    let mut due = Vec::new();
    for _ in 0..4 {
        complete_step(&mut t, &layout);
        due.push(t.checkpoint_due());
    }
    assert_eq!(due, vec![false, true, false, true]);
    let mut never = ready_with(with_steps(100, 0), &layout);
    complete_step(&mut never, &layout);
    assert!(!never.checkpoint_due());
    assert_eq!(never.progress().gradients_received, BLOCKS as u64);
}
