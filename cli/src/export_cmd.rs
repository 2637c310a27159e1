//! `anyk export CHECKPOINT --out model.safetensors`: a checkpoint as standard model files. The
//! names and shapes of the parameters come from the model itself, so the work is done by
//! `anyk-worker export` (which links libtorch), found beside this binary.

use std::path::PathBuf;

use anyk_proto::launch::{ExportLaunch, ModelLaunch};
use clap::Args;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint written by the parameter server (`ckpt-*.anyk`).
    pub checkpoint: PathBuf,
    /// The safetensors file to write, with the model's own parameter names.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the model as TorchScript with the trained weights (loadable by
    /// `torch.jit.load`; the built-in mlp is traced).
    #[arg(long)]
    pub torchscript_out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelLaunch,
}

pub fn run(args: ExportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let launch = ExportLaunch {
        checkpoint: args.checkpoint,
        out: args.out,
        torchscript_out: args.torchscript_out,
        metrics_out: None,
        model: args.model,
    };
    let exe = crate::local::bin_dir()?.join("anyk-worker");
    let status = std::process::Command::new(&exe)
        .args(launch.args())
        .status()
        .map_err(|e| format!("failed to run {}: {e}", exe.display()))?;
    if !status.success() {
        return Err(format!("{} export failed ({status})", exe.display()).into());
    }
    Ok(())
}
