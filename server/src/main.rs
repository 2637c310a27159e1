//! `anyk-server`: wiring only (arguments, tracing, run loop).

use std::path::Path;
use std::process::ExitCode;

use anyk_proto::launch::ServerLaunch;
use anyk_proto::tls::{Credentials, Identity, Role};
use anyk_server::{
    CheckpointStore, Endpoints, Guard, ServeError, ServerState, Settings, TERMINATION_LOG, bind,
    load_trainer, report_fatal, serve_job,
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
    let (tls, guard) = security(&args)?;
    let control_addr = args.control_addr();
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
        gradients: args.gradient_precision,
    };
    settings.check()?;
    let store = args.checkpoint_dir.map(CheckpointStore::new);
    let state = ServerState::guarded(load_trainer(settings, store.as_ref())?, store, guard);
    let endpoints = Endpoints {
        training: bind(args.listen).await?,
        control: bind(control_addr).await?,
        health: match args.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        },
        tls,
    };
    // The first lines on stdout are the bound addresses, for whoever started us with port 0.
    println!("anyk-server listening on {}", endpoints.training.local_addr()?);
    println!("anyk-server control on {}", endpoints.control.local_addr()?);
    serve_job(endpoints, state, args.max_message_bytes, shutdown_signal()).await?;
    Ok(())
}

/// The server's credentials and whose callers it accepts (its own job's), from `--tls-dir`.
fn security(args: &ServerLaunch) -> Result<(Option<Credentials>, Option<Guard>), ServeError> {
    let Some(dir) = &args.tls_dir else {
        tracing::warn!("no --tls-dir: plaintext, and every caller is trusted");
        return Ok((None, None));
    };
    let credentials = Credentials::read_dir(dir)?;
    let job = match credentials.identity() {
        Some(Identity {
            job,
            role: Role::Server,
        }) => job,
        other => {
            return Err(ServeError::Credentials(format!(
                "{}: the certificate is not an anyk server's (it names {other:?})",
                dir.join(anyk_proto::tls::CERT_FILE).display()
            )));
        }
    };
    Ok((Some(credentials), Some(Guard::new(job))))
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
