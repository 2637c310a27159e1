//! The read step's look at the job's helper Jobs: only those decide needs
//! (`helpers::to_read`), so a job without a data source or past its export reads nothing more.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, Resource};

use super::Error;
use super::helpers::{HelperState, Helpers, to_read};
use crate::children::{Helper, JOB_NAME_LABEL};
use crate::crd::{TrainingJob, TrainingJobStatus};

pub async fn read_helpers(
    job: &TrainingJob,
    client: &Client,
    ns: &str,
    status: &TrainingJobStatus,
) -> Result<Helpers, Error> {
    let (stage, export) = to_read(job, status);
    let mut helpers = Helpers::default();
    if stage {
        helpers.stage = Some(state_of(job, client, ns, Helper::Stage).await?);
    }
    if export {
        helpers.export = Some(state_of(job, client, ns, Helper::Export).await?);
    }
    Ok(helpers)
}

async fn state_of(
    job: &TrainingJob,
    client: &Client,
    ns: &str,
    helper: Helper,
) -> Result<HelperState, Error> {
    let name = helper.name(job);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let Some(found) = jobs.get_opt(&name).await.map_err(Error::Observe)? else {
        return Ok(HelperState::Absent);
    };
    if !super::read::owned_by(job, &found) {
        return Ok(HelperState::Foreign);
    }
    let uid = found.meta().uid.clone();
    let status = found.status.unwrap_or_default();
    let finished = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| c.message.clone().unwrap_or_default())
    };
    if let Some(job_message) = finished("Complete") {
        let said = last_words(client, ns, &uid, &name).await?;
        return Ok(HelperState::Succeeded {
            message: said.unwrap_or(job_message),
        });
    }
    if let Some(job_message) = finished("Failed") {
        let said = last_words(client, ns, &uid, &name).await?;
        return Ok(HelperState::Failed {
            message: said.unwrap_or(job_message),
        });
    }
    // Only the stage Job reports progress (its split's last line); an export is short.
    let progress = match helper {
        Helper::Stage => progress(client, ns, &name).await,
        Helper::Export => None,
    };
    Ok(HelperState::Running {
        failed: status.failed.unwrap_or(0),
        progress,
    })
}

/// The last line the running split wrote (`anyk data split: writing block 17 of 24`), if any:
/// progress for the condition, so errors (no pod yet, still fetching the model) mean none.
async fn progress(client: &Client, ns: &str, name: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods_of(&pods, name).await.ok()?;
    let running = listed
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))?;
    let logs = LogParams {
        container: Some("split".into()),
        tail_lines: Some(1),
        limit_bytes: Some(512),
        ..LogParams::default()
    };
    let line = pods.logs(running.metadata.name.as_deref()?, &logs).await.ok()?;
    let line = line.trim();
    line.starts_with("anyk data split:").then(|| line.to_string())
}

/// What the Job's newest finished pod said as it ended (its termination message: the error of a
/// failed split, the metrics of an export).
async fn last_words(
    client: &Client,
    ns: &str,
    uid: &Option<String>,
    name: &str,
) -> Result<Option<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods_of(&pods, name).await.map_err(Error::Observe)?;
    let mut said: Vec<(String, String)> = listed
        .items
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| Some(&r.uid) == uid.as_ref())
        })
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            // A failed init container (fetch-model) says why as well as the main one.
            let containers = status
                .init_container_statuses
                .iter()
                .chain(&status.container_statuses);
            let ended = containers
                .flatten()
                .filter_map(|c| c.state.as_ref()?.terminated.clone())
                .find(|t| t.exit_code != 0 || t.message.is_some())?;
            let at = ended.finished_at.map(|t| t.0.to_string()).unwrap_or_default();
            // An OOM kill or an eviction leaves no message: its reason and exit code then.
            let said = ended.message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| {
                let reason = ended.reason.unwrap_or_default();
                format!("{reason} (exit code {})", ended.exit_code)
            });
            Some((at, said))
        })
        .collect();
    said.sort();
    Ok(said.pop().map(|(_, message)| message.trim().to_string()))
}

/// The pods of the Job `name` (by the Job controller's label).
async fn pods_of(pods: &Api<Pod>, name: &str) -> Result<kube::api::ObjectList<Pod>, kube::Error> {
    pods.list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
        .await
}
