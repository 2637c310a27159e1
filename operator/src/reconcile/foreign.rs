//! Objects with the job's names or labels that are not the job's own: never taken over, reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::actions::{Note, Seen};
use super::notes::note;
use crate::crd::{TrainingJob, TrainingJobStatus};
use crate::status;

/// Objects with the job's names or labels that belong to someone else: an Event and a condition.
pub(super) fn report_foreign(
    job: &TrainingJob,
    seen: &Seen,
    status: &mut TrainingJobStatus,
    notes: &mut Vec<Note>,
) {
    if !seen.foreign.is_empty() {
        let message = format!("left alone, not the job's own: {:?}", seen.foreign);
        notes.push(note(true, "OwnershipConflict", "Apply", &message));
    }
    status::set_condition(status, &seen.status, ownership_condition(job, seen));
}

/// OwnershipConflict: True while objects with the job's names or labels belong to someone else.
fn ownership_condition(job: &TrainingJob, seen: &Seen) -> Condition {
    let (ok, reason, message) = if seen.foreign.is_empty() {
        (false, "NoConflict", String::new())
    } else {
        let message = format!("not the job's own, left alone: {:?}", seen.foreign);
        (true, "ForeignObjects", message)
    };
    status::condition(job, "OwnershipConflict", ok, reason, &message, seen.now)
}
