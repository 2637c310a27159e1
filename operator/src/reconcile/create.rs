//! Creating a job's absent pods: in parallel (a 1,000-worker job is not created one request after
//! another), in batches with the progress in status, and never over a pod that is not the job's.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::Error;
use super::notes::note;
use crate::children::{self, FIELD_MANAGER};
use crate::controller::Context;
use crate::crd::TrainingJob;
use crate::tls::{self, JobTls, shared};

/// Pods per batch: status shows the progress after each.
pub const BATCH: usize = 256;
/// Creations in flight at once, without flooding the apiserver.
const CONCURRENCY: usize = 32;

/// One of the job's pods: the server (None) or worker w.
pub type Member = Option<u32>;

/// The absent pods, server first, in batches.
pub fn batches(job: &TrainingJob, absent: &BTreeSet<String>) -> Vec<Vec<Member>> {
    let members: Vec<Member> = std::iter::once(None)
        .chain((0..job.spec.workers).map(Some))
        .filter(|m| absent.contains(&name(job, *m)))
        .collect();
    members.chunks(BATCH).map(<[Member]>::to_vec).collect()
}

fn name(job: &TrainingJob, member: Member) -> String {
    match member {
        None => children::server_name(job),
        Some(w) => children::worker_name(job, w),
    }
}

/// Creates one batch, its pods built only now: the workers' credentials first, in shared Secrets
/// where many of a range are created together, else each in its own.
pub async fn create_batch(job: &TrainingJob, ctx: &Context, ns: &str, batch: &[Member]) -> Result<(), Error> {
    let tls = ctx.authorities.for_job(&ctx.client, job).await?;
    let workers: Vec<u32> = batch.iter().flatten().copied().collect();
    let shared = shared::store(&ctx.client, job, &tls, &workers).await?;
    for name in &shared.foreign {
        let message = format!(
            "Secret {name} exists and is not the job's: left alone, its workers get Secrets of their own"
        );
        ctx.publish(job, &note(true, "OwnershipConflict", "Create", &message))
            .await;
    }
    let results: Vec<Result<(), Error>> = futures::stream::iter(batch.iter().copied())
        .map(|member| {
            let secret = member.and_then(|w| shared.secret_of.get(&w));
            create_member(job, ctx, ns, &tls, member, secret)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A pod with fresh credentials of its own: from `shared` (already written), else in its own
/// Secret, written first so that the pod mounts it at once.
async fn create_member(
    job: &TrainingJob,
    ctx: &Context,
    ns: &str,
    tls: &JobTls,
    member: Member,
    shared: Option<&String>,
) -> Result<(), Error> {
    let images = &ctx.settings.images;
    let pod = match (member, shared) {
        (Some(w), Some(secret)) => shared::mount_shared(children::worker_pod(job, w, images), secret, w),
        (Some(w), None) => {
            tls::store_pod_credentials(&ctx.client, job, tls, member).await?;
            children::worker_pod(job, w, images)
        }
        (None, _) => {
            tls::store_pod_credentials(&ctx.client, job, tls, member).await?;
            children::server_pod(job, images)
        }
    };
    create_pod(job, ctx, ns, pod).await
}

/// Created, not applied: a pod of the same name that is not the job's (it appeared since the
/// read) is reported, never taken over.
async fn create_pod(job: &TrainingJob, ctx: &Context, ns: &str, pod: Pod) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match pods.create(&params, &pod).await {
        Ok(created) => ctx.expectations.created(job, &created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let message = format!("pod {} exists and is not the job's: left alone", pod.name_any());
            ctx.publish(job, &note(true, "OwnershipConflict", "Create", &message))
                .await;
        }
        Err(source) => {
            let name = pod.name_any();
            return Err(Error::Apply {
                kind: "Pod",
                name,
                source,
            });
        }
    }
    Ok(())
}
