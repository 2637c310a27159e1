//! Plays the operator for a local run: pushes the layout, injects faults, and heals with the
//! core's policy ([`anyk_core::heal`]): repairs after a worker dies, starts its replacement and
//! rebalances onto it once it joined; then collects the summary.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyk_core::{Layout, Numerics, WorkerState, coverage_of, heal, plan, uncoded};
use anyk_proto::launch::EvaluateLaunch;
use anyk_proto::v1::{
    CheckpointRequest, Progress, ProgressRequest, SetLayoutRequest, control_client::ControlClient,
};
use indicatif::ProgressBar;
use tonic::transport::Channel;

use super::fleet::Fleet;
use super::node_type;
use super::policy::{Replacements, backoff_failure};
use super::processes::{bin_dir, evaluate, start_job};
use super::replicas::ReplicaWatch;
use super::report::{self, first_line, moves_text, progress_bar, say, status_line, workers_text};
use super::workdir::Workdir;
use super::{Baseline, Kill, LocalArgs, LocalError, Summary};

/// A run that makes no progress for this long has failed (and says where its logs are).
const STALL: Duration = Duration::from_secs(90);

pub async fn run(args: &LocalArgs) -> Result<Summary, LocalError> {
    let started = Instant::now();
    let coded = plan(args.blocks, args.replication, args.workers, args.target)?;
    // The baseline keeps the coded plan's units, so both reduce in the same association.
    let layout = match args.baseline {
        Some(Baseline::Sync) => uncoded(&coded),
        None => coded,
    };
    let faults = args.faults();
    faults.check(args.workers).map_err(LocalError::Invalid)?;
    node_type::check(&args.node_type, args.workers).map_err(LocalError::Invalid)?;
    let dirs = Workdir::prepare(args)?;
    let bin = bin_dir()?;
    let (mut server, control, launch) = start_job(args, &dirs, &bin, &layout).await?;
    let model = launch.model.clone();
    let nodes = args.node_type.clone();
    let fleet = Fleet::start(
        bin.clone(),
        dirs.logs.clone(),
        launch,
        args.workers,
        nodes,
        &faults,
    )?;

    let mode = match args.baseline {
        Some(Baseline::Sync) => "baseline sync (uncoded)".to_string(),
        None => format!("coded, {:?}", layout.scheme).to_lowercase(),
    };
    let bar = progress_bar(args.steps);
    say(&bar, first_line(&mode, &layout, args, &faults, &dirs.logs));
    let mut kills = faults.kills.clone();
    kills.sort_by_key(|k| k.step);
    let mut supervisor = Supervisor::new(control, layout, fleet, bar, args, kills, &dirs.logs);
    supervisor.replicas.replace_faulty = args.numerics == Numerics::Reproducible;
    let last = supervisor.supervise().await;
    supervisor.bar.finish_and_clear();
    let last = match last {
        Ok(last) => last,
        Err(err) => {
            // Nothing outlives a failed run.
            supervisor.fleet.stop().await;
            let _ = server.kill().await;
            return Err(err);
        }
    };

    let ckpt = supervisor
        .control
        .checkpoint(CheckpointRequest {})
        .await?
        .into_inner();
    let plot = report::plot(Path::new(&ckpt.path), &dirs.root);
    let evaluation = EvaluateLaunch {
        checkpoint: ckpt.path.into(),
        samples: None,
        model,
    };
    let evaluation = evaluate(&bin, &evaluation).await?;
    supervisor.fleet.finish().await;
    let _ = server.kill().await;
    let summary = supervisor.summary(args, mode, &last, evaluation, started);
    Ok(Summary { plot, ..summary })
}

struct Supervisor {
    control: ControlClient<Channel>,
    layout: Layout,
    fleet: Fleet,
    bar: ProgressBar,
    every: u64,
    /// Faults still to inject, by step.
    kills: Vec<Kill>,
    /// Replacements made and due, and when the job has failed.
    replacements: Replacements,
    logs: String,
    /// The last step whose coverage was checked.
    step: u64,
    progress: Progress,
    killed: BTreeSet<u32>,
    replicas: ReplicaWatch,
    coverage_ok: bool,
    repairs: u64,
    rebalances: u64,
}

