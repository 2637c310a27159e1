//! The decide step, pure: from what a pass read (the job, its fresh status, its pods and their
//! nodes, the time) to what it does (the status to write, the Events, the pods to delete and to
//! create, whether to ask the server) and when to look again. No I/O and no clock here, so every
//! case is a unit test (`decide_tests.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyk_core::heal::{Healing, WorkerState, heal, ready_workers};
use anyk_core::{Layout, Numerics, plan};
use k8s_openapi::jiff::Timestamp;

pub use super::actions::{Actions, Decision, Deletion, Next, Note, Seen, Then, Training};
use super::failure;
use super::foreign::report_foreign;
use super::halt::{fail, finished, given_up, refuse, suspend};
use super::helpers;
use super::notes::{failure_notes, faulty_notes, healing_notes, note, server_replaced_note};
use super::restore::restore;

use crate::children;
use crate::crd::{Repair, TrainingJob, TrainingJobStatus, WorkerIncarnation};
use crate::status::{self, Facts, ServerState, phase};

/// Polling intervals: soon while pods are replaced, regularly for progress, slowly otherwise.
const HURRY: Duration = Duration::from_secs(2);
const POLL_PROGRESS: Duration = Duration::from_secs(5);
const POLL_IDLE: Duration = Duration::from_secs(10);
const RESUME_WAIT: Duration = Duration::from_secs(1);
/// Faulty incarnations remembered as replaced.
const MAX_REPLACED_FAULTY: usize = 64;

/// The first half of a pass.
pub fn decide(job: &TrainingJob, seen: &Seen) -> Decision {
    if failure::failed_for_good(&seen.status) {
        return given_up(job, seen);
    }
    if let Some(message) = non_finite(&seen.status) {
        // Before any healing: the workers idle once the server stopped taking gradients, and
        // replacing them would only crash-loop on the same step.
        return fail(job, seen, &seen.status, failure::NON_FINITE, &message, Vec::new());
    }
    if claims_success_falsely(&seen.status) {
        // Edited by hand (nothing the operator writes looks like this): keep managing the job.
        let mut sane = seen.clone();
        sane.status.phase = None;
        let mut decision = decide(job, &sane);
        let message = "status said Succeeded but the server never reported the final step: still training";
        decision
            .actions
            .notes
            .insert(0, note(true, "InvalidStatus", "Restore", message));
        return decision;
    }
    let spec = &job.spec;
    // The CRD's CEL rules reject impossible jobs; this catches one that slipped past (an older
    // CRD) and waits for a change instead of retrying.
    let planned = match plan(
        spec.dataset.blocks,
        spec.replication,
        spec.workers,
        spec.target_workers,
    ) {
        Ok(layout) => layout,
        Err(err) => return refuse(job, seen, "InvalidSpec", &err.to_string()),
    };
    if let Some(violation) = &seen.policy_violation {
        return refuse(job, seen, "PolicyViolation", violation);
    }
    let was = seen.status.phase.as_deref();
    if was == Some(phase::SUCCEEDED) {
        let (mut actions, mut next) = finished(job, &seen.status, seen.now);
        helpers::export(job, seen, &mut actions, &mut next);
        return Decision {
            actions,
            then: Then::Done(next),
        };
    }
    if spec.suspend {
        return suspend(job, seen);
    }
    let resuming = was == Some(phase::SUSPENDED);
    if resuming && !seen.observed.terminating.is_empty() {
        // The pods suspend deleted are still going: they are not losses, and their replacements
        // (same names) cannot be created before they are gone.
        return Decision {
            actions: Actions::default(),
            then: Then::Done(Next::After(RESUME_WAIT)),
        };
    }
    // No training pod before the data is there (docs/design.md, "Data in, model out").
    match helpers::stage(job, seen) {
        Err(hold) => *hold,
        Ok(None) => train_after_healing(job, seen, planned, resuming),
        Ok(Some(status)) => {
            let staged = Seen {
                status,
                ..seen.clone()
            };
            train_after_healing(job, &staged, planned, resuming)
        }
    }
}

/// Restores the layout, heals it with what the pods (and the server's faulty reports) say, and
/// decides the pass of a job that trains.
fn train_after_healing(job: &TrainingJob, seen: &Seen, planned: Layout, resuming: bool) -> Decision {
    let (layout, invalid_status) = match restore(planned, seen.status.layout.as_ref()) {
        Ok(layout) => (layout, None),
        Err(replanned) => (replanned.layout, Some(replanned.reason)),
    };
    // After a resume every pod is missing because suspend deleted it, not because it was lost.
    let created = seen.status.layout.is_some() && !resuming;
    // A worker the server reports faulty is replaced like a lost one (invariant 7).
    // Not with native numerics: node types then legitimately differ, and the minority is a node
    // type, not a broken worker.
    let faulty = if job.spec.training.numerics == Numerics::Reproducible {
        faulty_to_replace(&seen.status)
    } else {
        Vec::new()
    };
    let mut workers = seen.observed.workers.clone();
    for f in &faulty {
        if let Some(state) = workers.get_mut(f.worker as usize) {
            *state = WorkerState::Failed;
        }
    }
    let healing = heal(&layout, &workers, created);
    let mut decision = train(job, seen, &workers, &healing, &faulty);
    if let Some(reason) = invalid_status {
        let message = format!(
            "the layout in status is not valid ({reason}): replanned at epoch {}",
            layout.epoch
        );
        decision
            .actions
            .notes
            .insert(0, note(true, "InvalidStatus", "Restore", &message));
    }
    decision
}

