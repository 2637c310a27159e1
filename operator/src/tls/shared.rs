//! Workers' certificates in shared Secrets (docs/design.md, invariant 11): when one pass creates
//! many workers, their fresh credentials go into one Secret per range of [`CHUNK`] worker ids
//! (`{job}-workers-{first}-{last}-tls`) instead of one Secret each, so that a job's creation costs
//! one API write per pod again. Each pod projects only its own keys (`items`), so a container sees
//! its own key and no other. A range with fewer than [`SHARE_FROM`] workers created in the pass (a
//! single replacement above all) keeps the per-pod Secret.

use std::collections::{BTreeMap, HashMap};

use anyk_proto::tls::{CA_FILE, CERT_FILE, KEY_FILE};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client, ResourceExt};

use super::{JobTls, TlsSetupError, owned_by, post_params, secret};
use crate::children;
use crate::crd::TrainingJob;

/// Worker ids per shared Secret: 128 workers' credentials are about 120 KB, far inside a
/// Secret's 1 MiB.
pub const CHUNK: u32 = 128;
/// The fewest workers of one range created in one pass that share a Secret.
pub const SHARE_FROM: usize = 4;

/// What [`store`] did: the shared Secret of each worker it covered, and the Secrets it found
/// under a shared name that are not the job's (their workers get Secrets of their own).
#[derive(Debug, Default)]
pub struct Stored {
    pub secret_of: HashMap<u32, String>,
    pub foreign: Vec<String>,
}

/// Stores fresh credentials for `workers` (about to be created) in shared Secrets, for every
/// range with at least [`SHARE_FROM`] of them; the other workers are left to the per-pod path.
pub async fn store(
    client: &Client,
    job: &TrainingJob,
    tls: &JobTls,
    workers: &[u32],
) -> Result<Stored, TlsSetupError> {
    let mut ranges: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &w in workers {
        ranges.entry(w / CHUNK).or_default().push(w);
    }
    let writes = ranges
        .into_values()
        .filter(|members| members.len() >= SHARE_FROM)
        .map(|members| store_range(client, job, tls, members));
    let mut stored = Stored::default();
    for (name, members, written) in futures::future::try_join_all(writes).await? {
        match written {
            true => stored
                .secret_of
                .extend(members.into_iter().map(|w| (w, name.clone()))),
            false => stored.foreign.push(name),
        }
    }
    Ok(stored)
}

/// Writes one range's Secret: created, or (it exists and is the job's) its other workers' keys
/// kept and these workers' replaced. False when the Secret is not the job's (left alone).
async fn store_range(
    client: &Client,
    job: &TrainingJob,
    tls: &JobTls,
    members: Vec<u32>,
) -> Result<(String, Vec<u32>, bool), TlsSetupError> {
    let name = secret_name(job, members[0] / CHUNK);
    let wanted = range_secret(job, tls, &name, &members)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let api = |source| TlsSetupError::Api {
        name: name.clone(),
        source,
    };
    match secrets.create(&post_params(), &wanted).await {
        Ok(_) => return Ok((name, members, true)),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => return Err(api(source)),
    }
    let existing = secrets.get(&name).await.map_err(api)?;
    if !owned_by(&existing, &job.uid().unwrap_or_default()) {
        return Ok((name, members, false));
    }
    secrets
        .replace(&name, &post_params(), &merged(existing, wanted))
        .await
        .map_err(api)?;
    Ok((name, members, true))
}

/// `wanted` over the version of `existing` it replaces, keeping the keys of the workers it does
/// not name (their pods run with them).
fn merged(existing: Secret, mut wanted: Secret) -> Secret {
    let mut data = existing.data.unwrap_or_default();
    data.extend(wanted.data.take().unwrap_or_default());
    wanted.data = Some(data);
    wanted.metadata.resource_version = existing.metadata.resource_version;
    wanted
}

/// The Secret with fresh credentials for `members` (one range): the authority once, and each
/// worker's certificate and key under [`cert_key`] and [`key_key`].
pub fn range_secret(
    job: &TrainingJob,
    tls: &JobTls,
    name: &str,
    members: &[u32],
) -> Result<Secret, TlsSetupError> {
    let mut files = vec![(CA_FILE.to_string(), tls.ca.cert_pem.clone())];
    for &w in members {
        let creds = tls.for_member(job, Some(w))?;
        files.push((cert_key(w), creds.cert_pem));
        files.push((key_key(w), creds.key_pem));
    }
    let mut made = secret(job, name.to_string(), std::iter::empty(), "Opaque");
    made.data = Some(
        files
            .into_iter()
            .map(|(key, text)| (key, ByteString(text.into_bytes())))
            .collect(),
    );
    Ok(made)
}

