//! What a local run reports at the end (and writes with `--summary`).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    /// The workers' numerics profile: `reproducible` or `native`.
    pub numerics: String,
    /// Whether the server ran in strict mode (as it reported).
    pub strict: bool,
    pub workers: u32,
    pub replication: u32,
    pub target: u32,
    pub blocks: u32,
    pub steps: u64,
    /// Classifiers (`--contract logits`) only.
    pub final_test_accuracy: Option<f64>,
    /// The model's loss on the test split.
    pub final_test_loss: f64,
    pub final_loss: f32,
    /// Mean time from a step's release to its aggregation, first step excluded (startup).
    pub mean_step_ms: f64,
    /// Worker-steps the server did not wait for.
    pub stragglers_skipped: u64,
    pub late_gradients_dropped: u64,
    pub redundant_gradients_dropped: u64,
    pub workers_killed: u64,
    pub repairs: u64,
    pub rebalances: u64,
    pub coverage_held_every_step: bool,
    /// Block copies whose bits differed from another holder's copy of the same block and step.
    pub replica_disagreements: u64,
    /// The step of the first progress report that counted a disagreement.
    pub first_disagreement_step: Option<u64>,
    /// Workers replaced because the server reported them faulty (outvoted too often).
    pub faulty_replaced: u64,
    /// Block gradients the server received per step, all workers together (m = no waste).
    pub gradients_per_step: f64,
    pub wall_seconds: f64,
    pub param_sha256: String,
    /// The picture of the run (`run.png` in the working directory), unless it failed to draw.
    pub plot: Option<std::path::PathBuf>,
}

impl Summary {
    pub fn print(&self) {
        println!("---- summary ({}) ----", self.mode);
        println!(
            "layout            n={} r={} k={} m={}",
            self.workers, self.replication, self.target, self.blocks
        );
        println!("steps             {}", self.steps);
        if let Some(accuracy) = self.final_test_accuracy {
            println!("test accuracy     {:.2}%", accuracy * 100.0);
        }
        println!("test loss         {:.4}", self.final_test_loss);
        println!("final loss        {:.4}", self.final_loss);
        println!("mean step         {:.2} ms", self.mean_step_ms);
        println!(
            "gradients/step    {:.1} (m = {})",
            self.gradients_per_step, self.blocks
        );
        println!(
            "stragglers skipped {} worker-steps; late gradients dropped {}",
            self.stragglers_skipped, self.late_gradients_dropped
        );
        println!(
            "workers killed    {}; repairs {}; rebalances {}",
            self.workers_killed, self.repairs, self.rebalances
        );
        println!(
            "numerics          {}{}",
            self.numerics,
            if self.strict { ", strict" } else { "" }
        );
        let first = self
            .first_disagreement_step
            .map_or(String::new(), |s| format!(" (first at step {s})"));
        println!(
            "replica checks    {} disagreement(s){first}; faulty workers replaced {}",
            self.replica_disagreements, self.faulty_replaced
        );
        println!(
            "coverage held     {}",
            if self.coverage_held_every_step {
                "every step"
            } else {
                "NOT every step"
            }
        );
        println!("wall time         {:.1} s", self.wall_seconds);
        if let Some(plot) = &self.plot {
            println!("plot              {}", plot.display());
        }
    }
}
