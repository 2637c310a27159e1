//! `--node-type W:CAP`: emulates a heterogeneous cluster on one machine. Worker W's process runs
//! with the kernels a CPU of that type would pick: libtorch's vectorized kernels
//! (`ATEN_CPU_CAPABILITY`) and MKL's code path (`MKL_CBWR`, `MKL_ENABLE_INSTRUCTIONS`) and
//! oneDNN's ISA for that capability. The reproducible numerics profile overrides all of these
//! in the worker; with `--numerics native` they take effect.

use std::fmt;
use std::str::FromStr;

/// The instruction-set level of an emulated node (this machine must support it: a level above
/// the machine's falls back to what it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// A CPU without AVX: libtorch's baseline kernels, MKL's SSE4.2 path.
    Default,
    Avx2,
    Avx512,
}

impl Capability {
    const ALL: [Self; 3] = [Self::Default, Self::Avx2, Self::Avx512];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The environment a worker on such a node runs with.
    pub fn env(self) -> [(&'static str, &'static str); 4] {
        let (mkl, onednn) = match self {
            Self::Default => ("SSE4_2", "SSE41"),
            Self::Avx2 => ("AVX2", "AVX2"),
            Self::Avx512 => ("AVX512", "AVX512_CORE"),
        };
        [
            ("ATEN_CPU_CAPABILITY", self.as_str()),
            ("MKL_CBWR", mkl),
            ("MKL_ENABLE_INSTRUCTIONS", mkl),
            ("ONEDNN_MAX_CPU_ISA", onednn),
        ]
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Worker W runs as if on a node with capability CAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeType {
    pub worker: u32,
    pub capability: Capability,
}

impl FromStr for NodeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (w, cap) = s
            .split_once(':')
            .ok_or_else(|| format!("--node-type {s:?}: expected W:CAP, e.g. 2:avx2"))?;
        let worker = w
            .parse()
            .map_err(|_| format!("--node-type {s:?}: worker {w:?} is not a number"))?;
        let capability = Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == cap)
            .ok_or_else(|| format!("--node-type {s:?}: {cap:?} is not one of default, avx2, avx512"))?;
        Ok(Self { worker, capability })
    }
}

/// The node type of `worker` (the last flag naming it wins), if any.
pub fn node_of(types: &[NodeType], worker: u32) -> Option<Capability> {
    types
        .iter()
        .rev()
        .find(|t| t.worker == worker)
        .map(|t| t.capability)
}

/// Rejects node types that name workers outside 0..n.
pub fn check(types: &[NodeType], workers: u32) -> Result<(), String> {
    match types.iter().find(|t| t.worker >= workers) {
        Some(t) => Err(format!(
            "--node-type names worker {}, but workers are 0..{workers}",
            t.worker
        )),
        None => Ok(()),
    }
}

/// "w0 default, w1 avx2" for the run's first line.
pub fn describe(types: &[NodeType]) -> String {
    types
        .iter()
        .map(|t| format!("w{} {}", t.worker, t.capability))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_the_problem() {
        let t: NodeType = "3:avx512".parse().unwrap();
        assert_eq!(
            t,
            NodeType {
                worker: 3,
                capability: Capability::Avx512
            }
        );
        assert!("3".parse::<NodeType>().unwrap_err().contains("W:CAP"));
        assert!("3:sse".parse::<NodeType>().unwrap_err().contains("avx2"));
        assert!("x:avx2".parse::<NodeType>().unwrap_err().contains("not a number"));
        assert_eq!(node_of(&[t], 3), Some(Capability::Avx512));
        assert_eq!(node_of(&[t], 2), None);
        let env = Capability::Avx2.env();
        assert!(env.contains(&("ATEN_CPU_CAPABILITY", "avx2")) && env.contains(&("MKL_CBWR", "AVX2")));
        assert_eq!(describe(&[t]), "w3 avx512");
        assert!(check(&[t], 3).unwrap_err().contains("worker 3"));
        assert!(check(&[t], 4).is_ok());
    }
}
