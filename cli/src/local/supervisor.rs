//! Plays the operator for a local run: pushes the layout, injects faults, repairs after a
//! worker dies, starts its replacement and rebalances onto it, and collects the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyk_core::{Layout, RepairError, plan, rebalance, repair, uncoded, verify};
use anyk_proto::v1::{
    CheckpointRequest, Progress, ProgressRequest, SetLayoutRequest, control_client::ControlClient,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::process::Child;
use tonic::transport::Channel;

use super::processes::{bin_dir, evaluate, start_server, start_worker};
use super::{Baseline, Faults, LocalArgs, LocalError, Summary};
use crate::data_split::{self, SplitArgs};

/// A run that makes no progress for this long has failed (and says where its logs are).
const STALL: Duration = Duration::from_secs(90);

pub async fn run(args: &LocalArgs) -> Result<Summary, LocalError> {
    let started = Instant::now();
    let mut layout = match args.baseline {
        Some(Baseline::Sync) => uncoded(args.blocks, args.workers)?,
        None => plan(args.blocks, args.replication, args.workers, args.target)?,
    };
    let faults = args.faults();
    faults.check(args.workers).map_err(LocalError::Invalid)?;
    let workdir = workdir(args)?;
    let data = prepare_data(args, &workdir)?;
    let (logs, checkpoints) = (workdir.join("logs"), workdir.join("checkpoints"));
    for dir in [&logs, &checkpoints] {
        // A fresh checkpoint directory: the server would otherwise resume an earlier run.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|source| LocalError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
    }
    let bin = bin_dir()?;
    let server_args: Vec<String> = [
        ("--blocks", args.blocks.to_string()),
        ("--steps", args.steps.to_string()),
        ("--batch", args.batch.to_string()),
        ("--seed", args.seed.to_string()),
        ("--lr", args.lr.to_string()),
        ("--checkpoint-every", "0".to_string()),
        ("--checkpoint-dir", checkpoints.display().to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    let (mut server, url) = start_server(&bin, &server_args, &logs).await?;
    let mut control = ControlClient::new(anyk_proto::transport::channel(&url)?);
    push(&mut control, &layout).await?;

    let model_args: Vec<String> = vec![
        "--data".into(),
        data.display().to_string(),
        "--model".into(),
        args.model.clone(),
        "--hidden".into(),
        args.hidden.to_string(),
        "--device".into(),
        args.device.clone(),
    ];
    let worker_args = |straggle: f64| -> Vec<String> {
        let mut v = vec![
            "--server".into(),
            url.clone(),
            "--straggle".into(),
            straggle.to_string(),
        ];
        v.extend(model_args.iter().cloned());
        v
    };
    let mut workers: BTreeMap<u32, Child> = BTreeMap::new();
    let mut incarnations: BTreeMap<u32, u32> = BTreeMap::new();
    for w in 0..args.workers {
        workers.insert(
            w,
            start_worker(&bin, w, 0, &worker_args(faults.straggle_factor(w)), &logs)?,
        );
        incarnations.insert(w, 0);
    }

    let mode = match args.baseline {
        Some(Baseline::Sync) => "baseline sync (uncoded)".to_string(),
        None => format!("coded, {:?}", layout.scheme).to_lowercase(),
    };
    let bar = progress_bar(args.steps);
    say(
        &bar,
        format!(
            "anyk local: {mode}, n={} r={} k={} m={} blocks, {} steps; faults: {}; logs in {}",
            layout.workers,
            layout.replication,
            layout.target,
            layout.blocks,
            args.steps,
            describe(&faults),
            logs.display()
        ),
    );

    let mut stream = control.watch_progress(ProgressRequest {}).await?.into_inner();
    let mut run = RunState {
        live: (0..args.workers).collect(),
        coverage_ok: true,
        ..RunState::default()
    };
    let mut kills = faults.kills.clone();
    kills.sort_by_key(|k| k.step);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_change = Instant::now();
    let last: Progress = loop {
        tokio::select! {
            msg = stream.message() => {
                let p = msg?.ok_or_else(|| LocalError::Process(format!("the server closed its progress stream; see {}", logs.display())))?;
                if p.step > run.step {
                    last_change = Instant::now();
                    run.record_steps(&p, &layout, &bar, args.every);
                }
                let due: Vec<_> = kills.iter().filter(|k| k.step <= p.step && !run.killed.contains(&k.worker)).copied().collect();
                for k in due {
                    if let Some(child) = workers.get_mut(&k.worker) {
                        let _ = child.start_kill();
                        say(&bar, format!("step {:>4}: killed worker {} (SIGKILL)", p.step, k.worker));
                    }
                    run.killed.insert(k.worker);
                }
                let joined: Vec<u32> = run.awaiting_join.iter()
                    .filter(|(w, before)| joins(&p, **w) > **before).map(|(w, _)| *w).collect();
                for w in joined {
                    run.awaiting_join.remove(&w);
                    if !layout.members.contains(&w) {
                        let (next, moves) = rebalance(&layout, &[w]).expect("worker ids are in range");
                        layout = next;
                        push(&mut control, &layout).await?;
                        run.rebalances += 1;
                        say(&bar, format!("step {:>4}: replacement worker {w} joined; rebalance to epoch {}: {} block(s) moved to it", p.step, layout.epoch, moves.len()));
                    }
                }
                run.progress = p;
                if run.progress.finished {
                    break run.progress.clone();
                }
            }
            _ = tick.tick() => {
                if last_change.elapsed() > STALL {
                    return Err(LocalError::Process(format!("no progress for {STALL:?}; see the logs in {}", logs.display())));
                }
                let exited: Vec<(u32, bool)> = workers.iter_mut()
                    .filter_map(|(w, c)| c.try_wait().ok().flatten().map(|s| (*w, s.success())))
                    .collect();
                for (w, clean) in exited {
                    workers.remove(&w);
                    if clean {
                        continue;
                    }
                    run.live.remove(&w);
                    let step = run.progress.step;
                    match repair(&layout, &[w]) {
                        Ok((next, moves)) => {
                            layout = next;
                            push(&mut control, &layout).await?;
                            run.repairs += 1;
                            let cov = verify(&layout, &run.live);
                            say(&bar, format!(
                                "step {step:>4}: worker {w} lost; repair to epoch {}: {} copy(ies) moved ({}), margin {}",
                                layout.epoch, moves.len(), moves_text(&moves), cov.margin
                            ));
                        }
                        Err(RepairError::CoverageLost { live, target }) => say(&bar, format!(
                            "step {step:>4}: worker {w} lost; COVERAGE LOST ({live} live < k={target}): aggregation waits for a replacement"
                        )),
                        Err(e) => return Err(LocalError::Process(e.to_string())),
                    }
                    let inc = incarnations.entry(w).or_default();
                    *inc += 1;
                    workers.insert(w, start_worker(&bin, w, *inc, &worker_args(1.0), &logs)?);
                    run.live.insert(w);
                    run.awaiting_join.insert(w, joins(&run.progress, w));
                }
            }
        }
    };
    bar.finish_and_clear();

    let ckpt = control.checkpoint(CheckpointRequest {}).await?.into_inner();
    let accuracy = evaluate(&bin, &ckpt.path, &model_args).await?;
    // Workers leave on their own once told training finished; make sure of it.
    for (_, mut child) in workers {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    let _ = server.kill().await;
    let steps = last.step.max(1);
    Ok(Summary {
        mode,
        workers: layout.workers,
        replication: layout.replication,
        target: layout.target,
        blocks: layout.blocks,
        steps: last.step,
        final_test_accuracy: accuracy,
        final_loss: last.loss,
        mean_step_ms: last.mean_step_ms,
        stragglers_skipped: last.stragglers_skipped,
        late_gradients_dropped: last.late_gradients_dropped,
        redundant_gradients_dropped: last.redundant_gradients_dropped,
        workers_killed: run.killed.len() as u64,
        repairs: run.repairs,
        rebalances: run.rebalances,
        coverage_held_every_step: run.coverage_ok,
        gradients_per_step: last.gradients_received as f64 / steps as f64,
        wall_seconds: started.elapsed().as_secs_f64(),
        param_sha256: last.param_sha256,
    })
}

#[derive(Default)]
struct RunState {
    step: u64,
    progress: Progress,
    live: BTreeSet<u32>,
    killed: BTreeSet<u32>,
    /// Replacement workers and the join count their id had when they were started.
    awaiting_join: BTreeMap<u32, u64>,
    coverage_ok: bool,
    repairs: u64,
    rebalances: u64,
}

impl RunState {
    /// Checks coverage for every step completed since the last report, and shows progress.
    fn record_steps(&mut self, p: &Progress, layout: &Layout, bar: &ProgressBar, every: u64) {
        let cov = verify(layout, &self.live);
        self.coverage_ok &= cov.holds;
        bar.set_position(p.step);
        bar.set_message(format!(
            "loss {:.3}  epoch {}  margin {}",
            p.loss, layout.epoch, cov.margin
        ));
        if every > 0 && (self.step + 1..=p.step).any(|s| s % every == 0 || s == 1) {
            let skipped = if p.skipped_last_step.is_empty() {
                "none".to_string()
            } else {
                p.skipped_last_step
                    .iter()
                    .map(|w| format!("w{w}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            say(
                bar,
                format!(
                    "step {:>4}/{}  loss {:.4}  epoch {}  coverage {} (margin {})  skipped {}  {:.1} ms/step",
                    p.step,
                    p.total_steps,
                    p.loss,
                    layout.epoch,
                    if cov.holds { "ok" } else { "LOST" },
                    cov.margin,
                    skipped,
                    p.mean_step_ms
                ),
            );
        }
        self.step = p.step;
    }
}

fn joins(p: &Progress, worker: u32) -> u64 {
    p.workers
        .iter()
        .find(|w| w.worker == worker)
        .map_or(0, |w| w.joins)
}

async fn push(control: &mut ControlClient<Channel>, layout: &Layout) -> Result<(), LocalError> {
    let wire = anyk_proto::layout_to_wire(layout);
    control
        .set_layout(SetLayoutRequest { layout: Some(wire) })
        .await?;
    Ok(())
}

fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
}

fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>5}/{len} steps  {msg}  [{elapsed}]")
            .expect("valid template"),
    );
    bar
}

fn describe(faults: &Faults) -> String {
    let mut parts: Vec<String> = faults
        .stragglers
        .iter()
        .map(|s| format!("worker {} {}x slower", s.worker, s.factor))
        .collect();
    parts.extend(
        faults
            .kills
            .iter()
            .map(|k| format!("worker {} killed at step {}", k.worker, k.step)),
    );
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn moves_text(moves: &[anyk_core::Move]) -> String {
    moves
        .iter()
        .map(|m| format!("b{}->w{}", m.block, m.to))
        .collect::<Vec<_>>()
        .join(" ")
}

fn workdir(args: &LocalArgs) -> Result<PathBuf, LocalError> {
    let dir = args
        .workdir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("anyk-local-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|source| LocalError::Io {
        what: format!("create {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

/// Block files for this run: the given directory, or a split of the given (or bundled) file.
fn prepare_data(args: &LocalArgs, workdir: &Path) -> Result<PathBuf, LocalError> {
    let input = args.data.clone().unwrap_or_else(bundled_digits);
    if input.is_dir() {
        let manifest =
            std::fs::read_to_string(input.join("manifest.json")).map_err(|source| LocalError::Io {
                what: format!("read {}/manifest.json", input.display()),
                source,
            })?;
        let blocks = serde_json::from_str::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["blocks"].as_u64());
        if blocks != Some(u64::from(args.blocks)) {
            return Err(LocalError::Invalid(format!(
                "{} holds {blocks:?} blocks but --blocks is {}",
                input.display(),
                args.blocks
            )));
        }
        return Ok(input);
    }
    let out = workdir.join("data");
    data_split::run(&SplitArgs {
        input,
        blocks: args.blocks,
        out: out.clone(),
        test_fraction: 0.2,
        seed: 0,
    })?;
    Ok(out)
}

/// The digits data set shipped in the repository (data/digits.csv.gz).
fn bundled_digits() -> PathBuf {
    std::env::var_os("ANYK_DATA_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz"))
}
