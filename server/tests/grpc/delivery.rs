//! The worker event stream under load: a subscriber that falls behind is closed with ABORTED
//! (never silently missing an event), and subscribing again brings the current assignment and
//! step. Events arrive in step order.

use anyk_core::Layout;
use anyk_proto::v1::{SubscribeRequest, WorkerEvent, training_client::TrainingClient, worker_event::Event};
use tonic::transport::Endpoint;
use tonic::{Code, Streaming};

use anyk_server::Settings;

use crate::{BLOCKS, Server, layout, settings, start, start_with};

/// Parameters big enough (256 KiB a step) that a subscriber which does not read fills its
/// HTTP/2 window at once, and then its queue on the server.
const BIG: usize = 64 << 10;
const STALLED_STEPS: u64 = 160;

async fn big_step(s: &mut Server, layout: &Layout, step: u64) {
    let gradient = vec![1e-3; BIG];
    for b in 0..BLOCKS {
        let worker = layout.holders[b as usize][0];
        s.push(worker, step, layout.epoch, b, &gradient).await.unwrap();
    }
}

/// Reads events until the stream ends; returns them and how it ended.
async fn drain(stream: &mut Streaming<WorkerEvent>) -> (Vec<Event>, Option<tonic::Status>) {
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(event)) => events.extend(event.event),
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

fn step_of(event: &Event) -> Option<u64> {
    match event {
        Event::Step(s) => Some(s.step),
        _ => None,
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_closed_and_resubscribes_to_the_current_layout_and_step() {
    let layout = layout();
    let settings = Settings {
        total_steps: 2 * STALLED_STEPS,
        ..settings()
    };
    let mut s = start_with(settings, None, 64 << 20).await;
    s.set_layout(&layout).await.unwrap();
    s.init(&vec![0.0; BIG]).await;
    // Its own connection with the smallest HTTP/2 windows: the server can send it little.
    let endpoint = Endpoint::from_shared(s.url.clone())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535);
    let mut slow = TrainingClient::new(endpoint.connect().await.unwrap());
    let mut stalled = slow
        .subscribe(SubscribeRequest { worker: 1 })
        .await
        .unwrap()
        .into_inner();
    // More steps than the subscriber queue (128 events) holds.
    for step in 0..STALLED_STEPS {
        big_step(&mut s, &layout, step).await;
    }
    // A layout while the subscriber is behind: before, its Assignment was dropped for good.
    let (next, _) = anyk_core::repair(&layout, &[3]).unwrap();
    s.set_layout(&next).await.unwrap();
    big_step(&mut s, &next, STALLED_STEPS).await;

    let (events, end) = drain(&mut stalled).await;
    let end = end.expect("the stream ended without a status");
    assert_eq!(end.code(), Code::Aborted, "{end}");
    assert!(
        end.message().contains("worker 1 fell 127 events behind"),
        "{}",
        end.message()
    );
    let steps: Vec<u64> = events.iter().filter_map(step_of).collect();
    let expected: Vec<u64> = (0..steps.len() as u64).collect();
    assert_eq!(
        steps, expected,
        "steps arrive in order, none missing before the close"
    );
    assert!(
        steps.len() < STALLED_STEPS as usize,
        "the subscriber was closed only at the end"
    );

    let mut fresh = slow
        .subscribe(SubscribeRequest { worker: 1 })
        .await
        .unwrap()
        .into_inner();
    let first = fresh.message().await.unwrap().unwrap().event.unwrap();
    let Event::Assignment(assignment) = first else {
        panic!("first event: {first:?}")
    };
    assert_eq!(assignment.epoch, next.epoch, "the current layout");
    assert_eq!(assignment.blocks, next.queue(1));
    let second = fresh.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!(step_of(&second), Some(STALLED_STEPS + 1), "the current step");
    s.stop().await;
}

#[tokio::test]
async fn step_zero_comes_before_step_one() {
    let layout = layout();
    let mut s = start(None, 1 << 20).await;
    s.set_layout(&layout).await.unwrap();
    let mut events = s
        .training
        .subscribe(SubscribeRequest { worker: 2 })
        .await
        .unwrap()
        .into_inner();
    s.init(&[0.0; crate::PARAMS]).await;
    s.complete_step(&layout).await;
    let mut steps = Vec::new();
    while steps.len() < 2 {
        let event = events.message().await.unwrap().unwrap().event.unwrap();
        steps.extend(step_of(&event));
    }
    assert_eq!(steps, [0, 1]);
    s.stop().await;
}
