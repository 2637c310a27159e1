//! The Events a pass records: what users read in `kubectl get events` about their job.

use anyk_core::heal::Healing;

use super::actions::{Deletion, Note};
use crate::crd::{TrainingJob, WorkerIncarnation};
use crate::observe::Observed;

pub fn healing_notes(healing: &Healing) -> Vec<Note> {
    let mut notes = Vec::new();
    if !healing.lost.is_empty() {
        let lost = &healing.lost;
        notes.push(if healing.coverage_lost {
            let message = format!(
                "workers {lost:?} lost: fewer than targetWorkers remain, so the server waits until replacements are ready"
            );
            note(true, "CoverageLost", "Heal", &message)
        } else {
            let message = format!(
                "workers {lost:?} lost: layout repaired to epoch {}, {} block copies moved; replacement pods created",
                healing.layout.epoch,
                healing.repair_moves.len()
            );
            note(true, "LayoutRepaired", "Heal", &message)
        });
    }
    if !healing.joined.is_empty() {
        let message = format!(
            "replacement workers {:?} ready: rebalanced in at epoch {}",
            healing.joined, healing.layout.epoch
        );
        notes.push(note(false, "WorkersRejoined", "Heal", &message));
    }
    notes
}

pub fn faulty_notes(faulty: &[WorkerIncarnation]) -> Vec<Note> {
    faulty
        .iter()
        .map(|f| {
            let message = format!(
                "worker {} (join {}) was outvoted repeatedly by the other holders of its blocks: its results are not trusted; replaced",
                f.worker, f.joins
            );
            note(true, "FaultyWorkerReplaced", "Heal", &message)
        })
        .collect()
}

/// Why the pods being replaced failed, when their container said (its termination message,
/// or the end of its log): the first thing a user needs when a pod cannot even start.
pub fn failure_notes(deleted: &[(String, Deletion)], observed: &Observed) -> Vec<Note> {
    deleted
        .iter()
        .filter_map(|(pod, _)| Some((pod, observed.errors.get(pod)?)))
        .map(|(pod, line)| note(true, "PodFailed", "Heal", &format!("{pod} failed: {line}")))
        .collect()
}

pub fn server_replaced_note(job: &TrainingJob) -> Note {
    let message = if job.spec.training.checkpoint_claim.is_some() {
        "the parameter-server pod failed; replaced, it resumes from its newest checkpoint"
    } else {
        "the parameter-server pod failed; replaced, it starts over (no training.checkpointClaim)"
    };
    note(true, "ServerReplaced", "Heal", message)
}

pub fn note(warning: bool, reason: &'static str, action: &'static str, message: &str) -> Note {
    Note {
        warning,
        reason,
        action,
        message: message.to_string(),
    }
}