/// The shared Secret of the range `chunk` (worker ids `chunk * CHUNK ..`, up to the job's last).
pub fn secret_name(job: &TrainingJob, chunk: u32) -> String {
    let first = chunk * CHUNK;
    let last = (first + CHUNK - 1).min(job.spec.workers.saturating_sub(1));
    format!("{}-workers-{first}-{last}-tls", job.name_any())
}

/// The key of worker `w`'s certificate in a shared Secret.
pub fn cert_key(w: u32) -> String {
    format!("worker-{w}.crt")
}

/// The key of worker `w`'s private key in a shared Secret.
pub fn key_key(w: u32) -> String {
    format!("worker-{w}.key")
}

/// The pod of worker `w` with its credentials from the shared Secret `secret`: the authority and
/// only its own certificate and key, under the file names of a per-pod Secret.
pub fn mount_shared(pod: Pod, secret: &str, w: u32) -> Pod {
    children::with_tls_items(
        pod,
        secret,
        [
            (CA_FILE.to_string(), CA_FILE),
            (cert_key(w), CERT_FILE),
            (key_key(w), KEY_FILE),
        ],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use anyk_proto::tls::{Identity, JobCa, Role};
    use anyk_testkit::training_job;
    use serde_json::json;

    use super::*;

    fn job(workers: u32) -> TrainingJob {
        training_job("digits")
            .namespace("ml")
            .spec(json!({ "workers": workers, "targetWorkers": workers - 1, "replication": 2 }))
            .build()
    }

    fn job_tls() -> JobTls {
        let ca = JobCa::generate("uid").unwrap();
        let operator = ca.issue(&Identity::new("uid", Role::Operator), &[], &[]).unwrap();
        JobTls {
            ca,
            operator,
            job: "uid".into(),
        }
    }

    #[test]
    fn a_full_range_fits_a_secret_many_times_over() {
        let job = job(4096);
        let members: Vec<u32> = (128..256).collect();
        let secret = range_secret(&job, &job_tls(), &secret_name(&job, 1), &members).unwrap();
        let bytes: usize = secret.data.as_ref().unwrap().values().map(|v| v.0.len()).sum();
        let encoded = serde_json::to_vec(&secret).unwrap().len();
        println!("a Secret of {CHUNK} workers: {bytes} bytes of keys, {encoded} bytes as JSON");
        assert!(
            encoded < 256 * 1024,
            "{encoded} bytes: a quarter of the 1 MiB limit at most"
        );
        assert_eq!(secret.data.unwrap().len(), 1 + 2 * members.len());
    }

    #[test]
    fn a_rewritten_range_keeps_the_keys_of_the_workers_not_created_again() {
        let job = job(8);
        let tls = job_tls();
        let mut existing = range_secret(&job, &tls, "r", &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        existing.metadata.resource_version = Some("41".into());
        let fresh = range_secret(&job, &tls, "r", &[2, 3, 4, 5]).unwrap();
        let written = merged(existing.clone(), fresh.clone());
        assert_eq!(written.metadata.resource_version.as_deref(), Some("41"));
        let (data, old, new) = (written.data.unwrap(), existing.data.unwrap(), fresh.data.unwrap());
        assert_eq!(data.len(), 17);
        for w in 0..8 {
            let from = if (2..6).contains(&w) { &new } else { &old };
            for key in [cert_key(w), key_key(w)] {
                assert_eq!(data[&key], from[&key], "{key}");
            }
        }
        assert_ne!(old[&key_key(3)], new[&key_key(3)], "fresh keys");
    }

    #[test]
    fn ranges_are_named_by_their_ids_up_to_the_last_worker() {
        assert_eq!(secret_name(&job(300), 0), "digits-workers-0-127-tls");
        assert_eq!(secret_name(&job(300), 2), "digits-workers-256-299-tls");
        assert_eq!(secret_name(&job(8), 0), "digits-workers-0-7-tls");
    }

    #[test]
    fn a_pod_projects_only_its_own_keys_under_the_usual_file_names() {
        let job = job(8);
        let pod = children::worker_pod(&job, 5, &children::Images::default());
        let pod = mount_shared(pod, "digits-workers-0-7-tls", 5);
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let tls = volumes.iter().find(|v| v.name == "tls").unwrap();
        let source = tls.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("digits-workers-0-7-tls"));
        assert_eq!(source.default_mode, Some(0o440));
        let items: Vec<(&str, &str)> = source
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(
            items,
            [
                ("ca.crt", "ca.crt"),
                ("worker-5.crt", "tls.crt"),
                ("worker-5.key", "tls.key")
            ]
        );
    }
}
