//! The command lines of `anyk-server` and `anyk-worker`, defined once: the binaries parse these
//! very structs (clap) and every launcher (the operator's pods, `anyk local`) renders them with
//! `args()`, so a flag cannot be spelled differently on the two sides.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use anyk_core::{GradientPrecision, ModelContract, Numerics, OptimizerKind};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};

/// Defaults shared by the clap attributes and the constructors.
mod defaults {
    use super::{Ipv4Addr, SocketAddr, SocketAddrV4};

    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50051));
    pub const STEPS: u64 = 300;
    pub const BATCH: u32 = 32;
    pub const SEED: u64 = 1;
    pub const LR: f32 = 0.01;
    pub const MOMENTUM: f32 = 0.9;
    pub const CHECKPOINT_EVERY: u64 = 50;
    pub const MODEL: &str = "mlp";
    pub const HIDDEN: i64 = 128;
    pub const DEVICE: &str = "auto";
    pub const THREADS: i32 = 1;
    pub const STRAGGLE: f64 = 1.0;
    pub const REJOIN_SECONDS: u64 = 120;
    pub const FAULTY_AFTER: u64 = 2;
}

/// `--optimizer`: the names come from [`OptimizerKind`], and `--help` lists them.
fn optimizer_parser() -> impl TypedValueParser<Value = OptimizerKind> {
    PossibleValuesParser::new(OptimizerKind::ALL.map(OptimizerKind::as_str))
        .try_map(|name| name.parse::<OptimizerKind>())
}

/// `--numerics`: the names come from [`Numerics`].
fn numerics_parser() -> impl TypedValueParser<Value = Numerics> {
    PossibleValuesParser::new(Numerics::ALL.map(Numerics::as_str)).try_map(|name| name.parse::<Numerics>())
}

/// `--gradient-precision`: the names come from [`GradientPrecision`].
pub fn precision_parser() -> impl TypedValueParser<Value = GradientPrecision> {
    PossibleValuesParser::new(GradientPrecision::ALL.map(GradientPrecision::as_str))
        .try_map(|name| name.parse::<GradientPrecision>())
}

/// `--contract`: the names come from [`ModelContract`].
fn contract_parser() -> impl TypedValueParser<Value = ModelContract> {
    PossibleValuesParser::new(ModelContract::ALL.map(ModelContract::as_str))
        .try_map(|name| name.parse::<ModelContract>())
}

/// glibc malloc settings for the server and worker processes (their environment's
/// `GLIBC_TUNABLES`, set by `anyk local` and by the images' Dockerfiles, which spell it the
/// same): no mmap for large allocations and no trimming, so the model-sized buffers of every step
/// reuse memory already mapped instead of faulting in fresh zeroed pages. At 8.5M parameters
/// this took an `anyk local` step from 1.83 s to 1.17 s on the 2-core development machine. One
/// arena: the server's gRPC threads otherwise allocate from per-thread arenas, whose heaps glibc
/// caps at 64 MiB and unmaps when they empty; with one arena the server's page faults at 8.5M
/// fell from 611,000 to 194,000 over 12 steps and a step from 954 to 902 ms (`--numerics native`).
pub const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1";

/// `anyk-server`'s arguments.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ServerLaunch {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "ANYK_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Number of data blocks m.
    #[arg(long, env = "ANYK_BLOCKS")]
    pub blocks: u32,
    /// Training steps.
    #[arg(long, env = "ANYK_STEPS", default_value_t = defaults::STEPS)]
    pub steps: u64,
    /// Minibatch size drawn from each block per step.
    #[arg(long, env = "ANYK_BATCH", default_value_t = defaults::BATCH)]
    pub batch: u32,
    #[arg(long, env = "ANYK_SEED", default_value_t = defaults::SEED)]
    pub seed: u64,
    #[arg(long, env = "ANYK_OPTIMIZER", value_parser = optimizer_parser(), default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    #[arg(long, env = "ANYK_LR", default_value_t = defaults::LR)]
    pub lr: f32,
    /// Momentum for SGD.
    #[arg(long, env = "ANYK_MOMENTUM", default_value_t = defaults::MOMENTUM)]
    pub momentum: f32,
    /// Directory for checkpoints; the server resumes from the newest one found there.
    #[arg(long, env = "ANYK_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every N steps (0: only at the end and on shutdown).
    #[arg(long, env = "ANYK_CHECKPOINT_EVERY", default_value_t = defaults::CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "ANYK_MAX_MESSAGE_BYTES", default_value_t = crate::transport::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Strict mode: accept a block's gradient only once two of its holders sent the same bits
    /// (verified steps, at the cost of computing most blocks twice).
    #[arg(long, env = "ANYK_STRICT", default_value_t = false, action = clap::ArgAction::Set)]
    pub strict: bool,
    /// A worker outvoted this many times (its copy of a block differed while two other holders
    /// agreed) since it joined is reported faulty, to be replaced.
    #[arg(long, env = "ANYK_FAULTY_AFTER", default_value_t = defaults::FAULTY_AFTER)]
    pub faulty_after: u64,
    /// Clip each step's reduced gradient to this L2 norm (deterministic: the norm is summed in
    /// f64 in index order). Off when absent.
    #[arg(long, env = "ANYK_CLIP_NORM", value_parser = positive_f32)]
    pub clip_norm: Option<f32>,
    /// What workers send a whole unit's gradient sum in: f32, or bf16 (rounded to nearest even
    /// at each reduction unit: half the bytes; deterministic, but not the bits of an f32 job).
    /// Not with --strict.
    #[arg(long, env = "ANYK_GRADIENT_PRECISION", value_parser = precision_parser(), default_value_t = GradientPrecision::F32)]
    pub gradient_precision: GradientPrecision,
    /// Who the job is (the operator passes the TrainingJob's UID): checkpoints record it, and a
    /// server of another job refuses to resume them.
    #[arg(long, env = "ANYK_JOB_ID")]
    pub job_id: Option<String>,
    /// The Control service's address (the supervisor's; workers cannot reach it on a cluster).
    /// Default: the Training address with the next port (port 0 stays 0: any free port).
    #[arg(long, env = "ANYK_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,
    /// A plaintext address serving only the gRPC health service (Kubernetes' gRPC probe cannot
    /// present a client certificate); none when absent.
    #[arg(long, env = "ANYK_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Mutual TLS: a directory with the job's ca.crt and this server's tls.crt and tls.key. Every
    /// caller must then present a certificate of the job (a worker's for Training, acting only as
    /// itself; the supervisor's for Control). Without it the server runs plaintext, trusting
    /// every caller (tests and development only).
    #[arg(long, env = "ANYK_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
}

