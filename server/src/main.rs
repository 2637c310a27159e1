//! `anyk-server`: wiring only (arguments, tracing, run loop).

use std::path::Path;
use std::process::ExitCode;

use anyk_proto::launch::ServerLaunch;
use anyk_server::{
    CheckpointStore, ServerState, Settings, TERMINATION_LOG, bind, load_trainer, report_fatal, serve,
};
use clap::Parser;

/// The anyk parameter server.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    launch: ServerLaunch,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().launch).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_fatal(err.as_ref(), Path::new(TERMINATION_LOG));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServerLaunch) -> Result<(), Box<dyn std::error::Error>> {
    let optimizer = args.optimizer.config(args.lr, args.momentum);
    let settings = Settings {
        job_id: args.job_id,
        seed: args.seed,
        batch_size: args.batch,
        total_steps: args.steps,
        blocks: args.blocks,
        optimizer,
        checkpoint_every: args.checkpoint_every,
        strict: args.strict,
        faulty_after: args.faulty_after,
        clip_norm: args.clip_norm,
    };
    let store = args.checkpoint_dir.map(CheckpointStore::new);
    let state = ServerState::new(load_trainer(settings, store.as_ref())?, store);
    let listener = bind(args.listen).await?;
    // The first line on stdout is the bound address, for whoever started us with port 0.
    println!("anyk-server listening on {}", listener.local_addr()?);
    serve(listener, state, args.max_message_bytes, shutdown_signal()).await?;
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
