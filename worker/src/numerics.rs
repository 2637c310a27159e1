//! Applies the numerics profile ([`anyk_core::Numerics`]) to this process. The profile is
//! environment variables that libtorch, MKL, oneDNN and OpenMP read when they load, before any
//! Rust code could set them (and setting the environment of a running process is unsafe), so
//! the worker re-executes itself once with the profile in place: same binary, same arguments,
//! same PID (a supervisor's handle stays valid).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyk_core::Numerics;
use anyk_core::numerics::REPRODUCIBLE_ENV;
use tch::Device;

/// Set in the re-executed process: the profile was applied (and must now be in place).
pub const APPLIED_MARKER: &str = "ANYK_NUMERICS_APPLIED";

#[derive(Debug, thiserror::Error)]
pub enum NumericsError {
    #[error("failed to locate this executable to apply the reproducible numerics profile")]
    Locate(#[source] std::io::Error),
    #[error("failed to re-execute {exe} with the reproducible numerics profile")]
    Exec {
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the reproducible numerics profile was applied, but {name} is {found:?} instead of {want:?}")]
    NotApplied {
        name: &'static str,
        found: Option<String>,
        want: &'static str,
    },
}

/// What this process must do for `numerics`, given its environment (`var` looks one up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on: the profile is in place, or none is wanted.
    Proceed,
    /// Re-execute with the profile's environment.
    Reexec,
}

/// Decides whether the environment already carries the profile. Pure, for tests: a process
/// that was re-executed (the marker is set) but lacks a profile variable is an error rather
/// than a loop.
pub fn action(numerics: Numerics, var: impl Fn(&str) -> Option<String>) -> Result<Action, NumericsError> {
    if numerics == Numerics::Native {
        return Ok(Action::Proceed);
    }
    let missing = REPRODUCIBLE_ENV
        .iter()
        .find(|(name, want)| var(name).as_deref() != Some(*want));
    match (missing, var(APPLIED_MARKER).is_some()) {
        (None, _) => Ok(Action::Proceed),
        (Some(_), false) => Ok(Action::Reexec),
        (Some(&(name, want)), true) => Err(NumericsError::NotApplied {
            name,
            found: var(name),
            want,
        }),
    }
}

/// Applies `numerics` to this process: returns when the process may go on (native, or the
/// profile is in place); otherwise replaces the process image and does not return unless
/// that failed. Call it first thing in `main`, before anything touches libtorch.
pub fn apply(numerics: Numerics) -> Result<(), NumericsError> {
    if action(numerics, |name| std::env::var(name).ok())? == Action::Proceed {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(NumericsError::Locate)?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("anyk-worker"));
    let source = Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .envs(REPRODUCIBLE_ENV)
        .env(APPLIED_MARKER, "1")
        .exec();
    Err(NumericsError::Exec {
        exe: exe.display().to_string(),
        source,
    })
}

/// The switches that live inside libtorch rather than in the environment. On CUDA under the
/// profile: cuDNN's autotuner off (it may pick a different algorithm per run). tch 0.24 has
/// no binding for deterministic algorithms or the TF32 switches: cuBLAS is made deterministic
/// by the profile's `CUBLAS_WORKSPACE_CONFIG`, and libtorch's matmul default is already
/// without TF32.
pub fn apply_in_torch(numerics: Numerics, device: Device) {
    if numerics == Numerics::Reproducible && device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(false);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn native_changes_nothing_and_reproducible_reexecs_once() {
        let bare = env(&[("ATEN_CPU_CAPABILITY", "avx512")]);
        let look = |e: &HashMap<String, String>| {
            let e = e.clone();
            move |name: &str| e.get(name).cloned()
        };
        assert_eq!(action(Numerics::Native, look(&bare)).unwrap(), Action::Proceed);
        assert_eq!(
            action(Numerics::Reproducible, look(&bare)).unwrap(),
            Action::Reexec
        );
        let mut applied = env(&REPRODUCIBLE_ENV);
        applied.insert(APPLIED_MARKER.into(), "1".into());
        assert_eq!(
            action(Numerics::Reproducible, look(&applied)).unwrap(),
            Action::Proceed
        );
        // Already in place without the marker (a launcher set it): nothing to do.
        assert_eq!(
            action(Numerics::Reproducible, look(&env(&REPRODUCIBLE_ENV))).unwrap(),
            Action::Proceed
        );
        // Re-executed, yet a variable differs: an error that names it, not another exec.
        applied.insert("MKL_CBWR".into(), "AVX2".into());
        let err = action(Numerics::Reproducible, look(&applied)).unwrap_err();
        assert!(err.to_string().contains("MKL_CBWR"), "{err}");
    }
}
