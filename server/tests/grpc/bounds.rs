//! Input that once stalled or wedged the server, over the wire: each gets a precise refusal and
//! the job carries on.

use std::time::{Duration, Instant};

use anyk_core::Layout;
use anyk_proto::v1::{CheckpointRequest, InitializeRequest, ProgressRequest, SubscribeRequest};
use anyk_server::service::MAX_WATCHERS;
use tonic::Code;

use crate::{PARAMS, layout, one_step_in, ready, start, tensor};

#[tokio::test]
async fn an_empty_initialize_is_refused_and_a_real_one_still_wins() {
    let layout = layout();
    let mut s = start(None, 1 << 20).await;
    s.set_layout(&layout).await.unwrap();
    let empty = InitializeRequest {
        worker: 0,
        params: Some(tensor(&[])),
    };
    let status = s.training.initialize(empty).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("initial parameters are empty"),
        "{}",
        status.message()
    );
    let join = s.join(1).await;
    assert!(join.needs_init, "the job still asks for parameters");
    s.init(&[0.0; PARAMS]).await;
    s.complete_step(&layout).await;
    s.stop().await;
}

#[tokio::test]
async fn huge_layouts_and_epoch_jumps_are_refused_at_once() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let huge = Layout {
        workers: 20_000_000,
        epoch: 2,
        ..layout.clone()
    };
    let started = Instant::now();
    let status = s.set_layout(&huge).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("20000000 workers, at most 4096"),
        "{}",
        status.message()
    );
    let forged = Layout {
        epoch: u64::MAX,
        ..layout.clone()
    };
    let status = s.set_layout(&forged).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("jumps more than 1000000 above the current epoch 1"),
        "{}",
        status.message()
    );
    // The operator's next layout still goes in.
    let (next, _) = anyk_core::repair(&layout, &[3]).unwrap();
    s.set_layout(&next).await.unwrap();
    s.complete_step(&next).await;
    s.stop().await;
}

#[tokio::test]
async fn only_the_layouts_workers_subscribe() {
    let mut s = ready(&layout()).await;
    let status = s
        .training
        .subscribe(SubscribeRequest { worker: 99 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("unknown worker 99"),
        "{}",
        status.message()
    );
    s.stop().await;
}

#[tokio::test]
async fn progress_watchers_are_bounded_and_a_closed_one_frees_its_place() {
    let mut s = ready(&layout()).await;
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHERS {
        open.push(
            s.control
                .watch_progress(ProgressRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let status = s.control.watch_progress(ProgressRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("too many progress watchers"),
        "{}",
        status.message()
    );
    // GetProgress is not a stream and stays open to all.
    assert_eq!(s.step().await, 0);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.control.watch_progress(ProgressRequest {}).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("a closed watcher never freed its place: {status}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn concurrent_checkpoints_are_written_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout();
    let s = one_step_in(dir.path(), &layout, 1.0).await;
    let calls = (0..8).map(|_| {
        let mut control = s.control.clone();
        tokio::spawn(async move { control.checkpoint(CheckpointRequest {}).await })
    });
    let mut answers = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        answers.push(call.await.unwrap().unwrap().into_inner());
    }
    // Every caller waited for the one in flight and got it: one file for one state.
    assert!(
        answers.iter().all(|a| a.step == 1 && a.path == answers[0].path),
        "{answers:?}"
    );
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 1, "one state, one checkpoint file");
    s.stop().await;
}
