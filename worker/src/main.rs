//! `anyk-worker`: wiring only (arguments, tracing, run loop).

use std::path::PathBuf;

use anyk_core::checkpoint::Checkpoint;
use anyk_worker::data::{Samples, manifest};
use anyk_worker::evaluate::accuracy;
use anyk_worker::model::{Model, ModelSpec};
use anyk_worker::run::{WorkerConfig, run_rejoining};
use anyk_worker::straggle::Straggle;
use clap::{Args, Parser, Subcommand};
use tch::Device;

/// The anyk training worker.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a parameter server and train on the blocks it assigns.
    Train(TrainArgs),
    /// Print the test accuracy of a checkpoint's parameters as JSON.
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// Directory written by `anyk data split` (block files and manifest.json).
    #[arg(long, env = "ANYK_DATA")]
    data: PathBuf,
    /// `mlp` (built in) or the path of a TorchScript file whose forward(x) returns logits.
    #[arg(long, env = "ANYK_MODEL", default_value = "mlp")]
    model: String,
    /// Hidden units of the built-in MLP.
    #[arg(long, env = "ANYK_HIDDEN", default_value_t = 128)]
    hidden: i64,
    /// `cpu`, `cuda`, or `auto` (CUDA when available).
    #[arg(long, env = "ANYK_DEVICE", default_value = "auto")]
    device: String,
    /// Intra-op threads for libtorch (1 keeps CPU results bit-reproducible and shares a small machine).
    #[arg(long, env = "ANYK_THREADS", default_value_t = 1)]
    threads: i32,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Parameter server URL.
    #[arg(long, env = "ANYK_SERVER")]
    server: String,
    /// This worker's id (0..n).
    #[arg(long, env = "ANYK_WORKER")]
    worker: u32,
    /// Slow this worker down by a factor (sleeping, for demos and benchmarks).
    #[arg(long, env = "ANYK_STRAGGLE", default_value_t = 1.0)]
    straggle: f64,
    /// When the server goes away (a replaced server pod), keep joining again for this long.
    #[arg(long, env = "ANYK_REJOIN_SECONDS", default_value_t = 120)]
    rejoin_seconds: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Checkpoint file written by the parameter server.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Samples to evaluate on (defaults to DATA/test.safetensors).
    #[arg(long)]
    samples: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
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

fn model_spec(args: &ModelArgs) -> Result<ModelSpec, Box<dyn std::error::Error>> {
    if args.model == "mlp" {
        let m = manifest(&args.data)?;
        return Ok(ModelSpec::Mlp {
            features: m.features,
            hidden: args.hidden,
            classes: m.classes,
        });
    }
    Ok(ModelSpec::TorchScript(PathBuf::from(&args.model)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Train(args) => {
            tch::set_num_threads(args.model.threads);
            let config = WorkerConfig {
                server: args.server,
                worker: args.worker,
                data: args.model.data.clone(),
                model: model_spec(&args.model)?,
                device: device(&args.model.device)?,
                straggle: Straggle(args.straggle),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let window = std::time::Duration::from_secs(args.rejoin_seconds);
            let stats = runtime.block_on(run_rejoining(&config, window))?;
            tracing::info!(?stats, "worker done");
        }
        Command::Evaluate(args) => {
            tch::set_num_threads(args.model.threads);
            let device = device(&args.model.device)?;
            let ckpt = Checkpoint::decode(&std::fs::read(&args.checkpoint)?)?;
            let mut model = Model::build(&model_spec(&args.model)?, 0, device)?;
            model.set_flat_params(&ckpt.params)?;
            let path = args
                .samples
                .unwrap_or_else(|| args.model.data.join("test.safetensors"));
            let samples = Samples::load(&path, device)?;
            let acc = accuracy(&model, &samples)?;
            println!(
                "{}",
                serde_json::json!({"accuracy": acc, "samples": samples.len(), "step": ckpt.step})
            );
        }
    }
    Ok(())
}
