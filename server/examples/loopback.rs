//! Gradient-sized messages over loopback: raw tonic against anyk's transport, side by side.
//! Every configuration serves the same sink (a Training service whose PushGradient only takes
//! the message), so what differs is the transport alone:
//!   - `tonic defaults`: tonic's server and channel as they come (64 KiB HTTP/2 windows), only
//!     the message limit raised so that a model fits;
//!   - `anyk windows`: anyk's windows (server receive 4 MiB per stream, client 16 MiB, 64 MiB per
//!     connection) and TCP_NODELAY;
//!   - `anyk server path`: that plus the server's own wrapper (per-message limit metered as the
//!     body streams in, model-sized requests read one at a time; the pushes here carry no part
//!     metadata, so none is held back).
//!
//! Usage: cargo run --release -p anyk-server --example loopback [-- PARAMS...]
//! (default 300000 8500000 34000000 f32 values per message). Prints, for one worker pushing
//! in a loop and for 8 workers pushing at once (a connection each), the mean time per message
//! and the throughput.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyk_proto::transport::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES};
use anyk_proto::v1::training_client::TrainingClient;
use anyk_proto::v1::training_server::{Training, TrainingServer};
use anyk_proto::v1::*;
use anyk_server::admission::{Admission, MODEL_SIZED_IN_FLIGHT};
use anyk_server::message_limit::{Limited, MessageLimit};
use anyk_server::serving::RECEIVE_STREAM_WINDOW_BYTES;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// Takes every push and answers at once.
struct Sink;

#[tonic::async_trait]
impl Training for Sink {
    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        Err(Status::unimplemented("sink"))
    }
    async fn initialize(
        &self,
        _: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        Err(Status::unimplemented("sink"))
    }
    type SubscribeStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WorkerEvent, Status>> + Send>>;
    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("sink"))
    }
    async fn push_gradient(
        &self,
        req: Request<GradientRequest>,
    ) -> Result<Response<GradientResponse>, Status> {
        let bytes = req.get_ref().gradient.as_ref().map_or(0, |t| t.data.len());
        Ok(Response::new(GradientResponse {
            accepted: bytes > 0,
            ..Default::default()
        }))
    }
}

#[derive(Clone, Copy, Debug)]
enum Config {
    TonicDefaults,
    AnykWindows,
    AnykServerPath,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::TonicDefaults => "tonic defaults",
            Config::AnykWindows => "anyk windows",
            Config::AnykServerPath => "anyk server path",
        }
    }
}

async fn serve(config: Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let sink = TrainingServer::new(Sink).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener);
    let mut tuned = Server::builder()
        .initial_stream_window_size(RECEIVE_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    let server = match config {
        Config::TonicDefaults => {
            tokio::spawn(Server::builder().add_service(sink).serve_with_incoming(incoming));
            return addr;
        }
        Config::AnykWindows => tuned.add_service(sink),
        Config::AnykServerPath => {
            let (limit, admission) = (
                MessageLimit::new(MAX_MESSAGE_BYTES),
                Admission::new(MODEL_SIZED_IN_FLIGHT),
            );
            tuned.add_service(Limited::new(sink, limit, admission))
        }
    };
    tokio::spawn(server.serve_with_incoming(incoming.with_nodelay(Some(true))));
    addr
}

async fn client(config: Config, addr: SocketAddr) -> TrainingClient<Channel> {
    let url = format!("http://{addr}");
    let channel = match config {
        Config::TonicDefaults => Endpoint::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect"),
        // anyk's channel connects lazily, on the first push (the warm-up run pays for it).
        _ => anyk_proto::transport::channel(&url).expect("url"),
    };
    TrainingClient::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// `workers` clients each pushing `per_worker` messages of `params` values; the wall time.
async fn run(config: Config, params: usize, workers: usize, per_worker: usize) -> Duration {
    let addr = serve(config).await;
    let mut clients = Vec::new();
    for _ in 0..workers {
        clients.push(client(config, addr).await);
    }
    let data = bytes::Bytes::from(vec![1u8; params * 4]);
    // Connected and warm before the clock starts.
    for c in &mut clients {
        push(c, 0, data.clone()).await;
    }
    let started = Instant::now();
    let pushes = clients.into_iter().enumerate().map(|(w, mut c)| {
        let data = data.clone();
        tokio::spawn(async move {
            for _ in 0..per_worker {
                push(&mut c, w as u32, data.clone()).await;
            }
        })
    });
    for push in pushes.collect::<Vec<_>>() {
        push.await.expect("pusher");
    }
    started.elapsed()
}

async fn push(client: &mut TrainingClient<Channel>, worker: u32, data: bytes::Bytes) {
    let request = GradientRequest {
        worker,
        blocks: vec![worker],
        gradient: Some(Tensor::from_f32_bytes(data)),
        ..Default::default()
    };
    let response = client.push_gradient(request).await.expect("push").into_inner();
    assert!(response.accepted);
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("PARAMS: a number"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![300_000, 8_500_000, 34_000_000]
    } else {
        sizes
    };
    println!(
        "| params | config | 1 worker: ms/message | 1 worker: MB/s | 8 workers: ms/message | 8 workers: MB/s |"
    );
    println!("|---|---|---|---|---|---|");
    for &params in &sizes {
        // About 1 GB per measurement, at least 4 messages per worker.
        let per_worker = (1_000_000_000 / (params * 4)).clamp(4, 400);
        for config in [Config::TonicDefaults, Config::AnykWindows, Config::AnykServerPath] {
            let one = run(config, params, 1, per_worker).await;
            let eight = run(config, params, 8, per_worker.div_ceil(8)).await;
            let mb = (params * 4) as f64 / 1e6;
            let (n1, n8) = (per_worker as f64, (8 * per_worker.div_ceil(8)) as f64);
            println!(
                "| {params} | {} | {:.2} | {:.0} | {:.2} | {:.0} |",
                config.name(),
                one.as_secs_f64() * 1e3 / n1,
                mb * n1 / one.as_secs_f64(),
                eight.as_secs_f64() * 1e3 / n8,
                mb * n8 / eight.as_secs_f64(),
            );
        }
    }
}
