//! The read step: the job's fresh status, its pods and the health of their nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Resource, ResourceExt};

use super::Error;
use super::decide::Seen;
use super::read_helpers::read_helpers;
use crate::caches::Caches;
use crate::children::{self, external_endpoint};
use crate::controller::Context;
use crate::crd::TrainingJob;
use crate::observe::{NodeHealth, node_health, observe, overlay};
use crate::policy;

/// What a read found.
pub enum Read {
    Seen(Box<Seen>),
    /// Being deleted (the garbage collector removes its pods; they are not lost workers), or in
    /// no watched scope.
    Gone,
}

/// What the decide step needs.
pub async fn read(job: &TrainingJob, ctx: &Context) -> Result<Read, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Read::Gone);
    }
    let Some(caches) = ctx.caches_of(job) else {
        return Ok(Read::Gone);
    };
    caches.ready().await;
    let cached = caches.pods_of(job);
    // The cache may not show this operator's own latest creations and deletions yet: a pod it
    // just created would look missing, that is lost. What it does not show is laid over it.
    let unshown = ctx.expectations.unshown(job, &cached, caches.pods_progress());
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    // From the apiserver, not the watch cache: the cache may not have seen our own last write
    // yet, and the layout must never step back to an older epoch.
    let fresh = jobs
        .get_status(&job.name_any())
        .await
        .map_err(Error::ReadStatus)?;
    if fresh.metadata.deletion_timestamp.is_some() {
        return Ok(Read::Gone);
    }
    // Labels can be copied by anyone who may create pods here: only the job's own pods count.
    let (pods, labelled): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
        cached.into_iter().partition(|p| owned_by(job, &**p));
    let mut foreign: BTreeSet<String> = labelled.iter().map(|p| format!("Pod {}", p.name_any())).collect();
    let (foreign_shared, current) = shared_objects(job, ctx, &ns).await?;
    foreign.extend(foreign_shared);
    let now = Timestamp::now();
    let nodes = node_health_of(caches, &pods, now);
    let mut observed = observe(job.spec.workers, &pods, &nodes, now, ctx.settings.node_grace);
    overlay(&mut observed, job, &unshown, &pods);
    let status = fresh.status.unwrap_or_default();
    let helpers = read_helpers(job, &ctx.client, &ns, &status).await?;
    Ok(Read::Seen(Box::new(Seen {
        status,
        helpers,
        observed,
        external_server: external_endpoint(job, ctx.settings.allow_server_endpoint_annotation),
        policy_violation: policy::check(job, &ctx.settings.pod_policy).err(),
        resource_version: fresh.metadata.resource_version.clone(),
        foreign,
        current: current.into_iter().collect(),
        now,
    })))
}

/// Whether `object` is controlled by `job` (its controller owner reference has the job's UID).
pub(super) fn owned_by<K: Resource>(job: &TrainingJob, object: &K) -> bool {
    let uid = job.metadata.uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// The Service and NetworkPolicies with the job's names: those that belong to someone else (never
/// taken over) and those of the job's own that are already as wanted (not applied again), each
/// as "Kind name".
async fn shared_objects(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let (mut foreign, mut current) = (Vec::new(), Vec::new());
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let wanted = children::service(job);
    let name = wanted.name_any();
    match services.get_opt(&name).await.map_err(Error::Observe)? {
        Some(s) if !owned_by(job, &s) => foreign.push(format!("Service {name}")),
        Some(s) if children::same_service(&s, &wanted) => current.push(format!("Service {name}")),
        _ => {}
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let operator_ns = ctx.settings.operator_namespace.as_deref();
    for wanted in [
        children::network_policy(job, operator_ns),
        children::worker_network_policy(job),
    ] {
        let name = wanted.name_any();
        match policies.get_opt(&name).await.map_err(Error::Observe)? {
            Some(p) if !owned_by(job, &p) => foreign.push(format!("NetworkPolicy {name}")),
            Some(p) if p.spec == wanted.spec => current.push(format!("NetworkPolicy {name}")),
            _ => {}
        }
    }
    Ok((foreign, current))
}

/// The health of every node the pods run on, from the node cache.
fn node_health_of(caches: &Caches, pods: &[Arc<Pod>], now: Timestamp) -> BTreeMap<String, NodeHealth> {
    pods.iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .map(|name| {
            let health = node_health(caches.node(&name).as_deref(), now);
            (name, health)
        })
        .collect()
}
