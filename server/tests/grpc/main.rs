//! The parameter server over real gRPC on loopback: what only the wire shows (status codes and
//! messages, the message-size limit, the worker event stream, progress over the Control service,
//! a restart from checkpoints on disk). The state machine's logic is unit-tested in
//! `server/src/trainer/tests/`.

// Helpers unwrap like the tests they serve (clippy.toml allows it only inside #[test] fns): a
// failed unwrap here is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod aggregation;
mod bad_input;
mod bounds;
mod checkpoints;
mod delivery;
mod foreign_checkpoints;
mod health;
mod layouts;
mod numerics;

use std::net::SocketAddr;
use std::time::Duration;

use anyk_core::{Layout, plan};
use anyk_proto::v1::{
    CheckpointRequest, CheckpointResponse, GradientRequest, GradientResponse, InitializeRequest, JoinRequest,
    JoinResponse, Progress, ProgressRequest, SetLayoutRequest, Tensor, control_client::ControlClient,
    training_client::TrainingClient,
};
use anyk_server::{CheckpointStore, ServerState, Settings, bind, load_trainer, serve};
use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::Channel;

const PARAMS: usize = 5;
const BLOCKS: u32 = 6;

struct Server {
    /// For a client on a connection of its own.
    url: String,
    channel: Channel,
    training: TrainingClient<Channel>,
    control: ControlClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

fn settings() -> Settings {
    Settings::predictable(BLOCKS)
}

async fn start(store: Option<CheckpointStore>, max_message_bytes: usize) -> Server {
    start_with(settings(), store, max_message_bytes).await
}

async fn start_with(settings: Settings, store: Option<CheckpointStore>, max_message_bytes: usize) -> Server {
    let state = ServerState::new(load_trainer(settings, store.as_ref()).unwrap(), store);
    let listener = bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(listener, state, max_message_bytes, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let channel = anyk_proto::transport::channel(&url).unwrap();
    Server {
        url,
        channel: channel.clone(),
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

    async fn join(&mut self, worker: u32) -> JoinResponse {
        self.training
            .join(JoinRequest { worker })
            .await
            .unwrap()
            .into_inner()
    }

    async fn checkpoint(&mut self) -> CheckpointResponse {
        self.control
            .checkpoint(CheckpointRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn init(&mut self, params: &[f32]) {
        self.join(0).await;
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

    async fn progress(&mut self) -> Progress {
        self.control
            .get_progress(ProgressRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn step(&mut self) -> u64 {
        self.progress().await.step
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

/// A server checkpointing into `dir`, with `layout`, initialized to `initial` everywhere, one
/// step done.
async fn one_step_in(dir: &std::path::Path, layout: &Layout, initial: f32) -> Server {
    let mut s = start(Some(CheckpointStore::new(dir)), 1 << 20).await;
    s.set_layout(layout).await.unwrap();
    s.init(&[initial; PARAMS]).await;
    s.complete_step(layout).await;
    s
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
