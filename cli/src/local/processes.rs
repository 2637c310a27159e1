//! The real processes `anyk local` runs: `anyk-server` and `anyk-worker`, found next to `anyk`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyk_proto::launch::{EvaluateLaunch, ModelLaunch, ServerLaunch, WorkerLaunch};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use anyk_core::Layout;
use anyk_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

use super::certs;
use super::supervisor::push;
use super::workdir::Workdir;
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

/// The server's two addresses, as URLs (https with mutual TLS).
pub struct ServerUrls {
    pub training: String,
    pub control: String,
}

/// [`anyk_proto::launch::MALLOC_TUNABLES`], unless the caller's environment sets its own.
fn malloc_tunables() -> Option<(&'static str, &'static str)> {
    std::env::var_os("GLIBC_TUNABLES")
        .is_none()
        .then_some(("GLIBC_TUNABLES", anyk_proto::launch::MALLOC_TUNABLES))
}

/// Starts the server (on ports chosen by the system when `launch` asks for port 0) and returns
/// it and its URLs.
pub async fn start_server(
    bin: &Path,
    launch: &ServerLaunch,
    logs: &Path,
) -> Result<(Child, ServerUrls), LocalError> {
    let exe = bin.join("anyk-server");
    let mut child = Command::new(&exe)
        .args(launch.args())
        .envs(malloc_tunables())
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
    let scheme = if launch.tls_dir.is_some() { "https" } else { "http" };
    // Its first two lines: "anyk-server listening on ADDR", "anyk-server control on ADDR".
    let mut urls = Vec::new();
    for _ in 0..2 {
        let line = lines
            .next_line()
            .await
            .map_err(|source| LocalError::Io {
                what: "read the server's addresses".into(),
                source,
            })?
            .ok_or_else(|| {
                LocalError::Process(format!(
                    "anyk-server exited at start; see {}/server.log",
                    logs.display()
                ))
            })?;
        let addr = line.rsplit(' ').next().unwrap_or_default();
        urls.push(format!("{scheme}://{addr}"));
    }
    let control = urls.pop().unwrap_or_default();
    let training = urls.pop().unwrap_or_default();
    Ok((child, ServerUrls { training, control }))
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
        .envs(malloc_tunables())
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

/// A model's test metrics, as `anyk-worker evaluate` prints them.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Evaluation {
    /// For classifiers (`--contract logits`) only.
    pub accuracy: Option<f64>,
    pub loss: f64,
}

/// Runs `anyk-worker evaluate`; returns its test metrics.
pub async fn evaluate(bin: &Path, launch: &EvaluateLaunch) -> Result<Evaluation, LocalError> {
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
    serde_json::from_slice(&out.stdout).map_err(LocalError::Evaluation)
}

/// The model every worker of a local run trains (and the evaluation uses).
pub fn model_launch(args: &LocalArgs, data: &Path) -> ModelLaunch {
    ModelLaunch {
        model: args.model.clone(),
        contract: args.contract,
        hidden: args.hidden,
        device: args.device.clone(),
        numerics: args.numerics,
        ..ModelLaunch::new(data)
    }
}

/// The server of a local run: loopback, ports of the system's choosing, mutual TLS with the
/// credentials in `tls`, a checkpoint only at the end.
pub fn server_launch(args: &LocalArgs, checkpoints: &Path, tls: &Path) -> ServerLaunch {
    ServerLaunch {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        control_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        tls_dir: Some(tls.to_path_buf()),
        steps: args.steps,
        batch: args.batch,
        seed: args.seed,
        lr: args.lr,
        checkpoint_every: 0,
        checkpoint_dir: Some(checkpoints.to_path_buf()),
        strict: args.strict,
        clip_norm: args.clip_norm,
        gradient_precision: args.gradient_precision,
        ..ServerLaunch::new(args.blocks)
    }
}

/// The run's credentials, its server (mutual TLS) with the layout pushed, and the launch every
/// worker starts from.
pub async fn start_job(
    args: &LocalArgs,
    dirs: &Workdir,
    bin: &std::path::Path,
    layout: &Layout,
) -> Result<(tokio::process::Child, ControlClient<Channel>, WorkerLaunch), LocalError> {
    let certs = certs::make(&dirs.tls, args.workers)?;
    let launch = server_launch(args, &dirs.checkpoints, &certs.server_dir);
    let (server, urls) = start_server(bin, &launch, &dirs.logs).await?;
    let channel = anyk_proto::transport::secure_channel(&urls.control, Some(&certs.supervisor))?;
    let mut control = ControlClient::new(channel);
    push(&mut control, layout).await?;
    let launch = WorkerLaunch {
        // Each worker's own directory under it (`Fleet` picks it by id).
        tls_dir: Some(certs.workers_dir.clone()),
        ..WorkerLaunch::new(urls.training, 0, model_launch(args, &dirs.data))
    };
    Ok((server, control, launch))
}
