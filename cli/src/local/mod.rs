//! `anyk local`: the whole method on one machine. One `anyk-server` and n `anyk-worker`
//! processes on loopback; this process plays the operator (layout, repair after a kill,
//! replacement, rebalance) and shows what happens.

mod certs;
mod faults;
mod fleet;
mod node_type;
mod policy;
mod processes;
mod replicas;
mod report;
mod summary;
mod supervisor;
mod workdir;

use std::path::PathBuf;

use anyk_core::{GradientPrecision, Numerics};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};

pub use faults::{Corrupt, Faults, Kill, Straggler};
pub use node_type::NodeType;
pub use processes::bin_dir;
pub use summary::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Uncoded synchronous training: each block on one worker, the server waits for all.
    Sync,
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Workers n.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Replication r: copies of each block.
    #[arg(long, default_value_t = 3)]
    pub replication: u32,
    /// Target k: any k workers cover all blocks (tolerates n-k stragglers or failures).
    #[arg(long, default_value_t = 6)]
    pub target: u32,
    /// Blocks m the data set is split into.
    #[arg(long, default_value_t = 24)]
    pub blocks: u32,
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Minibatch drawn from each block per step.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// `mlp` or a TorchScript file.
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// What the model's forward takes and returns: `logits` (forward(x), class ids) or `loss`
    /// (forward(x, y) returns the loss; for any labels, e.g. regression with `--labels value`).
    #[arg(long, default_value = "logits")]
    pub contract: anyk_core::ModelContract,
    /// Whether the data's labels are class ids (`class`) or real values (`value`).
    #[arg(long, default_value = "class")]
    pub labels: anyk_core::dataset::LabelKind,
    /// Hidden units of the built-in MLP.
    #[arg(long, default_value_t = 128)]
    pub hidden: i64,
    /// Data: what `anyk data split --input` takes (a CSV with or without a header, label last,
    /// optionally .gz; safetensors; a directory of them; http(s):// or s3:// URLs), or a
    /// directory already written by `anyk data split`. Default: the bundled digits data set.
    #[arg(long)]
    pub data: Option<String>,
    /// Slow worker W by FACTOR (repeatable). Fault flags replace the default faults.
    #[arg(long = "straggle", value_name = "W:FACTOR")]
    pub straggle: Vec<Straggler>,
    /// Kill worker W when the job reaches STEP (repeatable).
    #[arg(long = "kill", value_name = "W@STEP")]
    pub kill: Vec<Kill>,
    /// Worker W's first process flips one bit of every gradient from STEP on (repeatable); the
    /// replicas that hold the same blocks outvote it, and it is replaced once reported faulty.
    #[arg(long = "corrupt", value_name = "W@STEP")]
    pub corrupt: Vec<Corrupt>,
    /// Run without any injected fault.
    #[arg(long, conflicts_with_all = ["straggle", "kill", "corrupt"])]
    pub no_faults: bool,
    /// Emulate a heterogeneous cluster: worker W runs with the CPU kernels of a node of type
    /// CAP (default, avx2 or avx512; repeatable). Not a fault: the default faults stay.
    #[arg(long = "node-type", value_name = "W:CAP")]
    pub node_type: Vec<NodeType>,
    /// `reproducible`: every worker pins the kernels and library settings that decide a
    /// gradient's bits, so every node type computes the same bits. `native`: each node's
    /// fastest kernels.
    #[arg(long, value_parser = numerics_parser(), default_value_t = Numerics::Reproducible)]
    pub numerics: Numerics,
    /// Strict mode: the server accepts a block's gradient only once two holders sent the same
    /// bits.
    #[arg(long)]
    pub strict: bool,
    /// Clip each step's gradient (the mean over all blocks) to this L2 norm when it is longer
    /// (deterministic; off by default).
    #[arg(long, value_parser = positive)]
    pub clip_norm: Option<f32>,
    /// What workers send a whole unit's gradient sum in: `f32`, or `bf16` (rounded to nearest
    /// even at each reduction unit: half the bytes per push; deterministic, but other bits than
    /// an f32 run's).
    #[arg(long, value_parser = anyk_proto::launch::precision_parser(), default_value_t = GradientPrecision::F32, conflicts_with = "strict")]
    pub gradient_precision: GradientPrecision,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run the same job uncoded instead, as the reference for comparisons.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Working directory for blocks, checkpoints and logs: a new or empty directory (default: a
    /// new temporary directory). Nothing else is ever deleted.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Reuse a --workdir that an earlier `anyk local` made: its logs, checkpoints and data
    /// folders are removed first.
    #[arg(long, requires = "workdir")]
    pub force: bool,
    /// Replacements of failed workers (crashed, killed or reported faulty) allowed within
    /// --backoff-window-seconds; the job fails at the next failure. A worker is replaced after
    /// 0.5 s, doubling for each failure since it last joined, up to 10 s.
    #[arg(long, default_value_t = 6)]
    pub backoff_limit: u32,
    #[arg(long, default_value_t = 600)]
    pub backoff_window_seconds: u64,
    /// Fail the job when it runs longer than this (counted from when its processes started).
    #[arg(long)]
    pub deadline_seconds: Option<u64>,
    /// Print a status line every N steps.
    #[arg(long, default_value_t = 25)]
    pub every: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("invalid arguments: {0}")]
    Invalid(String),
    #[error("failed to {what}")]
    Io { what: String, source: std::io::Error },
    #[error("failed to prepare the data")]
    Data(#[from] crate::data::SplitError),
    #[error("failed to plan the layout")]
    Plan(#[from] anyk_core::PlanError),
    #[error("failed to talk to the parameter server")]
    Rpc(#[from] tonic::Status),
    #[error("failed to make the run's TLS credentials")]
    Tls(#[from] anyk_proto::tls::TlsError),
    #[error("failed to connect to the parameter server")]
    Connect(#[from] tonic::transport::Error),
    #[error("failed to parse {path}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to read the evaluation's result")]
    Evaluation(#[source] serde_json::Error),
    #[error("{0}")]
    Process(String),
    #[error("failed to run the job to its end")]
    Failed(#[from] policy::JobFailure),
    #[error("training failed at step {step}: {reason}; the step was not applied (logs in {logs})")]
    NonFinite { step: u64, reason: String, logs: String },
}

impl LocalError {
    /// The server refused step `p.failed_step` as non-finite; the logs are in `logs`.
    fn non_finite(p: &anyk_proto::v1::Progress, logs: &str) -> Self {
        Self::NonFinite {
            step: p.failed_step,
            reason: p.failed_reason.clone(),
            logs: logs.to_string(),
        }
    }
}

impl LocalArgs {
    /// When the job has failed.
    pub fn limits(&self) -> policy::Limits {
        policy::Limits {
            backoff_limit: self.backoff_limit,
            window: std::time::Duration::from_secs(self.backoff_window_seconds),
            deadline: self.deadline_seconds.map(std::time::Duration::from_secs),
        }
    }

    /// The faults this run injects: the flags, none, or the demo's defaults.
    pub fn faults(&self) -> Faults {
        if self.no_faults {
            Faults::default()
        } else if self.straggle.is_empty() && self.kill.is_empty() && self.corrupt.is_empty() {
            Faults::default_for(self.workers, self.steps)
        } else {
            Faults {
                stragglers: self.straggle.clone(),
                kills: self.kill.clone(),
                corruptions: self.corrupt.clone(),
            }
        }
    }
}

/// `--clip-norm`: a finite number above 0 (a norm of 0 would zero every step).
fn positive(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a finite number above 0")),
    }
}

/// `--numerics`: the names come from [`Numerics`].
fn numerics_parser() -> impl TypedValueParser<Value = Numerics> {
    PossibleValuesParser::new(Numerics::ALL.map(Numerics::as_str)).try_map(|name| name.parse::<Numerics>())
}

pub fn run(args: LocalArgs) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(supervisor::run(&args))?;
    summary.print();
    if let Some(path) = &args.summary {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    println!("param sha256: {}", summary.param_sha256);
    Ok(())
}
