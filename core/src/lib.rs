//! anyk's sans-IO core. Everything here is a plain function of plain data, shared by the operator,
//! the parameter server, the workers and the command line, and tested without a network or cluster.
//!
//! - [`layout`]: where the r copies of the m blocks live, so that any k of n workers cover all blocks.
//! - [`coverage`]: how many more workers may be lost right now.
//! - [`repair`]: a new layout after losses (only lost copies move) or joins (minimal moves).
//! - [`reduction`]: the job's fixed reduction tree: in which association gradients are summed.
//! - [`aggregate`]: exact, order-independent reduction of one step's gradients along that tree.
//! - [`precision`]: gradients in f32 or rounded to bfloat16 at the tree's units.
//! - [`heal`]: the self-healing policy shared by the operator and `anyk local`.
//! - [`optimizer`], [`minibatch`], [`checkpoint`], [`digest`]: the deterministic training arithmetic.
//! - [`dataset`]: a data set's files and manifest on disk.
//! - [`history`]: the run's curve and layout changes, kept in its checkpoint for `anyk plot`.
//! - [`job`]: what decides a job's result, and the digest a checkpoint carries of it.

pub mod aggregate;
pub mod checkpoint;
pub mod coverage;
pub mod dataset;
pub mod digest;
pub mod heal;
pub mod history;
pub mod job;
pub mod layout;
pub mod minibatch;
pub mod model_contract;
mod names;
pub mod numerics;
pub mod optimizer;
pub mod part;
pub mod precision;
pub mod reduction;
pub mod repair;
pub mod tensor_bytes;

pub use coverage::{Coverage, coverage_of};
pub use heal::{Healing, WorkerState, heal, ready_workers};
pub use layout::{Layout, PlanError, Scheme, plan, uncoded};
pub use model_contract::ModelContract;
pub use numerics::Numerics;
pub use optimizer::OptimizerKind;
pub use precision::GradientPrecision;
pub use reduction::ReductionTree;
pub use repair::{Move, RepairError, rebalance, repair};
