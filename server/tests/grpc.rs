//! The parameter server over real gRPC on loopback: exact aggregation, fencing, every kind of
//! bad input (each answered with a precise status while training goes on), and checkpoints.

use std::net::SocketAddr;
use std::time::Duration;

use anyk_core::optimizer::OptimizerConfig;
use anyk_core::{Layout, plan, tensor_bytes};
use anyk_proto::v1::{
    CheckpointRequest, DataType, GradientRequest, GradientResponse, InitializeRequest, JoinRequest,
    ProgressRequest, SetLayoutRequest, SubscribeRequest, Tensor, control_client::ControlClient,
    training_client::TrainingClient, worker_event::Event,
};
use anyk_server::{CheckpointStore, Settings, Shared, bind, load_job, serve};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

const PARAMS: usize = 5;
const BLOCKS: u32 = 6;

struct Server {
    training: TrainingClient<Channel>,
    control: ControlClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

fn settings() -> Settings {
    Settings {
        seed: 7,
        batch_size: 4,
        total_steps: 100,
        blocks: BLOCKS,
        // Plain SGD with lr 1: the update is exactly params - mean gradient, easy to predict.
        optimizer: OptimizerConfig::sgd(1.0, 0.0),
        checkpoint_every: 0,
    }
}

async fn start(store: Option<CheckpointStore>, max_message_bytes: usize) -> Server {
    let shared = Shared::new(load_job(settings(), store.as_ref()).unwrap(), store);
    let listener = bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(listener, shared, max_message_bytes, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let channel = anyk_proto::transport::channel(&url).unwrap();
    Server {
        training: TrainingClient::new(channel.clone()),
        control: ControlClient::new(channel),
        stop: Some(stop),
        done,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .unwrap()
            .unwrap();
    }

    async fn set_layout(&mut self, layout: &Layout) -> Result<(), Status> {
        let wire = anyk_proto::layout_to_wire(layout);
        self.control
            .set_layout(SetLayoutRequest { layout: Some(wire) })
            .await
            .map(|_| ())
    }

    async fn init(&mut self, params: &[f32]) {
        self.training.join(JoinRequest { worker: 0 }).await.unwrap();
        let req = InitializeRequest {
            worker: 0,
            params: Some(tensor(params)),
        };
        assert!(self.training.initialize(req).await.unwrap().into_inner().accepted);
    }

    async fn push(
        &mut self,
        worker: u32,
        step: u64,
        epoch: u64,
        block: u32,
        g: &[f32],
    ) -> Result<GradientResponse, Status> {
        let req = GradientRequest {
            worker,
            step,
            epoch,
            blocks: vec![block],
            gradient: Some(tensor(g)),
            loss: 0.5,
        };
        self.training.push_gradient(req).await.map(|r| r.into_inner())
    }

    async fn step(&mut self) -> u64 {
        self.control
            .get_progress(ProgressRequest {})
            .await
            .unwrap()
            .into_inner()
            .step
    }

    /// Pushes a valid gradient for every block (from its primary) and checks the step advanced.
    async fn complete_step(&mut self, layout: &Layout) {
        let step = self.step().await;
        for b in 0..BLOCKS {
            self.push(layout.holders[b as usize][0], step, layout.epoch, b, &grad(b))
                .await
                .unwrap();
        }
        assert_eq!(self.step().await, step + 1, "training did not continue");
    }
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_f32(values)
}

fn grad(block: u32) -> Vec<f32> {
    (0..PARAMS)
        .map(|i| 0.1 * block as f32 + 0.01 * i as f32 + 0.003)
        .collect()
}

async fn ready(layout: &Layout) -> Server {
    let mut s = start(None, anyk_proto::transport::MAX_MESSAGE_BYTES).await;
    s.set_layout(layout).await.unwrap();
    s.init(&[0.0; PARAMS]).await;
    s
}

fn layout() -> Layout {
    plan(BLOCKS, 2, 4, 3).unwrap()
}

#[tokio::test]
async fn aggregates_at_first_cover_exactly_and_releases_the_next_step() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let mut events = s
        .training
        .subscribe(SubscribeRequest { worker: 1 })
        .await
        .unwrap()
        .into_inner();
    // Assignment first, then step 0.
    assert!(matches!(
        events.message().await.unwrap().unwrap().event,
        Some(Event::Assignment(_))
    ));
    assert!(
        matches!(events.message().await.unwrap().unwrap().event, Some(Event::Step(ref st)) if st.step == 0)
    );
    // Blocks arrive in reverse order, from their last-ranked holders.
    for b in (0..BLOCKS).rev() {
        let holder = *layout.holders[b as usize].last().unwrap();
        let r = s.push(holder, 0, layout.epoch, b, &grad(b)).await.unwrap();
        assert!(r.accepted);
        assert_eq!(r.step_done, b == 0);
    }
    let Some(Event::Step(next)) = events.message().await.unwrap().unwrap().event else {
        panic!("no step 1")
    };
    assert_eq!(next.step, 1);
    let params = tensor_bytes::from_bytes(&next.params.unwrap().data).unwrap();
    // params = 0 - mean(grad), summed in block order within each reduction unit (this layout is
    // fractional: units 0..3 and 3..6), then the units in order, whatever the arrival order.
    assert_eq!(layout.units, vec![(0, 3), (3, 6)]);
    let unit = |lo: u32, hi: u32| {
        let mut acc = grad(lo);
        for b in lo + 1..hi {
            acc.iter_mut().zip(grad(b)).for_each(|(a, g)| *a += g);
        }
        acc
    };
    let (first, second) = (unit(0, 3), unit(3, 6));
    let expected: Vec<f32> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| 0.0 - (a + b) / BLOCKS as f32)
        .collect();
    assert_eq!(params, expected);
    s.stop().await;
}

