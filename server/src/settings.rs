//! What a job trains: fixed when the server starts.

use anyk_core::GradientPrecision;
use anyk_core::job::JobConfig;
use anyk_core::optimizer::OptimizerConfig;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Who the job is (`--job-id`): part of the checkpoints' job digest, so that another job
    /// never resumes them.
    pub job_id: Option<String>,
    pub seed: u64,
    pub batch_size: u32,
    pub total_steps: u64,
    pub blocks: u32,
    pub optimizer: OptimizerConfig,
    /// Write a checkpoint after every this many steps (0: only on demand, at the end and on shutdown).
    pub checkpoint_every: u64,
    /// Accept a block's gradient only once two holders sent the same bits (docs/design.md,
    /// invariant 7).
    pub strict: bool,
    /// A worker outvoted this many times since it joined is reported faulty.
    pub faulty_after: u64,
    /// Scale each step's reduced gradient down to this L2 norm when it is longer (`None`: no
    /// clipping). Deterministic: the norm is summed in f64 in index order.
    pub clip_norm: Option<f32>,
    /// What a whole unit's gradient sum travels in (docs/design.md, "Reduced-precision
    /// gradients"); the server rounds units assembled from parts itself.
    pub gradients: GradientPrecision,
}

impl Settings {
    /// Small, predictable settings for tests: plain SGD with learning rate 1, so an update is
    /// exactly params - mean gradient; seed 7, batch 4, 100 steps, no periodic checkpoints, not
    /// strict, faulty after 2 outvotes, no clipping.
    pub fn predictable(blocks: u32) -> Self {
        Self {
            job_id: None,
            seed: 7,
            batch_size: 4,
            total_steps: 100,
            blocks,
            optimizer: OptimizerConfig::sgd(1.0, 0.0),
            checkpoint_every: 0,
            strict: false,
            faulty_after: 2,
            clip_norm: None,
            gradients: GradientPrecision::F32,
        }
    }

    /// Why these settings cannot train, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.strict && self.gradients == GradientPrecision::Bf16 {
            return Err("bf16 gradients cannot be combined with strict mode: strict mode accepts a block once two holders sent the same f32 bits, block by block, and bf16 rounds whole units".into());
        }
        Ok(())
    }

    /// What decides the result, as checkpoints record it and a resume compares it (total steps,
    /// checkpoint cadence, strict mode and fault reporting do not change a step's result).
    pub fn job_config(&self) -> JobConfig {
        JobConfig {
            job_id: self.job_id.clone(),
            seed: self.seed,
            batch: self.batch_size,
            blocks: self.blocks,
            optimizer: self.optimizer,
            gradients: self.gradients,
        }
    }
}