/// What the server reported when it refused a step that would have made the parameters
/// non-finite, as the Failed condition's message.
fn non_finite(status: &TrainingJobStatus) -> Option<String> {
    let failure = status.progress.as_ref()?.failure.as_ref()?;
    Some(format!(
        "training failed at step {}: {}; the step was not applied and the checkpoints keep the parameters from before it",
        failure.step, failure.reason
    ))
}

/// Phase Succeeded without the server's report of the final step behind it.
fn claims_success_falsely(status: &TrainingJobStatus) -> bool {
    let reported = status
        .progress
        .as_ref()
        .is_some_and(|p| p.total_steps > 0 && p.step >= p.total_steps);
    status.phase.as_deref() == Some(phase::SUCCEEDED) && !reported
}

/// Faulty worker incarnations in the server's last report that were not replaced yet.
fn faulty_to_replace(status: &TrainingJobStatus) -> Vec<WorkerIncarnation> {
    let reported = status
        .progress
        .as_ref()
        .map_or(&[][..], |p| &p.faulty_workers[..]);
    reported
        .iter()
        .filter(|f| !status.replaced_faulty.contains(f))
        .cloned()
        .collect()
}

/// The second half, once the server was asked (or not): progress into status, success, and when
/// to look again.
pub fn after_server(
    job: &TrainingJob,
    training: &Training,
    server: ServerState,
    now: Timestamp,
) -> (Actions, Next) {
    let reachable = matches!(server, ServerState::Reachable { .. });
    let facts = Facts {
        layout: &training.layout,
        ready: &training.ready,
        server,
        now,
    };
    let with_progress = status::running(job, &training.status, &facts);
    let changed = with_progress != training.status;
    let disagreements = |s: &TrainingJobStatus| s.progress.as_ref().map_or(0, |p| p.replica_disagreements);
    let new_disagreements = disagreements(&with_progress).saturating_sub(disagreements(&training.status));
    if with_progress.phase.as_deref() == Some(phase::SUCCEEDED) {
        let (mut actions, next) = finished(job, &with_progress, now);
        actions.notes.insert(
            0,
            note(false, "Succeeded", "Train", "the server reported the final step"),
        );
        actions.status = changed.then_some(with_progress);
        return (actions, next);
    }
    let mut again = if training.hurry {
        HURRY
    } else if reachable {
        POLL_PROGRESS
    } else {
        POLL_IDLE
    };
    if let Some(recheck) = training.recheck {
        again = again.min(recheck + Duration::from_millis(100));
    }
    if non_finite(&with_progress).is_some() {
        // The next pass fails the job; no reason to wait for it.
        again = Duration::ZERO;
    }
    let mut actions = Actions {
        status: changed.then_some(with_progress),
        ..Actions::default()
    };
    if new_disagreements > 0 {
        let message = format!(
            "{new_disagreements} more block copies differed from another holder's copy of the same block"
        );
        actions
            .notes
            .push(note(true, "ReplicasDisagree", "Verify", &message));
    }
    (actions, Next::After(again))
}

/// A running (or starting) job after healing: the repaired status, Events, replacements.
fn train(
    job: &TrainingJob,
    seen: &Seen,
    workers: &[WorkerState],
    healing: &Healing,
    faulty: &[WorkerIncarnation],
) -> Decision {
    let observed = &seen.observed;
    let ready = ready_workers(workers);
    let server_failed = observed.server == WorkerState::Failed;
    let mut status = healed_status(job, seen, healing, &ready, server_failed);
    remember_replaced(&mut status, faulty);
    let mut notes = faulty_notes(faulty);
    notes.extend(healing_notes(healing));
    let mut delete_pods: Vec<(String, Deletion)> = replaced_workers(healing, workers)
        .map(|w| (children::worker_name(job, w), Deletion::Now))
        .collect();
    if server_failed {
        notes.push(server_replaced_note(job));
        delete_pods.push((children::server_name(job), Deletion::Now));
    }
    notes.extend(failure_notes(&delete_pods, observed));
    let replaced: Vec<String> = delete_pods.iter().map(|(pod, _)| pod.clone()).collect();
    status.replacements = failure::history(&seen.status.replacements, &replaced, seen.now);
    if let Some((reason, message)) = verdict_with_cause(job, seen, &status, &replaced) {
        return fail(job, seen, &status, reason, &message, notes);
    }
    let (create_pods, retry) = pods_to_create(job, seen, &delete_pods, &status);
    report_foreign(job, seen, &mut status, &mut notes);
    let repaired = if healing.coverage_lost {
        0
    } else {
        healing.lost.len() as u32
    };
    let training = Training {
        layout: healing.layout.clone(),
        hurry: !healing.lost.is_empty() || server_failed || ready.len() < job.spec.workers as usize,
        ready,
        status: status.clone(),
        ask_server: observed.server == WorkerState::Ready || seen.external_server.is_some(),
        endpoint: seen
            .external_server
            .clone()
            .unwrap_or_else(|| children::control_endpoint(job)),
        recheck: [observed.recheck, retry].into_iter().flatten().min(),
    };
    let actions = Actions {
        status: Some(status),
        notes,
        delete_pods,
        apply_children: true,
        foreign: seen.foreign.clone(),
        current: seen.current.clone(),
        create_pods,
        create_helpers: Vec::new(),
        delete_job: false,
        repaired,
        server_replaced: server_failed,
    };
    Decision {
        actions,
        then: Then::AskServer(Box::new(training)),
    }
}