#[tokio::test]
async fn late_and_redundant_gradients_are_dropped_and_counted() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let second = layout.holders[0][1];
    s.push(layout.holders[0][0], 0, 1, 0, &grad(0)).await.unwrap();
    let dup = s.push(second, 0, 1, 0, &grad(0)).await.unwrap();
    assert!(!dup.accepted && !dup.step_done && dup.covered.contains(&0));
    for b in 1..BLOCKS {
        s.push(layout.holders[b as usize][0], 0, 1, b, &grad(b))
            .await
            .unwrap();
    }
    let late = s.push(layout.holders[3][1], 0, 1, 3, &grad(3)).await.unwrap();
    assert!(!late.accepted && late.step_done);
    let p = s
        .control
        .get_progress(ProgressRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (p.step, p.late_gradients_dropped, p.redundant_gradients_dropped),
        (1, 1, 1)
    );
    s.stop().await;
}

/// Each bad request gets its precise status, and a full step still completes after it.
#[tokio::test]
async fn bad_input_gets_a_precise_status_and_training_continues() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let holder = layout.holders[0][0];
    let stranger = (0..4).find(|w| !layout.holders[0].contains(w)).unwrap();
    let ok = grad(0);
    let mut nan = grad(0);
    nan[2] = f32::NAN;
    let mut inf = grad(0);
    inf[4] = f32::INFINITY;

    let cases: Vec<(&str, GradientRequest, Code, &str)> = vec![
        (
            "unknown worker",
            req(17, 0, 1, 0, tensor(&ok)),
            Code::NotFound,
            "unknown worker 17",
        ),
        (
            "block not held",
            req(stranger, 0, 1, 0, tensor(&ok)),
            Code::PermissionDenied,
            "does not hold block 0",
        ),
        (
            "block out of range",
            req(holder, 0, 1, 99, tensor(&ok)),
            Code::PermissionDenied,
            "block 99",
        ),
        (
            "future step",
            req(holder, 5, 1, 0, tensor(&ok)),
            Code::OutOfRange,
            "step 5 is not current",
        ),
        (
            "stale epoch",
            req(holder, 0, 0, 0, tensor(&ok)),
            Code::FailedPrecondition,
            "stale layout epoch 0",
        ),
        (
            "wrong shape",
            req(holder, 0, 1, 0, tensor(&[1.0, 2.0])),
            Code::InvalidArgument,
            "wrong shape: 2 values",
        ),
        (
            "ragged bytes",
            req(
                holder,
                0,
                1,
                0,
                Tensor {
                    dtype: DataType::F32 as i32,
                    length: 5,
                    data: vec![0u8; 7].into(),
                },
            ),
            Code::InvalidArgument,
            "carries 7 bytes",
        ),
        (
            "wrong dtype",
            req(
                holder,
                0,
                1,
                0,
                Tensor {
                    dtype: DataType::F64 as i32,
                    ..tensor(&ok)
                },
            ),
            Code::InvalidArgument,
            "unsupported dtype",
        ),
        (
            "NaN",
            req(holder, 0, 1, 0, tensor(&nan)),
            Code::InvalidArgument,
            "index 2 is not finite (NaN)",
        ),
        (
            "Inf",
            req(holder, 0, 1, 0, tensor(&inf)),
            Code::InvalidArgument,
            "index 4 is not finite (inf)",
        ),
        (
            "no blocks",
            GradientRequest {
                blocks: vec![],
                ..req(holder, 0, 1, 0, tensor(&ok))
            },
            Code::InvalidArgument,
            "names no block",
        ),
        (
            "missing tensor",
            GradientRequest {
                gradient: None,
                ..req(holder, 0, 1, 0, tensor(&ok))
            },
            Code::InvalidArgument,
            "tensor is missing",
        ),
    ];
    for (name, request, code, text) in cases {
        let status = s.training.push_gradient(request).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(text),
            "{name}: {:?} lacks {text:?}",
            status.message()
        );
        // Nothing was stored: the step completes only with every block pushed again.
        s.complete_step(&layout).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn oversize_messages_are_refused_and_the_server_keeps_serving() {
    let layout = layout();
    let mut s = start(None, 4096).await;
    s.set_layout(&layout).await.unwrap();
    s.init(&[0.0; PARAMS]).await;
    let huge = vec![0.5f32; 10_000];
    let status = s.push(layout.holders[0][0], 0, 1, 0, &huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{}", status.message());
    s.complete_step(&layout).await;
    s.stop().await;
}

#[tokio::test]
async fn layouts_are_epoch_fenced_and_validated() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let (next, _) = anyk_core::repair(&layout, &[3]).unwrap();
    s.set_layout(&next).await.unwrap();
    // Re-pushing the same epoch is idempotent (an operator restart); an older one is refused.
    s.set_layout(&next).await.unwrap();
    let older = s.set_layout(&layout).await.unwrap_err();
    assert_eq!(older.code(), Code::FailedPrecondition);
    assert!(
        older.message().contains("older than the current epoch 2"),
        "{}",
        older.message()
    );
    let mut bad = next.clone();
    bad.epoch = 9;
    bad.holders[2].clear();
    let invalid = s.set_layout(&bad).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("block 2 has no holder"),
        "{}",
        invalid.message()
    );
    let mut wrong_size = plan(BLOCKS + 1, 2, 4, 3).unwrap();
    wrong_size.epoch = 10;
    let status = s.set_layout(&wrong_size).await.unwrap_err();
    assert!(status.message().contains("the job has 6"), "{}", status.message());
    // Gradients under the old epoch are fenced off; the new epoch trains on.
    let status = s.push(layout.holders[0][0], 0, 1, 0, &grad(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    s.complete_step(&next).await;
    s.stop().await;
}

#[tokio::test]
async fn resumes_from_the_newest_complete_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout();
    let mut s = start(Some(CheckpointStore::new(dir.path())), 1 << 20).await;
    s.set_layout(&layout).await.unwrap();
    s.init(&[1.0; PARAMS]).await;
    s.complete_step(&layout).await;
    s.complete_step(&layout).await;
    let saved = s
        .control
        .checkpoint(CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved.step, 2);
    let before = s
        .control
        .get_progress(ProgressRequest {})
        .await
        .unwrap()
        .into_inner();
    s.stop().await;
    // A torn newer file (a crash mid-write that bypassed the rename) must be skipped.
    std::fs::write(dir.path().join("ckpt-000000000099.anyk"), b"ANYKCKPT1\ntorn").unwrap();

    let mut s = start(Some(CheckpointStore::new(dir.path())), 1 << 20).await;
    let after = s
        .control
        .get_progress(ProgressRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.step, after.epoch), (2, layout.epoch));
    assert_eq!(after.param_sha256, before.param_sha256);
    // Resumed parameters are there: a join needs no initialization and training continues.
    let join = s
        .training
        .join(JoinRequest { worker: 1 })
        .await
        .unwrap()
        .into_inner();
    assert!(!join.needs_init);
    assert_eq!(join.param_count, PARAMS as u64);
    s.set_layout(&layout).await.unwrap();
    s.complete_step(&layout).await;
    s.stop().await;
}

fn req(worker: u32, step: u64, epoch: u64, block: u32, gradient: Tensor) -> GradientRequest {
    GradientRequest {
        worker,
        step,
        epoch,
        blocks: vec![block],
        gradient: Some(gradient),
        loss: 0.1,
    }
}
