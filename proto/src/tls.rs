//! Mutual TLS for a job's gRPC plane (docs/design.md, invariant 11). Every job has a certificate
//! authority of its own; the server, each worker and the supervisor (the operator, or `anyk
//! local`) hold a certificate from it whose URI name says whose it is:
//! `anyk://job/<job>/server`, `anyk://job/<job>/worker/<id>`, `anyk://job/<job>/operator`. The
//! server trusts only its job's authority and reads the caller's role from the certificate, so a
//! worker can act only as itself and only the supervisor may call Control. Keys are ECDSA P-256
//! from `rcgen` (ring); TLS is rustls through tonic; nothing here is hand-written crypto.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

/// File names in a credentials directory (those of a Kubernetes `kubernetes.io/tls` Secret).
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// How long a job's authority is valid: longer than any job should run.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server, worker or supervisor certificate is valid. Certificates are made with the
/// pod (or process) that uses them, so a replaced pod gets a fresh one; a job whose pods outlive
/// this must have them replaced (delete a worker pod: the operator makes a new one).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Worker(u32),
    /// The supervisor: the operator on a cluster, `anyk local` on one machine.
    Operator,
}

/// Whose a certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub job: String,
    pub role: Role,
}

impl Identity {
    pub fn new(job: &str, role: Role) -> Self {
        Self {
            job: job.to_string(),
            role,
        }
    }

    /// The URI name that carries the identity in a certificate.
    pub fn uri(&self) -> String {
        match self.role {
            Role::Server => format!("anyk://job/{}/server", self.job),
            Role::Worker(id) => format!("anyk://job/{}/worker/{id}", self.job),
            Role::Operator => format!("anyk://job/{}/operator", self.job),
        }
    }

    /// The identity of a URI name, if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("anyk://job/")?;
        let (job, role) = rest.split_once('/')?;
        let role = match role.split_once('/') {
            None if role == "server" => Role::Server,
            None if role == "operator" => Role::Operator,
            Some(("worker", id)) => Role::Worker(id.parse().ok()?),
            _ => return None,
        };
        (!job.is_empty()).then(|| Self::new(job, role))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to make a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("failed to read {path}")]
    Read { path: String, source: std::io::Error },
    #[error("failed to write {path}")]
    Write { path: String, source: std::io::Error },
}

/// A job's certificate authority: its certificate and key, PEM.
#[derive(Clone)]
pub struct JobCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for JobCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCa").finish_non_exhaustive()
    }
}

impl JobCa {
    /// A new authority for `job`.
    pub fn generate(job: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("anyk job {job} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for `identity`, valid for the DNS names and addresses a server is reached
    /// at (none for clients).
    pub fn issue(
        &self,
        identity: &Identity,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<Credentials, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, identity.uri());
        let mut names = vec![SanType::URI(identity.uri().try_into()?)];
        for name in dns {
            names.push(SanType::DnsName(name.clone().try_into()?));
        }
        names.extend(ips.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = names;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match identity.role {
            Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        valid_for(&mut params, LEAF_LIFETIME);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Credentials {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Valid from a minute ago (clocks differ a little) for `lifetime`.
fn valid_for(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + lifetime;
}

/// What one party presents and trusts: the job's authority, its certificate and its key (PEM).
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir` (a mounted Secret).
    pub fn read_dir(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Self {
            ca_pem: read(CA_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: read(KEY_FILE)?,
        })
    }

    /// Writes the three files into `dir` (created; the key readable by its owner only).
    pub fn write_dir(&self, dir: &Path) -> Result<(), TlsError> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TlsError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write(CA_FILE, &self.ca_pem)?;
        write(CERT_FILE, &self.cert_pem)?;
        write(KEY_FILE, &self.key_pem)?;
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            TlsError::Write {
                path: key.display().to_string(),
                source,
            }
        })
    }

    /// Whose these credentials are (the identity in their own certificate).
    pub fn identity(&self) -> Option<Identity> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).ok()?;
        peer_identity(&[tonic::transport::CertificateDer::from(pem.contents)])
    }

    /// The server side: present this certificate, require a client certificate from the job's
    /// authority.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side: present this certificate, trust only the job's authority, and expect
    /// the server's certificate to name `domain`.
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(domain)
    }
}

/// The identity in the first (leaf) certificate a peer presented, if it carries one of ours.
/// The TLS handshake has already checked that the job's authority signed it.
pub fn peer_identity(certs: &[tonic::transport::CertificateDer<'_>]) -> Option<Identity> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => Identity::from_uri(uri),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for role in [Role::Server, Role::Worker(7), Role::Operator] {
            let id = Identity::new("7b1c0a3e", role);
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        for bad in [
            "anyk://job//server",
            "anyk://job/j/worker/x",
            "anyk://job/j/admin",
            "https://job/j/server",
            "anyk://job/j/worker/1/2",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_issued_certificate_carries_its_identity() {
        let ca = JobCa::generate("job-1").unwrap();
        let creds = ca
            .issue(&Identity::new("job-1", Role::Worker(3)), &[], &[])
            .unwrap();
        let der = pem_to_der(&creds.cert_pem);
        let certs = [tonic::transport::CertificateDer::from(der)];
        assert_eq!(
            peer_identity(&certs),
            Some(Identity::new("job-1", Role::Worker(3)))
        );
        assert_eq!(creds.identity(), peer_identity(&certs));
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        parsed.contents
    }
}
