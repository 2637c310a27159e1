//! Input the state machine must refuse before it costs anything or leaves the job stuck: an
//! empty model, layouts past the CRD's bounds, epochs that jump, subscribers with unknown ids.

use std::time::Instant;

use anyk_core::Layout;
use anyk_core::checkpoint::Checkpoint;

use super::{BLOCKS, PARAMS, fractional, ready, settings, tensor};
use crate::error::{LayoutError, RequestError};
use crate::trainer::{MAX_BLOCK_COPIES, MAX_EPOCH_JUMP, MAX_FIRST_EPOCH, MAX_WORKERS, Trainer};

#[test]
fn an_empty_model_is_refused_and_the_job_still_takes_a_real_one() {
    let mut t = Trainer::new(settings());
    t.set_layout(fractional()).unwrap();
    let now = Instant::now();
    let empty = t.initialize(0, Some(&tensor(&[])), now);
    assert!(matches!(empty, Err(RequestError::EmptyModel)), "{empty:?}");
    assert_eq!(t.join(0).unwrap(), 0, "still waiting for initial parameters");
    assert!(t.checkpoint().is_none(), "nothing to checkpoint");
    assert!(
        t.initialize(1, Some(&tensor(&[1.0; PARAMS])), now)
            .unwrap()
            .is_some()
    );
    assert_eq!(t.join(0).unwrap(), PARAMS as u64);
}

#[test]
fn an_empty_checkpoint_resumes_only_its_layout() {
    let mut t = ready(&fractional());
    let mut ckpt: Checkpoint = t.checkpoint().unwrap();
    ckpt.params.clear();
    t = Trainer::resume(settings(), ckpt, Instant::now());
    assert_eq!(t.progress().epoch, 1, "the layout is resumed");
    assert_eq!(
        t.join(0).unwrap(),
        0,
        "the workers are asked for parameters again"
    );
    assert!(t.checkpoint().is_none());
}

/// A layout claiming `workers` workers, with every block on worker 0.
fn wide(workers: u32) -> Layout {
    Layout {
        workers,
        members: [0].into(),
        holders: vec![vec![0]; BLOCKS as usize],
        ..fractional()
    }
}

#[test]
fn layouts_past_the_crd_bounds_are_refused_before_any_assignment() {
    let mut t = Trainer::new(settings());
    let started = Instant::now();
    let refused = t.set_layout(wide(20_000_000));
    assert!(
        matches!(
            refused,
            Err(RequestError::InvalidLayout(LayoutError::TooManyWorkers {
                workers: 20_000_000,
                max: MAX_WORKERS
            }))
        ),
        "{refused:?}"
    );
    assert!(
        started.elapsed().as_millis() < 100,
        "refused only after allocating"
    );
    let copies = Layout {
        holders: vec![(0..4).collect(); BLOCKS as usize],
        ..fractional()
    };
    let many = Layout {
        holders: vec![vec![0; MAX_BLOCK_COPIES as usize]; BLOCKS as usize],
        ..copies.clone()
    };
    let refused = t.set_layout(many);
    assert!(
        matches!(
            refused,
            Err(RequestError::InvalidLayout(LayoutError::TooManyCopies { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(t.progress().epoch, 0, "nothing was installed");
    t.set_layout(fractional()).unwrap();
}

#[test]
fn an_epoch_may_not_jump_and_the_top_epoch_cannot_lock_the_operator_out() {
    let mut t = Trainer::new(settings());
    let forged = Layout {
        epoch: u64::MAX,
        ..fractional()
    };
    let refused = t.set_layout(forged.clone());
    assert!(
        matches!(
            refused,
            Err(RequestError::EpochJump {
                got: u64::MAX,
                current: 0,
                max: MAX_FIRST_EPOCH
            })
        ),
        "{refused:?}"
    );
    // A replaced server without a checkpoint takes the operator's layout at any epoch it keeps.
    let first = Layout {
        epoch: MAX_FIRST_EPOCH,
        ..fractional()
    };
    Trainer::new(settings()).set_layout(first).unwrap();
    t.set_layout(fractional()).unwrap();
    let far = Layout {
        epoch: 1 + MAX_EPOCH_JUMP + 1,
        ..fractional()
    };
    assert!(matches!(
        t.set_layout(far),
        Err(RequestError::EpochJump { current: 1, .. })
    ));
    assert!(matches!(
        t.set_layout(forged),
        Err(RequestError::EpochJump { .. })
    ));
    let furthest = Layout {
        epoch: 1 + MAX_EPOCH_JUMP,
        ..fractional()
    };
    t.set_layout(furthest).unwrap();
    assert_eq!(t.progress().epoch, 1 + MAX_EPOCH_JUMP);
}

#[test]
fn only_the_layouts_worker_ids_subscribe() {
    let mut t = Trainer::new(settings());
    assert!(matches!(t.snapshot(0), Err(RequestError::NoLayout)));
    t.set_layout(fractional()).unwrap();
    assert!(matches!(
        t.snapshot(4),
        Err(RequestError::UnknownWorker {
            worker: 4,
            workers: 4
        })
    ));
    let (assignment, event) = t.snapshot(3).unwrap();
    assert_eq!(assignment.epoch, 1);
    assert!(event.is_none(), "no parameters yet");
}

#[test]
fn progress_leaves_hashing_to_the_caller_and_each_step_is_hashed_once() {
    let layout = fractional();
    let mut t = ready(&layout);
    super::complete_step(&mut t, &layout);
    let (unhashed, params) = t.progress_unhashed();
    assert_eq!(unhashed.param_sha256, "", "not hashed under the caller's lock");
    let params = params.unwrap();
    assert_eq!(params.known_digest(), None);
    let digest = params.digest().to_string();
    assert_eq!(t.progress().param_sha256, digest);
    let (known, _) = t.progress_unhashed();
    assert_eq!(known.param_sha256, digest, "known once computed");
    super::complete_step(&mut t, &layout);
    assert_eq!(
        t.progress_unhashed().0.param_sha256,
        "",
        "a new step, new parameters"
    );
}
