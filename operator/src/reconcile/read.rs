//! The read step: the job's fresh status, its pods and the health of their nodes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::Error;
use super::decide::Seen;
use crate::children::{JOB_LABEL, external_endpoint};
use crate::controller::Context;
use crate::crd::TrainingJob;
use crate::observe::{NodeHealth, node_health, observe};

/// What the decide step needs; `None` when the job is being deleted (the garbage collector removes
/// its pods, and they are not lost workers).
pub async fn read(job: &TrainingJob, ctx: &Context) -> Result<Option<Seen>, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    // From the apiserver, not the watch cache: the cache may not have seen our own last write
    // yet, and the layout must never step back to an older epoch.
    let fresh = jobs
        .get_status(&job.name_any())
        .await
        .map_err(Error::ReadStatus)?;
    if fresh.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{JOB_LABEL}={}", job.name_any());
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Observe)?
        .items;
    let nodes = node_health_of(ctx, &pods).await?;
    let now = Timestamp::now();
    let observed = observe(job.spec.workers, &pods, &nodes, now, ctx.settings.node_grace);
    Ok(Some(Seen {
        status: fresh.status.unwrap_or_default(),
        observed,
        external_server: external_endpoint(job, ctx.settings.allow_server_endpoint_annotation),
        now,
    }))
}

/// The health of every node the pods run on.
async fn node_health_of(ctx: &Context, pods: &[Pod]) -> Result<BTreeMap<String, NodeHealth>, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut health = BTreeMap::new();
    for name in pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()) {
        if let std::collections::btree_map::Entry::Vacant(slot) = health.entry(name) {
            let node = nodes.get_opt(slot.key()).await.map_err(Error::Observe)?;
            slot.insert(node_health(node.as_ref(), Timestamp::now()));
        }
    }
    Ok(health)
}
