//! `anyk local` runs the same mutual TLS as a cluster (docs/design.md, invariant 11): an authority
//! made for the run, a server certificate for loopback, one certificate per worker id, and one
//! for `anyk local` itself, the run's supervisor (the only caller of Control).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyk_proto::tls::{Credentials, Identity, JobCa, Role};

use super::LocalError;

/// The job name in a local run's certificates.
const JOB: &str = "local";

/// Where a local run's credentials are, and the supervisor's own.
pub struct LocalCerts {
    pub server_dir: PathBuf,
    /// Holds `worker-ID/` for every worker id (a replacement reuses its id's).
    pub workers_dir: PathBuf,
    pub supervisor: Credentials,
}

/// The directory of worker `id`'s credentials under `workers_dir`.
pub fn worker_dir(workers_dir: &Path, id: u32) -> PathBuf {
    workers_dir.join(format!("worker-{id}"))
}

/// Makes the run's authority and every certificate, written under `dir`.
pub fn make(dir: &Path, workers: u32) -> Result<LocalCerts, LocalError> {
    let ca = JobCa::generate(JOB)?;
    let issue = |role: Role, dns: &[String], ips: &[IpAddr]| ca.issue(&Identity::new(JOB, role), dns, ips);
    let server_dir = dir.join("server");
    issue(
        Role::Server,
        &["localhost".into()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )?
    .write_dir(&server_dir)?;
    let workers_dir = dir.join("workers");
    for id in 0..workers {
        issue(Role::Worker(id), &[], &[])?.write_dir(&worker_dir(&workers_dir, id))?;
    }
    Ok(LocalCerts {
        server_dir,
        workers_dir,
        supervisor: issue(Role::Operator, &[], &[])?,
    })
}
