//! The apply step: carries out a pass's [`Actions`] in the order the invariants need: status
//! first (docs/design.md, invariant 6), then Events, deletions, the children, and last the job
//! itself when its time is up.

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Error;
use super::create;
use super::decide::{Actions, Deletion};
use crate::children::{self, FIELD_MANAGER, Helper};
use crate::controller::Context;
use crate::crd::{TrainingJob, TrainingJobStatus};

pub async fn apply(
    job: &TrainingJob,
    ctx: &Context,
    actions: &Actions,
    started: Instant,
    version: &mut Option<String>,
) -> Result<(), Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    if let Some(status) = &actions.status {
        write_status(job, ctx, &ns, status, version).await?;
    }
    if actions.repaired > 0 {
        ctx.metrics.repaired(actions.repaired as usize, started.elapsed());
    }
    if actions.server_replaced {
        ctx.metrics.server_restarted();
    }
    for note in &actions.notes {
        ctx.publish(job, note).await;
    }
    for (pod, how) in &actions.delete_pods {
        delete_pod(job, ctx, &ns, pod, *how).await?;
    }
    for helper in &actions.create_helpers {
        create_helper(job, ctx, &ns, *helper).await?;
    }
    if actions.apply_children {
        apply_shared(job, ctx, &ns, &actions.foreign, &actions.current).await?;
        create_in_batches(job, ctx, &ns, actions, version).await?;
    }
    if actions.delete_job {
        let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
        delete(&jobs, &job.name_any(), &DeleteParams::background(), "TrainingJob").await?;
    }
    Ok(())
}

/// Creates a helper Job (one that already exists is left as it is: the next read looks at it).
async fn create_helper(job: &TrainingJob, ctx: &Context, ns: &str, helper: Helper) -> Result<(), Error> {
    let Some(wanted) = helper.job(job, &ctx.settings.images) else {
        return Ok(());
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match jobs.create(&PostParams::default(), &wanted).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "Job",
            name: helper.name(job),
            source,
        }),
    }
}

/// Creates the absent pods batch by batch; while more batches follow, status says how far it got.
async fn create_in_batches(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
    actions: &Actions,
    version: &mut Option<String>,
) -> Result<(), Error> {
    let batches = create::batches(job, &actions.create_pods);
    let total: usize = batches.iter().map(Vec::len).sum();
    let mut done = 0;
    for batch in &batches {
        create::create_batch(job, ctx, ns, batch).await?;
        done += batch.len();
        if let Some(status) = actions.status.as_ref().filter(|_| batches.len() > 1) {
            let progress = (done < total).then(|| format!("{done}/{total}"));
            let status = TrainingJobStatus {
                pods_created: progress,
                ..status.clone()
            };
            write_status(job, ctx, ns, &status, version).await?;
        }
    }
    Ok(())
}

/// Writes status only over the version this pass read (`version`, updated to the one written):
/// a second operator, or a stale pass, gets a conflict and retries from a fresh read instead of
/// overwriting a newer layout.
async fn write_status(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
    status: &TrainingJobStatus,
    version: &mut Option<String>,
) -> Result<(), Error> {
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": TrainingJob::api_version(&()),
        "kind": TrainingJob::kind(&()),
        "metadata": { "resourceVersion": version },
        "status": status,
    });
    let written = jobs
        .patch_status(
            &job.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::WriteStatus)?;
    *version = written.metadata.resource_version;
    Ok(())
}

async fn delete_pod(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
    name: &str,
    how: Deletion,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = match how {
        Deletion::Graceful => DeleteParams::default(),
        Deletion::Now => DeleteParams::default().grace_period(0),
    };
    if let Some(pod) = delete(&pods, name, &params, "Pod").await? {
        ctx.expectations.deleted(job, &pod);
    }
    Ok(())
}

/// Deletes an object; one that is already gone is fine. Returns the object as the deletion left
/// it, when the apiserver returned it.
async fn delete<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
    kind: &'static str,
) -> Result<Option<K>, Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(deleted) => Ok(deleted.left()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(source) => Err(Error::Delete {
            kind,
            name: name.to_string(),
            source,
        }),
    }
}

/// The NetworkPolicies (when enabled) and the Service, except `foreign` ones (the read step found
/// them owned by someone else: never taken over) and `current` ones (already as wanted).
async fn apply_shared(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
    foreign: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> Result<(), Error> {
    let due = |kind: &str, name: String| {
        let key = format!("{kind} {name}");
        !foreign.contains(&key) && !current.contains(&key)
    };
    if ctx.settings.network_policies {
        let operator_ns = ctx.settings.operator_namespace.as_deref();
        for policy in [
            children::network_policy(job, operator_ns),
            children::worker_network_policy(job),
        ] {
            if due("NetworkPolicy", policy.name_any()) {
                server_side_apply::<NetworkPolicy>(ctx, ns, &policy, "NetworkPolicy").await?;
            }
        }
    }
    let service = children::service(job);
    if due("Service", service.name_any()) {
        server_side_apply::<Service>(ctx, ns, &service, "Service").await?;
    }
    Ok(())
}

async fn server_side_apply<K>(ctx: &Context, ns: &str, object: &K, kind: &'static str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })?;
    Ok(())
}
