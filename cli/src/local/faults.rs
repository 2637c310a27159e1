//! Fault flags of `anyk local`: `--straggle W:FACTOR`, `--kill W@STEP` and `--corrupt W@STEP`.

use std::str::FromStr;

/// Worker W is FACTOR times slower for the whole run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straggler {
    pub worker: u32,
    pub factor: f64,
}

impl FromStr for Straggler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (w, f) = s
            .split_once(':')
            .ok_or_else(|| format!("--straggle {s:?}: expected W:FACTOR, e.g. 3:5"))?;
        let worker = w
            .parse()
            .map_err(|_| format!("--straggle {s:?}: worker {w:?} is not a number"))?;
        let factor: f64 = f
            .parse()
            .map_err(|_| format!("--straggle {s:?}: factor {f:?} is not a number"))?;
        if !(factor >= 1.0 && factor.is_finite()) {
            return Err(format!("--straggle {s:?}: factor must be at least 1"));
        }
        Ok(Self { worker, factor })
    }
}

/// Worker W is killed (SIGKILL) once the job reaches STEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub worker: u32,
    pub step: u64,
}

impl FromStr for Kill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (w, t) = s
            .split_once('@')
            .ok_or_else(|| format!("--kill {s:?}: expected W@STEP, e.g. 4@100"))?;
        let worker = w
            .parse()
            .map_err(|_| format!("--kill {s:?}: worker {w:?} is not a number"))?;
        let step = t
            .parse()
            .map_err(|_| format!("--kill {s:?}: step {t:?} is not a number"))?;
        Ok(Self { worker, step })
    }
}

/// Worker W computes wrong bits from STEP on (one flipped bit per gradient), as a bad core or
/// GPU would; its replacement is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    pub worker: u32,
    pub step: u64,
}

impl FromStr for Corrupt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (w, t) = s
            .split_once('@')
            .ok_or_else(|| format!("--corrupt {s:?}: expected W@STEP, e.g. 2@30"))?;
        let worker = w
            .parse()
            .map_err(|_| format!("--corrupt {s:?}: worker {w:?} is not a number"))?;
        let step = t
            .parse()
            .map_err(|_| format!("--corrupt {s:?}: step {t:?} is not a number"))?;
        if step == 0 {
            return Err(format!("--corrupt {s:?}: steps count from 1"));
        }
        Ok(Self { worker, step })
    }
}

/// The faults a run injects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub stragglers: Vec<Straggler>,
    pub kills: Vec<Kill>,
    pub corruptions: Vec<Corrupt>,
}

impl Faults {
    /// The demo's faults: one persistent 5x straggler, and one worker killed a third of the way in.
    pub fn default_for(workers: u32, steps: u64) -> Self {
        Self {
            stragglers: vec![Straggler {
                worker: 1,
                factor: 5.0,
            }],
            kills: vec![Kill {
                worker: workers / 2,
                step: steps / 3,
            }],
            corruptions: Vec::new(),
        }
    }

    /// Rejects faults that name workers outside 0..n.
    pub fn check(&self, workers: u32) -> Result<(), String> {
        let bad = self
            .stragglers
            .iter()
            .map(|s| s.worker)
            .chain(self.kills.iter().map(|k| k.worker))
            .chain(self.corruptions.iter().map(|c| c.worker))
            .find(|&w| w >= workers);
        match bad {
            Some(w) => Err(format!("fault names worker {w}, but workers are 0..{workers}")),
            None => Ok(()),
        }
    }

    pub fn straggle_factor(&self, worker: u32) -> f64 {
        self.stragglers
            .iter()
            .filter(|s| s.worker == worker)
            .map(|s| s.factor)
            .fold(1.0, f64::max)
    }

    /// `--corrupt-from` of `worker`'s first incarnation. `anyk local` numbers steps from 1 as
    /// it prints them (step N is the one that makes N updates); the worker's flag takes the
    /// protocol's step, the number of updates the step starts from, so `W@N` becomes N-1.
    pub fn corrupt_from(&self, worker: u32) -> Option<u64> {
        self.corruptions
            .iter()
            .filter(|c| c.worker == worker)
            .map(|c| c.step.saturating_sub(1))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_the_problem() {
        assert_eq!(
            "3:5".parse::<Straggler>().unwrap(),
            Straggler {
                worker: 3,
                factor: 5.0
            }
        );
        assert_eq!("4@100".parse::<Kill>().unwrap(), Kill { worker: 4, step: 100 });
        assert!("3".parse::<Straggler>().unwrap_err().contains("W:FACTOR"));
        assert!("3:0.5".parse::<Straggler>().unwrap_err().contains("at least 1"));
        assert!("x@1".parse::<Kill>().unwrap_err().contains("not a number"));
        assert_eq!(
            "2@30".parse::<Corrupt>().unwrap(),
            Corrupt { worker: 2, step: 30 }
        );
        assert!("2:30".parse::<Corrupt>().unwrap_err().contains("W@STEP"));
        assert!("2@0".parse::<Corrupt>().unwrap_err().contains("from 1"));
        let faults = Faults {
            kills: vec![Kill { worker: 9, step: 1 }],
            ..Faults::default()
        };
        assert!(faults.check(8).unwrap_err().contains("worker 9"));
        let faults = Faults {
            corruptions: vec![Corrupt { worker: 8, step: 1 }],
            ..Faults::default()
        };
        assert!(faults.check(8).unwrap_err().contains("worker 8"));
        assert_eq!(faults.corrupt_from(8), Some(0));
        assert_eq!(faults.corrupt_from(0), None);
    }
}
