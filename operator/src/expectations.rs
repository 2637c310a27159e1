//! The operator's own pod changes that its watch cache has not shown yet. A pass that read the
//! cache before the watch delivered a pod the previous pass created would see that pod missing,
//! and a missing pod of a running job is a lost worker: a false repair. So each created or
//! deleted pod is remembered until the cache shows it (or for at most `PATIENCE`, in case the
//! watch never will: a pod deleted by someone else before the watch saw it), and the read step
//! lays what the cache does not show yet over what it does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::TrainingJob;

const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// A pod with this UID (and name, and the resourceVersion of its creation) must show up.
    Created(String, String, Option<u64>),
    /// The pod with this UID must go, or be terminating.
    Deleted(String),
}

/// What the cache does not show yet of the operator's own changes to a job's pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unshown {
    /// Pods created but not in the cache yet (by name): they exist, starting.
    pub created: Vec<String>,
    /// Pods deleted but still live in the cache (by UID): they are going.
    pub deleted: Vec<String>,
}

#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Vec<(Change, Instant)>>>);

fn key(job: &TrainingJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

impl Expectations {
    pub fn created(&self, job: &TrainingJob, pod: &Pod) {
        let version = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        let change = pod
            .metadata
            .uid
            .clone()
            .map(|uid| Change::Created(uid, pod.name_any(), version));
        self.expect(job, change);
    }

    pub fn deleted(&self, job: &TrainingJob, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            // A pod deleted before the cache showed its creation never will show it.
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pending) = all.get_mut(&key(job)) {
                pending
                    .retain(|(change, _)| !matches!(change, Change::Created(created, ..) if created == uid));
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
            Change::Created(created, ..) => {
                created == uid && fresh && pod.metadata.deletion_timestamp.is_none()
            }
            Change::Deleted(deleted) => deleted == uid,
        })
    }

    /// What `cached` (the job's pods in the cache) does not show yet of the changes made for
    /// `job`; forgets the changes it shows, and those older than `PATIENCE`.
    /// `progress` is the newest resourceVersion the pod cache holds: a pod created at an older
    /// version and not in the cache was deleted again before the cache could show it (on kwok,
    /// a fake node finishing the deletion of the pod's same-named predecessor does that).
    pub fn unshown(&self, job: &TrainingJob, cached: &[Arc<Pod>], progress: Option<u64>) -> Unshown {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pending) = all.get_mut(&key(job)) else {
            return Unshown::default();
        };
        let has = |uid: &str| cached.iter().any(|p| p.metadata.uid.as_deref() == Some(uid));
        let live = |uid: &str| {
            cached
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none())
        };
        pending.retain(|(change, at)| {
            let waiting = match change {
                Change::Created(uid, _, at) => {
                    !has(uid) && at.zip(progress).is_none_or(|(at, now)| now <= at)
                }
                Change::Deleted(uid) => live(uid),
            };
            if waiting && at.elapsed() >= PATIENCE {
                tracing::warn!(job = %key(job), ?change, "the watch cache never showed this change");
            }
            waiting && at.elapsed() < PATIENCE
        });
        let mut unshown = Unshown::default();
        for (change, _) in pending.iter() {
            match change {
                Change::Created(_, name, _) => unshown.created.push(name.clone()),
                Change::Deleted(uid) => unshown.deleted.push(uid.clone()),
            }
        }
        if pending.is_empty() {
            all.remove(&key(job));
        }
        unshown
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
    fn what_the_cache_does_not_show_yet_is_reported_until_it_does() {
        let job: TrainingJob = training_job("j").namespace("ns").build();
        let expectations = Expectations::default();
        let none = Unshown::default();
        assert_eq!(expectations.unshown(&job, &[], None), none);
        expectations.deleted(&job, &pod("old", false));
        expectations.created(&job, &pod("new", false));
        let both = Unshown {
            created: vec!["p".into()],
            deleted: vec!["old".into()],
        };
        assert_eq!(
            expectations.unshown(&job, &[pod("old", false)], None),
            both,
            "neither shown"
        );
        let created_only = Unshown {
            created: vec!["p".into()],
            deleted: vec![],
        };
        assert_eq!(
            expectations.unshown(&job, &[pod("old", true)], None),
            created_only
        );
        assert_eq!(expectations.unshown(&job, &[pod("new", false)], None), none);
        assert_eq!(
            expectations.unshown(&job, &[], None),
            none,
            "forgotten once shown"
        );
        // Created, then deleted before the cache showed it: nothing left to wait for.
        expectations.created(&job, &pod("brief", false));
        expectations.deleted(&job, &pod("brief", false));
        assert_eq!(expectations.unshown(&job, &[], None), none);
    }
}
