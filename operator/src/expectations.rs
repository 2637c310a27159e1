//! The operator's own pod changes that its watch cache has not shown yet. A pass that read the
//! cache before the watch delivered a pod the previous pass created would see that pod missing,
//! and a missing pod of a running job is a lost worker: a false repair. So each created or
//! deleted pod is remembered until the cache shows it (or for at most `PATIENCE`, in case the
//! watch never will: a pod deleted by someone else before the watch saw it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::TrainingJob;

const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// A pod with this UID must show up.
    Created(String),
    /// The pod with this UID must go, or be terminating.
    Deleted(String),
}

#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Vec<(Change, Instant)>>>);

fn key(job: &TrainingJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

impl Expectations {
    pub fn created(&self, job: &TrainingJob, pod: &Pod) {
        self.expect(job, pod.metadata.uid.clone().map(Change::Created));
    }

    pub fn deleted(&self, job: &TrainingJob, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            // A pod deleted before the cache showed its creation never will show it.
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pending) = all.get_mut(&key(job)) {
                pending.retain(|(change, _)| change != &Change::Created(uid.clone()));
            }
        }
        self.expect(job, pod.metadata.uid.clone().map(Change::Deleted));
    }

    fn expect(&self, job: &TrainingJob, change: Option<Change>) {
        if let Some(change) = change {
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            all.entry(key(job)).or_default().push((change, Instant::now()));
        }
    }

    /// Whether a watch event about `pod` only echoes a change this operator made and still
    /// expects (a pod it created, not yet running; a pod it deleted): it needs no pass of its own.
    pub fn echoes(&self, pod: &Pod) -> bool {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return false;
        };
        let fresh = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending");
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.values().flatten().any(|(change, _)| match change {
            Change::Created(created) => created == uid && fresh && pod.metadata.deletion_timestamp.is_none(),
            Change::Deleted(deleted) => deleted == uid,
        })
    }

    /// Whether `cached` (the job's pods in the cache) shows every change made for `job`;
    /// forgets the ones it shows.
    pub fn met(&self, job: &TrainingJob, cached: &[Arc<Pod>]) -> bool {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pending) = all.get_mut(&key(job)) else {
            return true;
        };
        let live = |uid: &str| {
            cached
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none())
        };
        let shown = |change: &Change| match change {
            Change::Created(uid) => cached
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid.as_str())),
            Change::Deleted(uid) => !live(uid),
        };
        pending.retain(|(change, at)| {
            let waiting = !shown(change);
            if waiting && at.elapsed() >= PATIENCE {
                tracing::warn!(job = %key(job), ?change, "the watch cache never showed this change; deciding without it");
            }
            waiting && at.elapsed() < PATIENCE
        });
        let met = pending.is_empty();
        if met {
            all.remove(&key(job));
        }
        met
    }
}

#[cfg(test)]
mod tests {
    use anyk_testkit::training_job;
    use serde_json::json;

    use super::*;

    fn pod(uid: &str, terminating: bool) -> Arc<Pod> {
        let mut pod: Pod =
            serde_json::from_value(json!({ "metadata": { "name": "p", "uid": uid } })).unwrap();
        if terminating {
            pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        Arc::new(pod)
    }

    #[test]
    fn a_pass_waits_until_the_cache_shows_its_own_changes() {
        let job: TrainingJob = training_job("j").namespace("ns").build();
        let expectations = Expectations::default();
        assert!(expectations.met(&job, &[]));
        expectations.deleted(&job, &pod("old", false));
        expectations.created(&job, &pod("new", false));
        assert!(!expectations.met(&job, &[pod("old", false)]), "neither shown");
        assert!(
            !expectations.met(&job, &[pod("old", true)]),
            "the new pod not yet"
        );
        assert!(expectations.met(&job, &[pod("new", false)]));
        assert!(expectations.met(&job, &[]), "forgotten once met");
        // Created, then deleted before the cache showed it: nothing left to wait for.
        expectations.created(&job, &pod("brief", false));
        expectations.deleted(&job, &pod("brief", false));
        assert!(expectations.met(&job, &[]));
    }
}
