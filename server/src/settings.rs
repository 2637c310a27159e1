//! What a job trains: fixed when the server starts.

use anyk_core::optimizer::OptimizerConfig;

#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub batch_size: u32,
    pub total_steps: u64,
    pub blocks: u32,
    pub optimizer: OptimizerConfig,
    /// Write a checkpoint after every this many steps (0: only on demand, at the end and on shutdown).
    pub checkpoint_every: u64,
}
