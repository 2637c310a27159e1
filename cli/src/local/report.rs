//! What a local run prints while it runs: a progress bar on stderr and event lines on stdout.

use std::path::{Path, PathBuf};

use anyk_core::{Coverage, Layout, Move};
use anyk_proto::v1::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::node_type;
use super::{Faults, LocalArgs};

/// Prints `line` on stdout without tearing the progress bar.
pub fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
}

pub fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    // The template is a constant; should it not parse, the bar keeps indicatif's default style.
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>5}/{len} steps  {msg}  [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar
}

/// Draws the run from its final checkpoint as `run.png` in `workdir`; returns where. A picture
/// that cannot be drawn is said on stderr and does not fail the trained run.
pub fn plot(checkpoint: &Path, workdir: &Path) -> Option<PathBuf> {
    let out = workdir.join("run.png");
    match crate::plot::plot_checkpoint(checkpoint, &out) {
        Ok(()) => Some(out),
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            eprintln!("anyk local: no picture of the run: {text}");
            None
        }
    }
}

/// The status line printed every `--every` steps.
pub fn status_line(p: &Progress, epoch: u64, cov: &Coverage) -> String {
    let skipped = if p.skipped_last_step.is_empty() {
        "none".to_string()
    } else {
        p.skipped_last_step
            .iter()
            .map(|w| format!("w{w}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "step {:>4}/{}  loss {:.4}  epoch {}  coverage {} (margin {})  skipped {}  {:.1} ms/step",
        p.step,
        p.total_steps,
        p.loss,
        epoch,
        if cov.holds { "ok" } else { "LOST" },
        cov.margin,
        skipped,
        p.mean_step_ms
    )
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
    parts.extend(
        faults
            .corruptions
            .iter()
            .map(|c| format!("worker {} corrupt from step {}", c.worker, c.step)),
    );
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub fn moves_text(moves: &[Move]) -> String {
    moves
        .iter()
        .map(|m| format!("b{}->w{}", m.block, m.to))
        .collect::<Vec<_>>()
        .join(" ")
}

/// "worker 3" or "workers 2, 6".
pub fn workers_text(workers: &[u32]) -> String {
    let ids: Vec<String> = workers.iter().map(u32::to_string).collect();
    match ids.as_slice() {
        [one] => format!("worker {one}"),
        _ => format!("workers {}", ids.join(", ")),
    }
}

/// The line a run starts with: the job, its checks, its faults, where its logs are.
pub fn first_line(mode: &str, layout: &Layout, args: &LocalArgs, faults: &Faults, logs: &Path) -> String {
    format!(
        "anyk local: {mode}, n={} r={} k={} m={} blocks, {} steps; {}; faults: {}; logs in {}",
        layout.workers,
        layout.replication,
        layout.target_workers,
        layout.blocks,
        args.steps,
        checks_text(args),
        describe(faults),
        logs.display()
    )
}

/// "numerics reproducible, strict, nodes w0 default, w1 avx2" for the run's first line.
fn checks_text(args: &LocalArgs) -> String {
    let mut parts = vec![format!("numerics {}", args.numerics)];
    if args.strict {
        parts.push("strict".into());
    }
    if args.gradient_precision != anyk_core::GradientPrecision::F32 {
        parts.push(format!("{} gradients", args.gradient_precision));
    }
    if !args.node_type.is_empty() {
        parts.push(format!("nodes {}", node_type::describe(&args.node_type)));
    }
    parts.join(", ")
}
