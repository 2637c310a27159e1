//! `anyk-worker`: wiring only (arguments, tracing, run loop).

use std::path::PathBuf;

use anyk_core::ModelContract;
use anyk_core::checkpoint::Checkpoint;
use anyk_core::dataset::{LabelKind, TEST_FILE};
use anyk_proto::launch::{EvaluateLaunch, ExportLaunch, ModelLaunch, WorkerCommand, WorkerLaunch};
use anyk_proto::tls::Credentials;
use anyk_worker::corrupt::Corruption;
use anyk_worker::data::{Samples, await_data_set, manifest};
use anyk_worker::evaluate::{Evaluation, evaluate as evaluate_model};
use anyk_worker::export;
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
    let m = manifest(&args.data)?;
    check_contract(args, m.labels)?;
    if args.model == "mlp" {
        let size = |what: &str, n: u64| {
            i64::try_from(n).map_err(|_| format!("{}: {what} {n} is too large", args.data.display()))
        };
        return Ok(ModelSpec::Mlp {
            features: size("features", m.features)?,
            hidden: args.hidden,
            classes: size("classes", m.classes)?,
        });
    }
    Ok(ModelSpec::TorchScript {
        path: PathBuf::from(&args.model),
        contract: args.contract,
    })
}

/// Refuses a model that cannot learn from the data's labels, before any step is computed.
fn check_contract(args: &ModelLaunch, labels: LabelKind) -> Result<(), String> {
    match (args.model.as_str(), args.contract, labels) {
        ("mlp", ModelContract::Loss, _) => {
            Err("the built-in mlp returns logits: --contract loss needs a TorchScript model".into())
        }
        (_, ModelContract::Logits, LabelKind::Value) => Err(format!(
            "{}: the labels are values (regression) but the model's contract is `logits` (cross-entropy against class ids); use a TorchScript model with --contract loss",
            args.data.display()
        )),
        _ => Ok(()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let command = Cli::parse().command;
    // First, before libtorch starts: the numerics profile is environment that it, MKL and
    // OpenMP read as they load (re-executes this binary once when it is not yet in place).
    let model = match &command {
        WorkerCommand::Train(args) => &args.model,
        WorkerCommand::Evaluate(args) => &args.model,
        WorkerCommand::Export(args) => &args.model,
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
        WorkerCommand::Export(args) => export_files(args),
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
    let (model, step) = trained_model(&args.model, &args.checkpoint)?;
    let evaluation = test_metrics(&model, &args.model, args.samples.as_deref())?;
    println!("{}", metrics_json(&evaluation, step));
    Ok(())
}

fn export_files(mut args: ExportLaunch) -> Result<(), Box<dyn std::error::Error>> {
    // Model files load anywhere: built, written and evaluated on the CPU whatever the node has
    // (a module traced or saved on a GPU keeps its tensors there; found on an H100).
    args.model.device = "cpu".into();
    let (model, step) = trained_model(&args.model, &args.checkpoint)?;
    export::safetensors(&model, &args.out)?;
    if let Some(out) = &args.torchscript_out {
        export::torchscript(&model, out)?;
    }
    let samples = Samples::load(&args.model.data.join(TEST_FILE), Device::Cpu)?;
    let mut json = if samples.is_empty() {
        // No held-out split (testFraction 0): the files are written, there is nothing to score.
        serde_json::json!({ "samples": 0, "step": step })
    } else {
        metrics_json(&evaluate_model(&model, &samples)?, step)
    };
    // The model sees features divided by this (the split's scale): so must its users.
    json["feature_scale"] = manifest(&args.model.data)?.scale.into();
    if let Some(out) = &args.metrics_out {
        std::fs::write(out, json.to_string())?;
    }
    println!("{json}");
    Ok(())
}

/// The model of `args` with the parameters of `checkpoint`, and the checkpoint's step.
fn trained_model(
    args: &ModelLaunch,
    checkpoint: &std::path::Path,
) -> Result<(Model, u64), Box<dyn std::error::Error>> {
    tch::set_num_threads(args.threads);
    let device = device(&args.device)?;
    numerics::apply_in_torch(args.numerics, device);
    let checkpoint = newest_checkpoint(checkpoint)?;
    let ckpt = Checkpoint::decode(&std::fs::read(&checkpoint)?)?;
    let mut model = Model::build(&model_spec(args)?, 0, device)?;
    model.set_flat_params(&ckpt.params)?;
    Ok((model, ckpt.step))
}

/// `path`, or when it is a directory the newest checkpoint in it (names sort by step).
fn newest_checkpoint(path: &std::path::Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let mut names: Vec<String> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("ckpt-") && n.ends_with(".anyk"))
        .collect();
    names.sort();
    let newest = names.pop().ok_or_else(|| {
        format!(
            "{}: no checkpoint (ckpt-*.anyk) in this directory",
            path.display()
        )
    })?;
    Ok(path.join(newest))
}

fn test_metrics(
    model: &Model,
    args: &ModelLaunch,
    samples: Option<&std::path::Path>,
) -> Result<Evaluation, Box<dyn std::error::Error>> {
    let path = samples.map_or_else(|| args.data.join(TEST_FILE), std::path::Path::to_path_buf);
    let samples = Samples::load(&path, device(&args.device)?)?;
    Ok(evaluate_model(model, &samples)?)
}

fn metrics_json(evaluation: &Evaluation, step: u64) -> serde_json::Value {
    let mut json = serde_json::to_value(evaluation).unwrap_or_default();
    json["step"] = step.into();
    json
}
