//! What the supervisor reads from the server's replica checks (docs/design.md, invariant 7):
//! when holders of a block first sent different bits, and which workers the server reports
//! faulty (outvoted too often) and are to be replaced, once per incarnation.

use std::collections::BTreeSet;

use anyk_proto::v1::{Progress, WorkerStats};

/// A worker the server reports faulty, not handled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faulty {
    pub worker: u32,
    pub outvoted: u64,
    pub disagreements: u64,
}

impl Faulty {
    /// The line printed when it is replaced.
    pub fn line(&self, step: u64) -> String {
        format!(
            "step {step:>4}: worker {} faulty (outvoted {} times, disagreements {}): replaced",
            self.worker, self.outvoted, self.disagreements
        )
    }
}

#[derive(Debug, Default)]
pub struct ReplicaWatch {
    /// The step of the first report that counted a disagreement.
    pub first_disagreement: Option<u64>,
    /// (worker, its join count) already handled: the server keeps reporting a worker faulty
    /// until its id joins again, and the replacement must not be taken for it.
    handled: BTreeSet<(u32, u64)>,
    /// Faulty workers whose process was replaced.
    pub replaced: u64,
    /// Replace the workers the server reports faulty. Off with `--numerics native`: workers on
    /// different node types then legitimately compute different bits, and outvoting says which
    /// node type is in the minority, not which worker is broken.
    pub replace_faulty: bool,
}

impl ReplicaWatch {
    /// Reads one progress report: the line to print when it shows the job's first disagreement,
    /// and the faulty workers not handled yet (each returned once per incarnation).
    pub fn observe(&mut self, p: &Progress) -> (Option<String>, Vec<Faulty>) {
        let mut line = None;
        if p.replica_disagreements > 0 && self.first_disagreement.is_none() {
            self.first_disagreement = Some(p.step);
            line = Some(format!(
                "step {:>4}: first replica disagreement: {} block copy(ies) differ{}",
                p.step,
                p.replica_disagreements,
                who_disagreed(&p.workers)
            ));
        }
        let faulty = p
            .workers
            .iter()
            .filter(|w| w.faulty && self.handled.insert((w.worker, w.joins)))
            .map(|w| Faulty {
                worker: w.worker,
                outvoted: w.outvoted,
                disagreements: w.disagreements,
            })
            .collect();
        (line, faulty)
    }
}

/// " (w2 outvoted 1, w5 disagreed 1)", or nothing when no worker is named.
fn who_disagreed(workers: &[WorkerStats]) -> String {
    let named: Vec<String> = workers
        .iter()
        .filter(|w| w.disagreements > 0)
        .map(|w| match w.outvoted {
            0 => format!("w{} disagreed {}", w.worker, w.disagreements),
            n => format!("w{} outvoted {n}", w.worker),
        })
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" ({})", named.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(worker: u32, joins: u64, outvoted: u64, faulty: bool) -> WorkerStats {
        WorkerStats {
            worker,
            joins,
            disagreements: outvoted,
            outvoted,
            faulty,
            ..WorkerStats::default()
        }
    }

    #[test]
    fn first_disagreement_and_each_faulty_incarnation_once() {
        let mut watch = ReplicaWatch::default();
        let clean = Progress {
            step: 4,
            workers: vec![stats(2, 1, 0, false)],
            ..Progress::default()
        };
        assert_eq!(watch.observe(&clean), (None, vec![]));
        let bad = Progress {
            step: 5,
            replica_disagreements: 2,
            workers: vec![stats(1, 1, 0, false), stats(2, 1, 2, true)],
            ..Progress::default()
        };
        let (line, faulty) = watch.observe(&bad);
        let line = line.unwrap();
        assert!(
            line.contains("step    5") && line.contains("w2 outvoted 2"),
            "{line}"
        );
        assert_eq!(faulty.len(), 1);
        assert_eq!(
            faulty[0].line(5),
            "step    5: worker 2 faulty (outvoted 2 times, disagreements 2): replaced"
        );
        // Still reported faulty until the replacement joins: not handled again.
        assert_eq!(
            watch.observe(&Progress {
                step: 6,
                ..bad.clone()
            }),
            (None, vec![])
        );
        assert_eq!(watch.first_disagreement, Some(5));
        // The replacement (joined a second time) goes bad as well: handled again.
        let again = Progress {
            workers: vec![stats(2, 2, 2, true)],
            ..bad
        };
        assert_eq!(watch.observe(&again).1.len(), 1);
    }
}
