//! Optimizers on flat f32 parameter vectors. Plain Rust arithmetic in a fixed order, so the
//! parameter server's update is deterministic and checkpointable without libtorch.

use serde::{Deserialize, Serialize};

use crate::tensor_bytes::first_non_finite;

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

crate::names::named_values!(OptimizerKind, UnknownOptimizer, "optimizer", {
    Adam => "adam",
    Sgd => "sgd",
});

impl OptimizerKind {
    /// The configuration of this rule; `momentum` applies to SGD only.
    pub fn config(self, lr: f32, momentum: f32) -> OptimizerConfig {
        match self {
            Self::Adam => OptimizerConfig::adam(lr),
            Self::Sgd => OptimizerConfig::sgd(lr, momentum),
        }
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

    /// Applies one update to `params` with the aggregated `gradient`, in place.
    pub fn apply(&mut self, params: &mut [f32], gradient: &[f32]) {
        self.updates += 1;
        match Rule::at(self.config, self.updates) {
            Rule::Sgd { lr, momentum } => {
                for ((p, g), v) in params.iter_mut().zip(gradient).zip(&mut self.first_moment) {
                    (*p, *v) = sgd(*p, *g, *v, lr, momentum);
                }
            }
            Rule::Adam(adam) => {
                let moments = self.first_moment.iter_mut().zip(&mut self.second_moment);
                for ((p, g), (m, v)) in params.iter_mut().zip(gradient).zip(moments) {
                    (*p, *m, *v) = adam.step(*p, *g, *m, *v);
                }
            }
        }
    }

    /// The first value one update with `gradient` would make non-finite, computed with exactly
    /// `apply`'s arithmetic but writing nothing: the server checks a step before applying it in
    /// place, so that a refused step leaves the last good state intact without a copy of it
    /// (three model-sized buffers at every step boundary).
    pub fn first_non_finite_update(&self, params: &[f32], gradient: &[f32]) -> Option<NonFiniteUpdate> {
        // A branch-free pass first (it vectorizes); the search only when it found something.
        let all_finite = match Rule::at(self.config, self.updates + 1) {
            Rule::Sgd { lr, momentum } => {
                params
                    .iter()
                    .zip(gradient)
                    .zip(&self.first_moment)
                    .fold(true, |ok, ((p, g), v)| {
                        let (p, v) = sgd(*p, *g, *v, lr, momentum);
                        ok & p.is_finite() & v.is_finite()
                    })
            }
            Rule::Adam(adam) => {
                let moments = self.first_moment.iter().zip(&self.second_moment);
                params
                    .iter()
                    .zip(gradient)
                    .zip(moments)
                    .fold(true, |ok, ((p, g), (m, v))| {
                        let (p, m, v) = adam.step(*p, *g, *m, *v);
                        ok & p.is_finite() & m.is_finite() & v.is_finite()
                    })
            }
        };
        if all_finite {
            return None;
        }
        let mut next_params = params.to_vec();
        let mut next = self.clone();
        next.apply(&mut next_params, gradient);
        if let Some((index, value)) = first_non_finite(&next_params) {
            return Some(NonFiniteUpdate::Params { index, value });
        }
        let moments: Vec<f32> = next
            .first_moment
            .iter()
            .chain(&next.second_moment)
            .copied()
            .collect();
        first_non_finite(&moments).map(|(index, value)| NonFiniteUpdate::Moments { index, value })
    }
}

/// What an update would make non-finite ([`Optimizer::first_non_finite_update`]); a moment's
/// index counts the first moments, then the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NonFiniteUpdate {
    Params { index: usize, value: f32 },
    Moments { index: usize, value: f32 },
}

/// One SGD-with-momentum element: the next parameter and velocity.
#[inline(always)]
fn sgd(p: f32, g: f32, v: f32, lr: f32, momentum: f32) -> (f32, f32) {
    let v = momentum * v + g;
    (p - lr * v, v)
}

/// The update rule at one update count, with its constants worked out once.
enum Rule {
    Sgd { lr: f32, momentum: f32 },
    Adam(Adam),
}

impl Rule {
    fn at(config: OptimizerConfig, updates: u64) -> Self {
        match config {
            OptimizerConfig::Sgd { lr, momentum } => Self::Sgd { lr, momentum },
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let t = updates as i32;
                Self::Adam(Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    c1: 1.0 - beta1.powi(t),
                    c2: 1.0 - beta2.powi(t),
                })
            }
        }
    }
}

/// Adam's constants at one update count.
struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
}

impl Adam {
    /// One element: the next parameter, first moment and second moment.
    #[inline(always)]
    fn step(&self, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let m = self.beta1 * m + (1.0 - self.beta1) * g;
        let v = self.beta2 * v + (1.0 - self.beta2) * g * g;
        (
            p - self.lr * (m / self.c1) / ((v / self.c2).sqrt() + self.eps),
            m,
            v,
        )
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

    #[test]
    fn an_update_is_checked_without_being_written() {
        let opt = Optimizer::new(OptimizerConfig::adam(0.01), 2);
        let p = vec![1.0, 2.0];
        assert_eq!(opt.first_non_finite_update(&p, &[3.0, -0.5]), None);
        // g * g overflows the second moment of element 1 (index 2 + 1 among the moments).
        let found = opt.first_non_finite_update(&p, &[3.0, 3e38]);
        assert!(matches!(found, Some(NonFiniteUpdate::Moments { index: 3, value }) if value.is_infinite()));
        // A huge learning rate overflows the parameter itself.
        let sgd = Optimizer::new(OptimizerConfig::sgd(3e38, 0.0), 2);
        let found = sgd.first_non_finite_update(&p, &[0.0, -10.0]);
        assert!(matches!(found, Some(NonFiniteUpdate::Params { index: 1, value }) if value.is_infinite()));
        // Nothing was written: the same optimizer still applies cleanly.
        let (mut q, mut opt) = (p.clone(), opt);
        opt.apply(&mut q, &[3.0, -0.5]);
        assert_eq!(opt.updates, 1);
    }
}
