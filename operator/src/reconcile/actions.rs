//! What a pass decided, as plain data: the [`Actions`] the apply step carries out and what
//! comes after them.

use std::collections::BTreeSet;
use std::time::Duration;

use anyk_core::Layout;
use k8s_openapi::jiff::Timestamp;

use crate::crd::TrainingJobStatus;
use crate::observe::Observed;

/// Everything a pass read before deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The status as the apiserver has it (not the watch cache: the layout must never step back).
    pub status: TrainingJobStatus,
    pub observed: Observed,
    /// A server outside the cluster to call instead of the job's own (the endpoint annotation,
    /// when the operator allows it).
    pub external_server: Option<String>,
    /// Why the operator's pod policy refuses the job, if it does.
    pub policy_violation: Option<String>,
    /// Objects with the job's names or labels that the job does not own ("Kind name"): never
    /// taken over, reported instead.
    pub foreign: BTreeSet<String>,
    /// The job's own Service and NetworkPolicies that are already as wanted ("Kind name").
    pub current: BTreeSet<String>,
    /// The job's resourceVersion as read: status is written only over it.
    pub resource_version: Option<String>,
    /// The helper Jobs the read step looked at.
    pub helpers: super::helpers::Helpers,
    pub now: Timestamp,
}

/// An Event to record on the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

/// How a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deletion {
    /// SIGTERM and the pod's grace period: a suspended server writes its final checkpoint.
    Graceful,
    /// At once: a lost pod's node may never confirm a graceful deletion, and its replacement has
    /// the same name. Should the old process still run somewhere, the server fences it off: it
    /// refuses gradients of another layout epoch (docs/design.md, invariant 3).
    Now,
}

/// When to look at the job again, unless something it watches changes first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    AwaitChange,
    After(Duration),
}

/// What a pass does, in the order the apply step carries it out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Actions {
    /// Written first, before anything is acted on: should a later action fail, the next pass
    /// starts from it and never counts the same loss twice (docs/design.md, invariant 6).
    pub status: Option<TrainingJobStatus>,
    pub notes: Vec<Note>,
    pub delete_pods: Vec<(String, Deletion)>,
    /// Apply the Service and NetworkPolicies (except foreign ones, named "Kind name"), and create
    /// these absent pods.
    pub apply_children: bool,
    pub foreign: BTreeSet<String>,
    /// Already as wanted: not applied again.
    pub current: BTreeSet<String>,
    pub create_pods: BTreeSet<String>,
    /// Helper Jobs to create (`{job}-stage`, `{job}-export`).
    pub create_helpers: Vec<crate::children::Helper>,
    /// ttlSecondsAfterFinished has run out.
    pub delete_job: bool,
    /// Workers repaired around in this pass (for the repair metric).
    pub repaired: u32,
    pub server_replaced: bool,
}

/// A job being trained, as the first half of its pass left it for the server step.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    pub layout: Layout,
    pub ready: BTreeSet<u32>,
    /// The status the first half wrote.
    pub status: TrainingJobStatus,
    /// Whether the server is there to ask (its pod is ready, or it runs outside the cluster).
    pub ask_server: bool,
    /// Where to ask it.
    pub endpoint: String,
    /// Pods are being replaced or are not all ready yet: look again soon.
    pub hurry: bool,
    /// The soonest a NotReady node's grace runs out.
    pub recheck: Option<Duration>,
}

/// What comes after the actions of the first half.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    Done(Next),
    /// Push the layout to the server, read its progress, then [`after_server`].
    AskServer(Box<Training>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Actions,
    pub then: Then,
}
