//! `anyk-server`: wiring only (arguments, tracing, run loop).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyk_core::optimizer::OptimizerConfig;
use anyk_server::{CheckpointStore, Settings, Shared, bind, load_job, serve};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OptimizerKind {
    Sgd,
    Adam,
}

/// The anyk parameter server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "ANYK_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Number of data blocks m.
    #[arg(long, env = "ANYK_BLOCKS")]
    blocks: u32,
    /// Training steps.
    #[arg(long, env = "ANYK_STEPS", default_value_t = 300)]
    steps: u64,
    /// Minibatch size drawn from each block per step.
    #[arg(long, env = "ANYK_BATCH", default_value_t = 32)]
    batch: u32,
    #[arg(long, env = "ANYK_SEED", default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "ANYK_OPTIMIZER", value_enum, default_value_t = OptimizerKind::Adam)]
    optimizer: OptimizerKind,
    #[arg(long, env = "ANYK_LR", default_value_t = 0.01)]
    lr: f32,
    /// Momentum for SGD.
    #[arg(long, env = "ANYK_MOMENTUM", default_value_t = 0.9)]
    momentum: f32,
    /// Directory for checkpoints; the server resumes from the newest one found there.
    #[arg(long, env = "ANYK_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every N steps (0: only at the end and on shutdown).
    #[arg(long, env = "ANYK_CHECKPOINT_EVERY", default_value_t = 50)]
    checkpoint_every: u64,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "ANYK_MAX_MESSAGE_BYTES", default_value_t = anyk_proto::transport::MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let optimizer = match args.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::sgd(args.lr, args.momentum),
        OptimizerKind::Adam => OptimizerConfig::adam(args.lr),
    };
    let settings = Settings {
        seed: args.seed,
        batch_size: args.batch,
        total_steps: args.steps,
        blocks: args.blocks,
        optimizer,
        checkpoint_every: args.checkpoint_every,
    };
    let store = args.checkpoint_dir.map(CheckpointStore::new);
    let shared = Shared::new(load_job(settings, store.as_ref())?, store);
    let listener = bind(args.listen).await?;
    // The first line on stdout is the bound address, for whoever started us with port 0.
    println!("anyk-server listening on {}", listener.local_addr()?);
    serve(listener, shared, args.max_message_bytes, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