/// Records faulty incarnations as replaced, bounded (status must fit in etcd): a report is about
/// an incarnation that is gone once it was replaced, so only recent entries can still matter.
fn remember_replaced(status: &mut TrainingJobStatus, faulty: &[WorkerIncarnation]) {
    status.replaced_faulty.extend(faulty.iter().cloned());
    let excess = status.replaced_faulty.len().saturating_sub(MAX_REPLACED_FAULTY);
    status.replaced_faulty.drain(..excess);
}

/// Why the job fails now, if it does, with the first error line of a pod replaced in this pass.
fn verdict_with_cause(
    job: &TrainingJob,
    seen: &Seen,
    status: &TrainingJobStatus,
    replaced: &[String],
) -> Option<(&'static str, String)> {
    let (reason, mut message) = failure::verdict(job, status, &status.replacements, seen.now)?;
    let said = replaced
        .iter()
        .find_map(|pod| Some((pod, seen.observed.errors.get(pod)?)));
    if let Some((pod, line)) = said {
        message.push_str(&format!("; {pod} failed: {line}"));
    }
    Some((reason, message))
}

/// The absent pods to create now (pods are created when absent, never updated: a running pod's
/// spec cannot change, and an edited job or a new default image applies to the pods created from
/// then on), and how soon the ones still backing off may be created.
fn pods_to_create(
    job: &TrainingJob,
    seen: &Seen,
    deleted: &[(String, Deletion)],
    status: &TrainingJobStatus,
) -> (BTreeSet<String>, Option<Duration>) {
    let observed = &seen.observed;
    let absent = children::pod_names(job).filter(|pod| {
        (!observed.existing.contains(pod) || deleted.iter().any(|(d, _)| d == pod))
            && !seen.foreign.contains(&format!("Pod {pod}"))
    });
    let mut retry: Option<Duration> = None;
    let mut create = BTreeSet::new();
    for pod in absent {
        match failure::wait_before_creating(&pod, &status.replacements, seen.now) {
            Some(wait) => retry = Some(retry.map_or(wait, |r| r.min(wait))),
            None => {
                create.insert(pod);
            }
        }
    }
    (create, retry)
}

/// The status after a healing pass: the layout, the loss counters and the repair.
fn healed_status(
    job: &TrainingJob,
    seen: &Seen,
    healing: &Healing,
    ready: &BTreeSet<u32>,
    server_failed: bool,
) -> TrainingJobStatus {
    let facts = Facts {
        layout: &healing.layout,
        ready,
        server: ServerState::NotAsked,
        now: seen.now,
    };
    let mut status = status::running(job, &seen.status, &facts);
    status.start_time.get_or_insert_with(|| seen.now.to_string());
    let lost = healing.lost.len() as u32;
    status.workers.failed = status.workers.failed.saturating_add(lost);
    status.workers.replaced = status.workers.replaced.saturating_add(lost);
    status.server_restarts = status.server_restarts.saturating_add(u32::from(server_failed));
    if lost > 0 && !healing.coverage_lost {
        status.last_repair = Some(Repair {
            epoch: healing.layout.epoch,
            lost_workers: healing.lost.clone(),
            moved_blocks: healing.repair_moves.len() as u32,
            time: seen.now.to_string(),
        });
    }
    status
}

/// Lost workers, and replacements that failed before they were rebalanced in (no longer
/// members, so not lost again, but their pods must be replaced all the same).
fn replaced_workers<'a>(healing: &'a Healing, workers: &'a [WorkerState]) -> impl Iterator<Item = u32> + 'a {
    let failed_spares = (0..workers.len() as u32).filter(|w| {
        !healing.layout.members.contains(w)
            && !healing.lost.contains(w)
            && workers[*w as usize] == WorkerState::Failed
    });
    healing.lost.iter().copied().chain(failed_spares)
}