impl ServerLaunch {
    /// A server for `blocks` blocks with every other argument at its default.
    pub fn new(blocks: u32) -> Self {
        Self {
            listen: defaults::LISTEN,
            blocks,
            steps: defaults::STEPS,
            batch: defaults::BATCH,
            seed: defaults::SEED,
            optimizer: OptimizerKind::Adam,
            lr: defaults::LR,
            momentum: defaults::MOMENTUM,
            checkpoint_dir: None,
            checkpoint_every: defaults::CHECKPOINT_EVERY,
            max_message_bytes: crate::transport::MAX_MESSAGE_BYTES,
            strict: false,
            faulty_after: defaults::FAULTY_AFTER,
            clip_norm: None,
            gradient_precision: GradientPrecision::F32,
            job_id: None,
            control_listen: None,
            health_listen: None,
            tls_dir: None,
        }
    }

    /// The command line (without the program name), every argument explicit.
    pub fn args(&self) -> Vec<String> {
        let mut args = flags([
            ("--listen", self.listen.to_string()),
            ("--blocks", self.blocks.to_string()),
            ("--steps", self.steps.to_string()),
            ("--batch", self.batch.to_string()),
            ("--seed", self.seed.to_string()),
            ("--optimizer", self.optimizer.to_string()),
            ("--lr", self.lr.to_string()),
            ("--momentum", self.momentum.to_string()),
            ("--checkpoint-every", self.checkpoint_every.to_string()),
            ("--max-message-bytes", self.max_message_bytes.to_string()),
            ("--strict", self.strict.to_string()),
            ("--faulty-after", self.faulty_after.to_string()),
            ("--gradient-precision", self.gradient_precision.to_string()),
        ]);
        if let Some(dir) = &self.checkpoint_dir {
            args.extend(flags([("--checkpoint-dir", path(dir))]));
        }
        if let Some(id) = &self.job_id {
            args.extend(flags([("--job-id", id.clone())]));
        }
        if let Some(norm) = self.clip_norm {
            args.extend(flags([("--clip-norm", norm.to_string())]));
        }
        if let Some(addr) = self.control_listen {
            args.extend(flags([("--control-listen", addr.to_string())]));
        }
        if let Some(addr) = self.health_listen {
            args.extend(flags([("--health-listen", addr.to_string())]));
        }
        if let Some(dir) = &self.tls_dir {
            args.extend(flags([("--tls-dir", path(dir))]));
        }
        args
    }

    /// Where the Control service listens: `--control-listen`, else the next port.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_listen.unwrap_or_else(|| {
            let mut addr = self.listen;
            if addr.port() != 0 {
                addr.set_port(addr.port().saturating_add(1));
            }
            addr
        })
    }
}

/// `anyk-worker`'s subcommands.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum WorkerCommand {
    /// Join a parameter server and train on the blocks it assigns.
    Train(WorkerLaunch),
    /// Print the test metrics (loss; accuracy for classifiers) of a checkpoint as JSON.
    Evaluate(EvaluateLaunch),
    /// Write a checkpoint's parameters as standard model files (safetensors with the model's
    /// parameter names; for a TorchScript model, the module with the trained weights).
    Export(ExportLaunch),
}

impl WorkerCommand {
    /// The command line (without the program name), subcommand first.
    pub fn args(&self) -> Vec<String> {
        match self {
            Self::Train(launch) => launch.args(),
            Self::Evaluate(launch) => launch.args(),
            Self::Export(launch) => launch.args(),
        }
    }
}

