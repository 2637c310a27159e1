//! The numerics profile of a worker: which library settings decide the bits of its gradients.
//! Every holder of a block must compute the same bits (docs/design.md, invariant 7), or the
//! first copy to arrive decides the model. The reproducible profile pins every setting that
//! varies between node types; the worker applies it to itself before libtorch starts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Numerics {
    #[default]
    Reproducible,
    Native,
}

/// The environment of the reproducible profile on CPU and CUDA (values measured on this
/// project's machines; see the README's "Numerics" section):
/// - libtorch's own kernels: the baseline (non-vectorized-beyond-SSE) capability instead of the
///   AVX2 or AVX-512 kernels it would pick per CPU;
/// - MKL (libtorch's BLAS on x86-64): conditional numerical reproducibility, the code path
///   every Intel-compatible CPU runs the same way, and the same instruction set;
/// - oneDNN: no ISA beyond SSE4.1;
/// - OpenMP: one thread (the summation order of a parallel reduction depends on it);
/// - CUDA: cuBLAS with a fixed workspace (deterministic split-K) and no TF32; the worker also
///   turns off cuDNN's benchmark mode (tch 0.24 has no switch for deterministic algorithms).
pub const REPRODUCIBLE_ENV: [(&str, &str); 8] = [
    ("ATEN_CPU_CAPABILITY", "default"),
    ("MKL_CBWR", "COMPATIBLE"),
    ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
    ("ONEDNN_MAX_CPU_ISA", "SSE41"),
    ("DNNL_MAX_CPU_ISA", "SSE41"),
    ("OMP_NUM_THREADS", "1"),
    ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
    // tch exposes no TF32 switch; this environment variable turns TF32 off in cuBLAS and cuDNN.
    ("NVIDIA_TF32_OVERRIDE", "0"),
];

crate::names::named_values!(Numerics, UnknownNumerics, "numerics profile", {
    Reproducible => "reproducible",
    Native => "native",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for n in Numerics::ALL {
            assert_eq!(n.to_string().parse::<Numerics>(), Ok(n));
            assert_eq!(serde_json::to_string(&n).unwrap(), format!("\"{n}\""));
        }
        assert!(
            "fast"
                .parse::<Numerics>()
                .unwrap_err()
                .to_string()
                .contains("\"fast\"")
        );
        assert_eq!(Numerics::default(), Numerics::Reproducible);
    }
}