impl Supervisor {
    fn new(
        control: ControlClient<Channel>,
        layout: Layout,
        fleet: Fleet,
        bar: ProgressBar,
        args: &LocalArgs,
        kills: Vec<Kill>,
        logs: &Path,
    ) -> Self {
        Self {
            control,
            layout,
            fleet,
            bar,
            every: args.every,
            kills,
            // The deadline counts from here: the server and the workers are started.
            replacements: Replacements::new(args.limits(), Instant::now()),
            logs: logs.display().to_string(),
            step: 0,
            progress: Progress::default(),
            killed: BTreeSet::new(),
            replicas: ReplicaWatch::default(),
            coverage_ok: true,
            repairs: 0,
            rebalances: 0,
        }
    }

    /// Watches the job until it finished; returns its last progress.
    async fn supervise(&mut self) -> Result<Progress, LocalError> {
        let mut stream = self
            .control
            .watch_progress(ProgressRequest {})
            .await?
            .into_inner();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last_change = Instant::now();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let p = msg?.ok_or_else(|| LocalError::Process(format!(
                        "the server closed its progress stream; see {}", self.logs
                    )))?;
                    if p.step > self.step {
                        last_change = Instant::now();
                    }
                    self.on_progress(p).await?;
                    if self.progress.finished {
                        return Ok(self.progress.clone());
                    }
                }
                _ = tick.tick() => {
                    if last_change.elapsed() > STALL {
                        return Err(LocalError::Process(format!(
                            "no progress for {STALL:?}; see the logs in {}", self.logs
                        )));
                    }
                    self.on_tick().await?;
                }
            }
        }
    }

    /// A progress report: check coverage, inject the kills that are due, replace the workers
    /// reported faulty, heal with the workers that joined.
    async fn on_progress(&mut self, p: Progress) -> Result<(), LocalError> {
        // A step the server refused as non-finite: no replacement can change that.
        if !p.failed_reason.is_empty() {
            return Err(LocalError::non_finite(&p, &self.logs));
        }
        if p.step > self.step {
            self.record_steps(&p);
        }
        // Before healing: a repair is reported at, and a replacement awaits a join after, this step.
        self.progress = p.clone();
        let killing = self.inject_kills(p.step).await;
        let replacing = self.kill_faulty(&p).await;
        if killing || replacing {
            // Handled at once rather than at the next tick: on a busy machine a tick can come
            // after the job has trained on (or finished) without the repair the run injects.
            self.on_tick().await?;
        }
        // One worker at a time, so each join is its own rebalance.
        for w in self.fleet.joined(&p) {
            self.fleet.set(w, WorkerState::Ready);
            self.replacements.joined(w);
            self.heal(p.step).await?;
        }
        Ok(())
    }

    /// Kills the workers whose kill is due; says whether there were any.
    async fn inject_kills(&mut self, step: u64) -> bool {
        let due: Vec<Kill> = self
            .kills
            .iter()
            .filter(|k| k.step <= step && !self.killed.contains(&k.worker))
            .copied()
            .collect();
        for k in &due {
            if self.fleet.kill(k.worker).await {
                let line = format!("step {step:>4}: killed worker {} (SIGKILL)", k.worker);
                say(&self.bar, line);
            }
            self.killed.insert(k.worker);
        }
        !due.is_empty()
    }

    /// Says when replicas first disagreed, and kills the workers the server newly reports
    /// faulty: they are then lost like any killed worker (repair, replacement, rebalance).
    /// Says whether it killed any.
    async fn kill_faulty(&mut self, p: &Progress) -> bool {
        let (first, faulty) = self.replicas.observe(p);
        if let Some(line) = first {
            say(&self.bar, line);
        }
        let mut killed = false;
        for f in faulty.into_iter().filter(|_| self.replicas.replace_faulty) {
            if self.fleet.kill(f.worker).await {
                say(&self.bar, f.line(p.step));
                self.replicas.replaced += 1;
                killed = true;
            }
        }
        killed
    }

    /// Every tick: workers whose process died are lost; heal, then start their replacements
    /// once their backoff passed. Fails the job past its deadline or backoff limit.
    async fn on_tick(&mut self) -> Result<(), LocalError> {
        let now = Instant::now();
        self.replacements.check_deadline(now)?;
        // One worker at a time, so each loss is its own repair.
        for w in self.fleet.reap() {
            self.fleet.set(w, WorkerState::Failed);
            if let Err(replaced) = self.replacements.failed(w, now) {
                let limits = self.replacements.limits();
                return Err(backoff_failure(limits, w, replaced, self.fleet.log_path(w)).into());
            }
            self.heal(self.progress.step).await?;
        }
        for w in self.replacements.take_due(now) {
            self.fleet.replace(w, &self.progress)?;
        }
        Ok(())
    }

    /// One pass of the healing policy over what the fleet looks like now; pushes the new layout
    /// and says what changed.
    async fn heal(&mut self, step: u64) -> Result<(), LocalError> {
        let before = self.layout.clone();
        let healing = heal(&before, self.fleet.states(), true);
        if healing.layout != before {
            self.layout = healing.layout.clone();
            push(&mut self.control, &self.layout).await?;
        }
        if !healing.lost.is_empty() {
            let lost = workers_text(&healing.lost);
            let line = if healing.coverage_lost {
                let live = before.members.len().saturating_sub(healing.lost.len());
                format!(
                    "step {step:>4}: {lost} lost; COVERAGE LOST ({live} live < k={}): aggregation waits for a replacement",
                    before.target_workers
                )
            } else {
                self.repairs += 1;
                let cov = coverage_of(&self.layout, &self.fleet.running());
                let moves = &healing.repair_moves;
                format!(
                    "step {step:>4}: {lost} lost; repair to epoch {}: {} copy(ies) moved ({}), margin {}",
                    self.layout.epoch,
                    moves.len(),
                    moves_text(moves),
                    cov.margin
                )
            };
            say(&self.bar, line);
        }
        if !healing.joined.is_empty() {
            self.rebalances += 1;
            let moved = copies_added(&before, &healing.layout);
            let them = if healing.joined.len() == 1 { "it" } else { "them" };
            say(
                &self.bar,
                format!(
                    "step {step:>4}: replacement {} joined; rebalance to epoch {}: {moved} block(s) moved to {them}",
                    workers_text(&healing.joined),
                    self.layout.epoch
                ),
            );
        }
        Ok(())
    }

    /// Checks coverage for every step completed since the last report, and shows progress.
    fn record_steps(&mut self, p: &Progress) {
        let cov = coverage_of(&self.layout, &self.fleet.running());
        self.coverage_ok &= cov.holds;
        self.bar.set_position(p.step);
        self.bar.set_message(format!(
            "loss {:.3}  epoch {}  margin {}",
            p.loss, self.layout.epoch, cov.margin
        ));
        let every = self.every;
        if every > 0 && (self.step + 1..=p.step).any(|s| s % every == 0 || s == 1) {
            say(&self.bar, status_line(p, self.layout.epoch, &cov));
        }
        self.step = p.step;
    }

    fn summary(
        &self,
        args: &LocalArgs,
        mode: String,
        last: &Progress,
        evaluation: super::processes::Evaluation,
        started: Instant,
    ) -> Summary {
        let layout = &self.layout;
        Summary {
            mode,
            numerics: args.numerics.to_string(),
            strict: last.strict,
            workers: layout.workers,
            replication: layout.replication,
            target: layout.target_workers,
            blocks: layout.blocks,
            steps: last.step,
            final_test_accuracy: evaluation.accuracy,
            final_test_loss: evaluation.loss,
            final_loss: last.loss,
            mean_step_ms: last.mean_step_ms,
            stragglers_skipped: last.stragglers_skipped,
            late_gradients_dropped: last.late_gradients_dropped,
            redundant_gradients_dropped: last.redundant_gradients_dropped,
            workers_killed: self.killed.len() as u64,
            repairs: self.repairs,
            rebalances: self.rebalances,
            coverage_held_every_step: self.coverage_ok,
            replica_disagreements: last.replica_disagreements,
            first_disagreement_step: self.replicas.first_disagreement,
            faulty_replaced: self.replicas.replaced,
            gradients_per_step: last.gradients_received as f64 / last.step.max(1) as f64,
            wall_seconds: started.elapsed().as_secs_f64(),
            param_sha256: last.param_sha256.clone(),
            plot: None,
        }
    }
}

/// Copies that `after` places on a worker that did not hold that block in `before`: what a
/// rebalance moved (each of its moves hands a block to a worker that lacked it).
fn copies_added(before: &Layout, after: &Layout) -> usize {
    before
        .holders
        .iter()
        .zip(&after.holders)
        .map(|(old, new)| new.iter().filter(|w| !old.contains(w)).count())
        .sum()
}

pub(super) async fn push(control: &mut ControlClient<Channel>, layout: &Layout) -> Result<(), LocalError> {
    let wire = anyk_proto::layout_to_wire(layout);
    control
        .set_layout(SetLayoutRequest { layout: Some(wire) })
        .await?;
    Ok(())
}
