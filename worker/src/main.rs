//! `anyk-worker`: wiring only (arguments, tracing, run loop).

use std::path::PathBuf;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::dataset::TEST_FILE;
use anyk_proto::launch::{EvaluateLaunch, ModelLaunch, WorkerCommand, WorkerLaunch};
use anyk_proto::tls::Credentials;
use anyk_worker::corrupt::Corruption;
use anyk_worker::data::{Samples, await_data_set, manifest};
use anyk_worker::evaluate::accuracy;
use anyk_worker::model::{Model, ModelSpec};
use anyk_worker::numerics;
use anyk_worker::run::{WorkerConfig, run_rejoining};

/// How long a worker waits for its data set to appear (see `await_data_set`).
const DATA_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);
use anyk_worker::straggle::Straggle;
use clap::Parser;
use tch::Device;

/// The anyk training worker.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: WorkerCommand,
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err("--device cuda: no CUDA device is available".into()),
        "auto" => Ok(Device::cuda_if_available()),
        other => Err(format!("--device must be cpu, cuda or auto (got {other:?})")),
    }
}

fn model_spec(args: &ModelLaunch) -> Result<ModelSpec, Box<dyn std::error::Error>> {
    if args.model == "mlp" {
        let m = manifest(&args.data)?;
        let size = |what: &str, n: u64| {
            i64::try_from(n).map_err(|_| format!("{}: {what} {n} is too large", args.data.display()))
        };
        return Ok(ModelSpec::Mlp {
            features: size("features", m.features)?,
            hidden: args.hidden,
            classes: size("classes", m.classes)?,
        });
    }
    Ok(ModelSpec::TorchScript(PathBuf::from(&args.model)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let command = Cli::parse().command;
    // First, before libtorch starts: the numerics profile is environment that it, MKL and
    // OpenMP read as they load (re-executes this binary once when it is not yet in place).
    let model = match &command {
        WorkerCommand::Train(args) => &args.model,
        WorkerCommand::Evaluate(args) => &args.model,
    };
    numerics::apply(model.numerics)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match command {
        WorkerCommand::Train(args) => train(args),
        WorkerCommand::Evaluate(args) => evaluate(args),
    }
}

fn train(args: WorkerLaunch) -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(args.model.threads);
    let device = device(&args.model.device)?;
    numerics::apply_in_torch(args.model.numerics, device);
    await_data_set(&args.model.data, DATA_PATIENCE)?;
    let config = WorkerConfig {
        server: args.server,
        worker: args.worker,
        data: args.model.data.clone(),
        model: model_spec(&args.model)?,
        device,
        straggle: Straggle(args.straggle),
        corruption: Corruption {
            from: args.corrupt_from,
        },
        tls: args.tls_dir.as_deref().map(Credentials::read_dir).transpose()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let window = std::time::Duration::from_secs(args.rejoin_seconds);
    let stats = runtime.block_on(run_rejoining(&config, window))?;
    tracing::info!(?stats, "worker done");
    Ok(())
}

fn evaluate(args: EvaluateLaunch) -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(args.model.threads);
    let device = device(&args.model.device)?;
    numerics::apply_in_torch(args.model.numerics, device);
    let ckpt = Checkpoint::decode(&std::fs::read(&args.checkpoint)?)?;
    let mut model = Model::build(&model_spec(&args.model)?, 0, device)?;
    model.set_flat_params(&ckpt.params)?;
    let path = args.samples.unwrap_or_else(|| args.model.data.join(TEST_FILE));
    let samples = Samples::load(&path, device)?;
    let acc = accuracy(&model, &samples)?;
    println!(
        "{}",
        serde_json::json!({"accuracy": acc, "samples": samples.len(), "step": ckpt.step})
    );
    Ok(())
}