/// `anyk-worker train`'s arguments.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct WorkerLaunch {
    /// Parameter server URL.
    #[arg(long, env = "ANYK_SERVER")]
    pub server: String,
    /// This worker's id (0..n).
    #[arg(long, env = "ANYK_WORKER")]
    pub worker: u32,
    /// Slow this worker down by a factor (sleeping, for demos and benchmarks).
    #[arg(long, env = "ANYK_STRAGGLE", default_value_t = defaults::STRAGGLE)]
    pub straggle: f64,
    /// When the server goes away (a replaced server pod), keep joining again for this long.
    #[arg(long, env = "ANYK_REJOIN_SECONDS", default_value_t = defaults::REJOIN_SECONDS)]
    pub rejoin_seconds: u64,
    /// Fault injection (tests and demos): from this step on, flip one bit of every gradient this
    /// worker sends, as a bad core or GPU would.
    #[arg(long, env = "ANYK_CORRUPT_FROM")]
    pub corrupt_from: Option<u64>,
    /// Mutual TLS: a directory with the job's ca.crt and this worker's tls.crt and tls.key (the
    /// server URL is then https://).
    #[arg(long, env = "ANYK_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelLaunch,
}

impl WorkerLaunch {
    /// Worker `worker` of the server at `server`, not slowed down, default rejoin window.
    pub fn new(server: impl Into<String>, worker: u32, model: ModelLaunch) -> Self {
        Self {
            server: server.into(),
            worker,
            straggle: defaults::STRAGGLE,
            rejoin_seconds: defaults::REJOIN_SECONDS,
            corrupt_from: None,
            tls_dir: None,
            model,
        }
    }

    /// The command line (without the program name): `train` and every argument.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["train".to_string()];
        args.extend(flags([
            ("--server", self.server.clone()),
            ("--worker", self.worker.to_string()),
            ("--straggle", self.straggle.to_string()),
            ("--rejoin-seconds", self.rejoin_seconds.to_string()),
        ]));
        if let Some(step) = self.corrupt_from {
            args.extend(flags([("--corrupt-from", step.to_string())]));
        }
        if let Some(dir) = &self.tls_dir {
            args.extend(flags([("--tls-dir", path(dir))]));
        }
        args.extend(self.model.args());
        args
    }
}

/// The model and data a worker trains or evaluates, and where it computes.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ModelLaunch {
    /// Directory written by `anyk data split` (block files and manifest.json).
    #[arg(long, env = "ANYK_DATA")]
    pub data: PathBuf,
    /// `mlp` (built in) or the path of a TorchScript file (what its forward takes: `--contract`).
    #[arg(long, env = "ANYK_MODEL", default_value = defaults::MODEL)]
    pub model: String,
    /// `logits`: forward(x) returns logits (cross-entropy against class ids); `loss`: forward(x,
    /// y) returns the scalar loss itself (TorchScript models only).
    #[arg(long, env = "ANYK_MODEL_CONTRACT", value_parser = contract_parser(), default_value_t = ModelContract::Logits)]
    pub contract: ModelContract,
    /// Hidden units of the built-in MLP.
    #[arg(long, env = "ANYK_HIDDEN", default_value_t = defaults::HIDDEN)]
    pub hidden: i64,
    /// `cpu`, `cuda`, or `auto` (CUDA when available).
    #[arg(long, env = "ANYK_DEVICE", default_value = defaults::DEVICE)]
    pub device: String,
    /// Intra-op threads for libtorch (1 keeps CPU results bit-reproducible and shares a small machine).
    #[arg(long, env = "ANYK_THREADS", default_value_t = defaults::THREADS)]
    pub threads: i32,
    /// `reproducible` (default): pin every library setting that changes a gradient's bits
    /// between node types (CPU kernel capability, BLAS code path, threads; on CUDA deterministic
    /// algorithms without TF32), so that every holder of a block computes the same bits.
    /// `native`: the fastest kernels of each node, whose bits may differ between node types.
    #[arg(long, env = "ANYK_NUMERICS", value_parser = numerics_parser(), default_value_t = Numerics::Reproducible)]
    pub numerics: Numerics,
}

impl ModelLaunch {
    /// The built-in MLP on the data in `data`, default width, device `auto`, one thread.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            model: defaults::MODEL.to_string(),
            contract: ModelContract::Logits,
            hidden: defaults::HIDDEN,
            device: defaults::DEVICE.to_string(),
            threads: defaults::THREADS,
            numerics: Numerics::Reproducible,
        }
    }

    pub fn args(&self) -> Vec<String> {
        flags([
            ("--data", path(&self.data)),
            ("--model", self.model.clone()),
            ("--contract", self.contract.to_string()),
            ("--hidden", self.hidden.to_string()),
            ("--device", self.device.clone()),
            ("--threads", self.threads.to_string()),
            ("--numerics", self.numerics.to_string()),
        ])
    }
}

/// A finite number above 0 (a clip norm of 0 would zero every step).
fn positive_f32(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a finite number above 0")),
    }
}

fn flags<const N: usize>(pairs: [(&str, String); N]) -> Vec<String> {
    pairs
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

mod offline;
pub use offline::{EvaluateLaunch, ExportLaunch};

#[cfg(test)]
mod tests;
