//! Who may call what (docs/design.md, invariant 11). With mutual TLS on, the TLS handshake has
//! already refused anyone without a certificate from the job's authority; here the certificate's
//! identity must match the call: a Training call only from a worker of this job acting as itself,
//! a Control call only from the job's supervisor (the operator, or `anyk local`).

use anyk_proto::tls::{Identity, Role, peer_identity};
use tonic::{Request, Status};

/// The job whose certificates the server accepts.
#[derive(Debug, Clone)]
pub struct Guard {
    job: String,
}

impl Guard {
    pub fn new(job: impl Into<String>) -> Self {
        Self { job: job.into() }
    }

    /// A Training call made for `worker`: only that worker's certificate may make it.
    pub fn worker<T>(&self, request: &Request<T>, worker: u32) -> Result<(), Status> {
        match self.caller(request)?.role {
            Role::Worker(id) if id == worker => Ok(()),
            Role::Worker(id) => Err(Status::permission_denied(format!(
                "the certificate of worker {id} cannot act as worker {worker}"
            ))),
            role => Err(Status::permission_denied(format!(
                "Training calls are the workers': the caller's certificate is the {role:?}'s"
            ))),
        }
    }

    /// A Control call: only the supervisor's certificate may make it.
    pub fn operator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)?.role {
            Role::Operator => Ok(()),
            role => Err(Status::permission_denied(format!(
                "Control calls are the operator's: the caller's certificate is the {role:?}'s"
            ))),
        }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let identity = peer_identity(&certs)
            .ok_or_else(|| Status::unauthenticated("the client certificate names no anyk identity"))?;
        if identity.job != self.job {
            return Err(Status::permission_denied(format!(
                "the certificate is for job {}, this server is job {}'s",
                identity.job, self.job
            )));
        }
        Ok(identity)
    }
}
