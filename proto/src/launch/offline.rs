//! Arguments of the worker's offline commands, which read a checkpoint instead of joining a
//! server: `anyk-worker evaluate` and `anyk-worker export`.

use std::path::PathBuf;

use clap::Args;

use super::{ModelLaunch, flags, path};

/// `anyk-worker evaluate`'s arguments.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct EvaluateLaunch {
    /// Checkpoint file written by the parameter server, or a directory of them (the newest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Samples to evaluate on (defaults to DATA/test.safetensors).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelLaunch,
}

impl EvaluateLaunch {
    /// The command line (without the program name): `evaluate` and every argument.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["evaluate".to_string()];
        args.extend(flags([("--checkpoint", path(&self.checkpoint))]));
        if let Some(samples) = &self.samples {
            args.extend(flags([("--samples", path(samples))]));
        }
        args.extend(self.model.args());
        args
    }
}

/// `anyk-worker export`'s arguments.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ExportLaunch {
    /// Checkpoint file written by the parameter server, or a directory of them (the newest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The safetensors file to write (`model.safetensors`).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the model as TorchScript with the trained weights here (the user's module, or
    /// the built-in mlp traced).
    #[arg(long)]
    pub torchscript_out: Option<PathBuf>,
    /// Also write the test metrics (as `evaluate` prints them) here, as JSON.
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelLaunch,
}

impl ExportLaunch {
    /// The command line (without the program name): `export` and every argument.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["export".to_string()];
        args.extend(flags([
            ("--checkpoint", path(&self.checkpoint)),
            ("--out", path(&self.out)),
        ]));
        if let Some(out) = &self.torchscript_out {
            args.extend(flags([("--torchscript-out", path(out))]));
        }
        if let Some(out) = &self.metrics_out {
            args.extend(flags([("--metrics-out", path(out))]));
        }
        args.extend(self.model.args());
        args
    }
}
