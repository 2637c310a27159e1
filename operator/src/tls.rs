//! Each job's certificate authority and the certificates the operator makes from it
//! (docs/design.md, invariant 11): the authority lives in a Secret owned by the job
//! (`{job}-tls-ca`, never mounted by any pod); every pod gets a certificate of its own, made when
//! the pod is created (so a replaced pod gets a fresh one), in `{pod}-tls` or, for workers created
//! many at once, in a Secret shared by a range of workers of which each pod mounts only its own
//! keys ([`shared`]); the operator's own client certificate for the job's Control port is made in
//! memory and kept for the job's life.

pub mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use anyk_proto::tls::{CA_FILE, CERT_FILE, Credentials, Identity, JobCa, KEY_FILE, Role, TlsError};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::children::{self, FIELD_MANAGER, JOB_LABEL};
use crate::crd::TrainingJob;

/// The key of the authority's private key in its Secret.
const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("failed to make a certificate")]
    Certificate(#[from] TlsError),
    #[error("failed to read or write Secret {name}")]
    Api { name: String, source: kube::Error },
    #[error("Secret {0} exists and is not the job's: the job gets no certificates until it is removed")]
    Foreign(String),
    #[error("Secret {0} lacks ca.crt or ca.key")]
    Incomplete(String),
}

/// A job's authority and the operator's certificate from it.
pub struct JobTls {
    pub ca: JobCa,
    pub operator: Credentials,
    pub job: String,
}

impl JobTls {
    /// The credentials of a job pod: the server (`None`) or worker `w`.
    pub fn for_member(&self, job: &TrainingJob, member: Option<u32>) -> Result<Credentials, TlsError> {
        match member {
            None => self.ca.issue(
                &Identity::new(&self.job, Role::Server),
                &children::server_dns_names(job),
                &[],
            ),
            Some(w) => self
                .ca
                .issue(&Identity::new(&self.job, Role::Worker(w)), &[], &[]),
        }
    }
}

/// The authorities of the jobs this operator has seen, by job UID.
#[derive(Default)]
pub struct Authorities(Mutex<HashMap<String, Arc<JobTls>>>);

impl Authorities {
    /// The job's authority: cached, else read from its Secret, else made and stored.
    pub async fn for_job(&self, client: &Client, job: &TrainingJob) -> Result<Arc<JobTls>, TlsSetupError> {
        let uid = job.uid().unwrap_or_default();
        if let Some(tls) = self.lock().get(&uid) {
            return Ok(tls.clone());
        }
        let ca = stored_or_new_ca(client, job, &uid).await?;
        let operator = ca.issue(&Identity::new(&uid, Role::Operator), &[], &[])?;
        let tls = Arc::new(JobTls {
            ca,
            operator,
            job: uid.clone(),
        });
        self.lock().insert(uid, tls.clone());
        Ok(tls)
    }

    /// The cached authority of a job, if this operator has read it.
    pub fn cached(&self, job: &TrainingJob) -> Option<Arc<JobTls>> {
        self.lock().get(&job.uid().unwrap_or_default()).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<JobTls>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn stored_or_new_ca(client: &Client, job: &TrainingJob, uid: &str) -> Result<JobCa, TlsSetupError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let name = ca_secret_name(job);
    let api = |source| TlsSetupError::Api {
        name: name.clone(),
        source,
    };
    if let Some(existing) = secrets.get_opt(&name).await.map_err(api)? {
        return read_ca(&existing, uid, &name);
    }
    let ca = JobCa::generate(uid)?;
    let secret = secret(
        job,
        name.clone(),
        [(CA_FILE, &ca.cert_pem), (CA_KEY, &ca.key_pem)],
        "Opaque",
    );
    match secrets.create(&post_params(), &secret).await {
        Ok(_) => Ok(ca),
        // Another replica (or this one, before a restart) stored one first: use it.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = secrets.get(&name).await.map_err(api)?;
            read_ca(&existing, uid, &name)
        }
        Err(source) => Err(api(source)),
    }
}

/// The authority in `secret`, if the job owns it (the operator trusts nothing it did not make).
fn read_ca(secret: &Secret, uid: &str, name: &str) -> Result<JobCa, TlsSetupError> {
    if !owned_by(secret, uid) {
        return Err(TlsSetupError::Foreign(name.to_string()));
    }
    authority_in(secret).ok_or_else(|| TlsSetupError::Incomplete(name.to_string()))
}

/// The authority a `{job}-tls-ca` Secret holds, if it holds both of its files (whose it is is
/// the caller's to check).
pub fn authority_in(secret: &Secret) -> Option<JobCa> {
    let text = |key: &str| {
        let bytes = secret.data.as_ref()?.get(key)?;
        String::from_utf8(bytes.0.clone()).ok()
    };
    Some(JobCa {
        cert_pem: text(CA_FILE)?,
        key_pem: text(CA_KEY)?,
    })
}

/// Stores a fresh certificate for the pod `member` of the job in `{pod}-tls`, replacing the one
/// an earlier pod of that name had.
pub async fn store_pod_credentials(
    client: &Client,
    job: &TrainingJob,
    tls: &JobTls,
    member: Option<u32>,
) -> Result<(), TlsSetupError> {
    let pod = match member {
        None => children::server_name(job),
        Some(w) => children::worker_name(job, w),
    };
    let name = children::tls_secret_name(&pod);
    let creds = tls.for_member(job, member)?;
    let files = [
        (CA_FILE, &creds.ca_pem),
        (CERT_FILE, &creds.cert_pem),
        (KEY_FILE, &creds.key_pem),
    ];
    let mut wanted = secret(job, name.clone(), files, "kubernetes.io/tls");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let api = |source| TlsSetupError::Api {
        name: name.clone(),
        source,
    };
    match secrets.create(&post_params(), &wanted).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = secrets.get(&name).await.map_err(api)?;
            if !owned_by(&existing, &job.uid().unwrap_or_default()) {
                return Err(TlsSetupError::Foreign(name));
            }
            wanted.metadata.resource_version = existing.resource_version();
            secrets
                .replace(&name, &post_params(), &wanted)
                .await
                .map_err(api)?;
            Ok(())
        }
        Err(source) => Err(api(source)),
    }
}

pub fn ca_secret_name(job: &TrainingJob) -> String {
    format!("{}-tls-ca", job.name_any())
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    !uid.is_empty() && secret.owner_references().iter().any(|o| o.uid == uid)
}

fn secret<'a>(
    job: &TrainingJob,
    name: String,
    files: impl IntoIterator<Item = (&'a str, &'a String)>,
    type_: &str,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: job.namespace(),
            labels: Some(BTreeMap::from([(JOB_LABEL.to_string(), job.name_any())])),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(
            files
                .into_iter()
                .map(|(key, text)| (key.to_string(), ByteString(text.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some(type_.into()),
        ..Secret::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}
