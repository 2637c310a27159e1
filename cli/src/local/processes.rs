//! The real processes `anyk local` runs: `anyk-server` and `anyk-worker`, found next to `anyk`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyk_proto::launch::{EvaluateLaunch, ModelLaunch, ServerLaunch, WorkerLaunch};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{LocalArgs, LocalError};

/// Where the sibling binaries are: `ANYK_BIN_DIR`, else the directory of this executable.
pub fn bin_dir() -> Result<PathBuf, LocalError> {
    if let Some(dir) = std::env::var_os("ANYK_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|source| LocalError::Io {
        what: "locate anyk".into(),
        source,
    })?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `worker-ID` (`worker-ID.INCARNATION` for replacements); the log is `NAME.log`.
pub fn worker_log_name(worker: u32, incarnation: u32) -> String {
    if incarnation == 0 {
        format!("worker-{worker}")
    } else {
        format!("worker-{worker}.{incarnation}")
    }
}

fn log_file(logs: &Path, name: &str) -> Result<std::fs::File, LocalError> {
    let path = logs.join(format!("{name}.log"));
    std::fs::File::create(&path).map_err(|source| LocalError::Io {
        what: format!("create {}", path.display()),
        source,
    })
}

/// Starts the server (on a port chosen by the system when `launch.listen` has port 0) and
/// returns it and its URL.
pub async fn start_server(
    bin: &Path,
    launch: &ServerLaunch,
    logs: &Path,
) -> Result<(Child, String), LocalError> {
    let exe = bin.join("anyk-server");
    let mut child = Command::new(&exe)
        .args(launch.args())
        .stdout(Stdio::piped())
        .stderr(log_file(logs, "server")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LocalError::Io {
            what: format!("start {}", exe.display()),
            source,
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| LocalError::Process("anyk-server's stdout is not piped".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|source| LocalError::Io {
            what: "read the server's address".into(),
            source,
        })?
        .ok_or_else(|| {
            LocalError::Process(format!(
                "anyk-server exited at start; see {}/server.log",
                logs.display()
            ))
        })?;
    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
    Ok((child, format!("http://{addr}")))
}

/// Starts `anyk-worker train` with `env` added to its environment; its log is `worker-ID.log`
/// (`worker-ID.INCARNATION.log` for replacements).
pub fn start_worker(
    bin: &Path,
    launch: &WorkerLaunch,
    env: &[(&str, &str)],
    incarnation: u32,
    logs: &Path,
) -> Result<Child, LocalError> {
    let exe = bin.join("anyk-worker");
    Command::new(&exe)
        .args(launch.args())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(logs, &worker_log_name(launch.worker, incarnation))?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LocalError::Io {
            what: format!("start {}", exe.display()),
            source,
        })
}

/// Runs `anyk-worker evaluate`; returns its test accuracy.
pub async fn evaluate(bin: &Path, launch: &EvaluateLaunch) -> Result<f64, LocalError> {
    let exe = bin.join("anyk-worker");
    let out = Command::new(&exe)
        .args(launch.args())
        .output()
        .await
        .map_err(|source| LocalError::Io {
            what: format!("run {}", exe.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(LocalError::Process(format!(
            "evaluation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(LocalError::Evaluation)?;
    json["accuracy"]
        .as_f64()
        .ok_or_else(|| LocalError::Process("evaluation JSON has no accuracy".into()))
}

/// The model every worker of a local run trains (and the evaluation uses).
pub fn model_launch(args: &LocalArgs, data: &Path) -> ModelLaunch {
    ModelLaunch {
        model: args.model.clone(),
        hidden: args.hidden,
        device: args.device.clone(),
        numerics: args.numerics,
        ..ModelLaunch::new(data)
    }
}

/// The server of a local run: loopback, a port of the system's choosing, a checkpoint only at
/// the end.
pub fn server_launch(args: &LocalArgs, checkpoints: &Path) -> ServerLaunch {
    ServerLaunch {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        steps: args.steps,
        batch: args.batch,
        seed: args.seed,
        lr: args.lr,
        checkpoint_every: 0,
        checkpoint_dir: Some(checkpoints.to_path_buf()),
        strict: args.strict,
        clip_norm: args.clip_norm,
        ..ServerLaunch::new(args.blocks)
    }
}
