//! Optimizers on flat f32 parameter vectors. Plain Rust arithmetic in a fixed order, so the
//! parameter server's update is deterministic and checkpointable without libtorch.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The update rule: `adam` (betas 0.9 and 0.999, epsilon 1e-8) or `sgd` (with momentum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    // No `///` on the variants: with them schemars writes a `oneOf` instead of a plain `enum`,
    // which a CRD's structural schema does not want.
    Adam,
    Sgd,
}

impl OptimizerKind {
    pub const ALL: [Self; 2] = [Self::Adam, Self::Sgd];

    /// The name on the command line and in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adam => "adam",
            Self::Sgd => "sgd",
        }
    }

    /// The configuration of this rule; `momentum` applies to SGD only.
    pub fn config(self, lr: f32, momentum: f32) -> OptimizerConfig {
        match self {
            Self::Adam => OptimizerConfig::adam(lr),
            Self::Sgd => OptimizerConfig::sgd(lr, momentum),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown optimizer {0:?} (expected adam or sgd)")]
pub struct UnknownOptimizer(pub String);

impl FromStr for OptimizerKind {
    type Err = UnknownOptimizer;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownOptimizer(name.to_string()))
    }
}

/// Which update rule and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Sgd {
        lr: f32,
        momentum: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
}

impl OptimizerConfig {
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn sgd(lr: f32, momentum: f32) -> Self {
        Self::Sgd { lr, momentum }
    }
}

/// An optimizer with its state (momentum buffer, or Adam moments and step count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub updates: u64,
    pub first_moment: Vec<f32>,
    pub second_moment: Vec<f32>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: usize) -> Self {
        let second = if matches!(config, OptimizerConfig::Adam { .. }) {
            params
        } else {
            0
        };
        Self {
            config,
            updates: 0,
            first_moment: vec![0.0; params],
            second_moment: vec![0.0; second],
        }
    }

    /// Applies one update to `params` with the aggregated `gradient`.
    pub fn apply(&mut self, params: &mut [f32], gradient: &[f32]) {
        let (next_params, next) = self.updated(params, gradient);
        params.copy_from_slice(&next_params);
        *self = next;
    }

    /// The parameters and optimizer after one update with `gradient`, as new values: `self` and
    /// `params` stay as they were (the server keeps the last good state when a step would not be
    /// finite). One pass per output, each vectorizable, instead of copying the state and
    /// updating the copies in place (the server does this every step, under the job lock).
    pub fn updated(&self, params: &[f32], gradient: &[f32]) -> (Vec<f32>, Self) {
        let updates = self.updates + 1;
        let (next_params, first_moment, second_moment) = match self.config {
            OptimizerConfig::Sgd { lr, momentum } => {
                let v: Vec<f32> = self
                    .first_moment
                    .iter()
                    .zip(gradient)
                    .map(|(v, g)| momentum * v + g)
                    .collect();
                let p = params.iter().zip(&v).map(|(p, v)| p - lr * v).collect();
                (p, v, Vec::new())
            }
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let t = updates as i32;
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                let m: Vec<f32> = self
                    .first_moment
                    .iter()
                    .zip(gradient)
                    .map(|(m, g)| beta1 * m + (1.0 - beta1) * g)
                    .collect();
                let v: Vec<f32> = self
                    .second_moment
                    .iter()
                    .zip(gradient)
                    .map(|(v, g)| beta2 * v + (1.0 - beta2) * g * g)
                    .collect();
                let p = params
                    .iter()
                    .zip(m.iter().zip(&v))
                    .map(|(p, (m, v))| p - lr * (m / c1) / ((v / c2).sqrt() + eps))
                    .collect();
                (p, m, v)
            }
        };
        let next = Self {
            config: self.config,
            updates,
            first_moment,
            second_moment,
        };
        (next_params, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_names_round_trip_and_match_serde() {
        for kind in OptimizerKind::ALL {
            assert_eq!(kind.to_string().parse::<OptimizerKind>(), Ok(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        let err = "rmsprop".parse::<OptimizerKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown optimizer \"rmsprop\" (expected adam or sgd)"
        );
        assert_eq!(
            OptimizerKind::Sgd.config(0.1, 0.5),
            OptimizerConfig::sgd(0.1, 0.5)
        );
    }

    #[cfg(feature = "schema")]
    #[test]
    fn the_schema_is_a_plain_enum_of_the_names() {
        let schema = serde_json::to_value(schemars::schema_for!(OptimizerKind)).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["adam", "sgd"]), "{schema}");
    }

    #[test]
    fn sgd_with_momentum_accumulates_velocity() {
        let mut opt = Optimizer::new(OptimizerConfig::sgd(0.1, 0.9), 1);
        let mut p = vec![1.0];
        opt.apply(&mut p, &[1.0]);
        assert!((p[0] - 0.9).abs() < 1e-6);
        opt.apply(&mut p, &[1.0]);
        assert!((p[0] - (0.9 - 0.1 * 1.9)).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr_in_sign_direction() {
        let mut opt = Optimizer::new(OptimizerConfig::adam(0.01), 2);
        let mut p = vec![0.0, 0.0];
        opt.apply(&mut p, &[3.0, -0.5]);
        assert!((p[0] + 0.01).abs() < 1e-5 && (p[1] - 0.01).abs() < 1e-5, "{p:?}");
    }
}
