//! One leader at a time: leader election on a `coordination.k8s.io/v1` Lease, the algorithm of
//! client-go's `leaderelection`. Every candidate reads the Lease, decides what to write
//! ([`decide`], pure) and writes it back carrying the resourceVersion it read, so that of two
//! candidates racing for a free or expired lease the apiserver lets exactly one write through
//! (the other gets 409 Conflict). The leader renews every [`LeaseConfig::retry_period`]; one that
//! has not renewed for [`LeaseConfig::renew_deadline`] (two thirds of the lease, so before any
//! standby may take over) stops leading.
//!
//! Expiry compares the holder's `renewTime` with this machine's clock: the nodes' clocks must
//! agree to within a third of the lease duration (NTP does far better).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Where a pod's own namespace is mounted (with its service-account token).
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the lease")]
    Read(#[source] kube::Error),
    #[error("failed to write the lease")]
    Write(#[source] kube::Error),
    #[error("failed to renew the lease within the renew deadline ({deadline:?})")]
    Renew {
        deadline: Duration,
        /// The last failed attempt's error, if one failed rather than timed out or conflicted.
        #[source]
        last: Option<Box<Error>>,
    },
    #[error("failed to keep the lease: {holder} holds it now")]
    TakenOver { holder: String },
}

/// Where the lease lives and who this candidate is.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// `holderIdentity`: unique among the candidates (the pod's name).
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// The leader renews, and a standby retries, this often: client-go's 2 s at the default 15 s
    /// lease, a third of a shorter one.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 3).min(Duration::from_secs(2))
    }

    /// A leader that has not renewed for this long stops: two thirds of the lease (client-go's
    /// 10 s of 15 s), so it has stopped before its lease expires for the standbys.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// `holderIdentity`: the pod's name (`HOSTNAME`), else an id unique to this process.
pub fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            format!("anyk-operator-{}-{nanos:x}", std::process::id())
        })
}

/// The lease's namespace: `explicit` (`--lease-namespace`), else the operator's namespace, else
/// the service account's, else "default".
pub fn lease_namespace(explicit: Option<String>, operator: Option<String>) -> String {
    first_namespace([explicit, operator])
        .or_else(mounted_namespace)
        .unwrap_or_else(|| "default".into())
}

/// The namespace of the service account this process runs as (in a pod), if any.
pub fn mounted_namespace() -> Option<String> {
    first_namespace([std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok()])
}

fn first_namespace<const N: usize>(candidates: [Option<String>; N]) -> Option<String> {
    candidates
        .into_iter()
        .flatten()
        .map(|ns| ns.trim().to_string())
        .find(|ns| !ns.is_empty())
}

/// What a candidate does with the lease it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It holds the lease: write this (renewed) spec back.
    Renew(LeaseSpec),
    /// The lease is absent, free or expired: write this spec, naming it the holder.
    Acquire(LeaseSpec),
    /// Another candidate holds a lease that has not expired.
    Follow { holder: String },
}

/// The election, as a function of the lease read (`None`: there is none yet), the time and the
/// candidate: a holder renews; anyone takes a lease without a holder or whose `renewTime` (else
/// `acquireTime`) plus its `leaseDurationSeconds` lies in the past, counting a transition; the
/// rest follow. Fields this does not own (`strategy`, `preferredHolder`) are kept.
pub fn decide(current: Option<&LeaseSpec>, now: Timestamp, me: &str, duration: Duration) -> Decision {
    let spec = current.cloned().unwrap_or_default();
    let seconds = Some(whole_seconds(duration));
    match spec.holder_identity.clone().filter(|holder| !holder.is_empty()) {
        Some(holder) if holder == me => Decision::Renew(LeaseSpec {
            acquire_time: spec.acquire_time.clone().or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: seconds,
            ..spec
        }),
        Some(holder) if !expired(&spec, now, duration) => Decision::Follow { holder },
        _ => Decision::Acquire(LeaseSpec {
            holder_identity: Some(me.into()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: seconds,
            lease_transitions: Some(match current {
                None => 0,
                Some(_) => spec.lease_transitions.unwrap_or(0).saturating_add(1),
            }),
            ..spec
        }),
    }
}

/// The lease a leader leaves behind when it stops on purpose: no holder, so that a standby takes
/// it at its next try instead of waiting for it to expire (client-go's ReleaseOnCancel).
pub fn released(spec: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(1),
        ..spec.clone()
    }
}

/// Whether `renewTime` (else `acquireTime`) + `leaseDurationSeconds` (else ours) < `now`; a lease
/// with neither time is expired.
fn expired(spec: &LeaseSpec, now: Timestamp, duration: Duration) -> bool {
    let Some(since) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or_else(|| whole_seconds(duration))
        .max(0);
    since
        .0
        .checked_add(SignedDuration::from_secs(seconds.into()))
        .is_ok_and(|until| until < now)
}

fn whole_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The outcome of one try: read, decide, write.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// This candidate holds the lease (it wrote it).
    Leading,
    /// Another candidate holds it.
    Following(String),
    /// Another write came between our read and our write (409): nobody won through us.
    Conflict,
}

/// A candidate for leadership on one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Runs `work` only while this process leads: waits as a standby until it holds the lease
    /// (None: stopped by SIGTERM or SIGINT first), then runs `work` and renews the lease beside
    /// it. When `work` ends (a shutdown signal), the lease is released so that a standby takes
    /// over at once. When leadership is lost, `work` is dropped at once, mid-pass or not, and the
    /// error returned: the caller exits non-zero.
    pub async fn lead<F: Future>(self, work: F) -> Result<Option<F::Output>, Error> {
        let lease = format!("{}/{}", self.config.namespace, self.config.name);
        tracing::info!(%lease, identity = %self.config.identity, "waiting for leadership");
        let renewed = tokio::select! {
            renewed = self.acquire() => renewed,
            () = stop_signal() => {
                tracing::info!("stopped while standing by");
                return Ok(None);
            }
        };
        tracing::info!(%lease, identity = %self.config.identity, "leading");
        let output = tokio::select! {
            output = work => output,
            lost = self.keep(renewed) => return Err(lost),
        };
        match self.release().await {
            Ok(()) => tracing::info!(%lease, "lease released"),
            Err(err) => tracing::warn!(%lease, error = %err, "failed to release the lease"),
        }
        Ok(Some(output))
    }

    /// One try: reads the lease, decides, and writes it with the resourceVersion it read.
    pub async fn try_lead(&self) -> Result<Round, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await.map_err(Error::Read)?;
        let spec = current.as_ref().and_then(|lease| lease.spec.as_ref());
        let wanted = match decide(spec, now, &self.config.identity, self.config.duration) {
            Decision::Follow { holder } => return Ok(Round::Following(holder)),
            Decision::Renew(spec) | Decision::Acquire(spec) => spec,
        };
        let written = match current {
            Some(mut lease) => {
                lease.spec = Some(wanted);
                let name = &self.config.name;
                self.api.replace(name, &PostParams::default(), &lease).await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(wanted),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(Round::Leading),
            // Stale resourceVersion, or another candidate created the lease first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Conflict),
            Err(err) => Err(Error::Write(err)),
        }
    }

    /// Waits, as a standby, until this candidate holds the lease; returns when the winning try
    /// started (the renewTime written is no earlier).
    async fn acquire(&self) -> Instant {
        let mut following = None;
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.config.renew_deadline(), self.try_lead()).await {
                Ok(Ok(Round::Leading)) => return started,
                Ok(Ok(Round::Following(holder))) if following.as_ref() != Some(&holder) => {
                    tracing::info!(%holder, "standby: another replica leads");
                    following = Some(holder);
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "failed to try for the lease; retrying"),
                Err(_) => tracing::warn!("trying for the lease timed out; retrying"),
            }
            tokio::time::sleep(self.config.retry_period()).await;
        }
    }

    /// Renews the lease until it is lost (another holder, or no renewal for the renew deadline,
    /// each try bounded by what is left of it); returns why. `renewed`: the last renewal's start.
    async fn keep(&self, mut renewed: Instant) -> Error {
        let deadline = self.config.renew_deadline();
        let mut last = None;
        loop {
            tokio::time::sleep(self.config.retry_period()).await;
            let started = Instant::now();
            let left = (renewed + deadline).saturating_duration_since(started);
            match tokio::time::timeout(left, self.try_lead()).await {
                Ok(Ok(Round::Leading)) => {
                    renewed = started;
                    last = None;
                }
                Ok(Ok(Round::Following(holder))) => return Error::TakenOver { holder },
                Ok(Ok(Round::Conflict)) | Err(_) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "failed to renew the lease; retrying");
                    last = Some(Box::new(err));
                }
            }
            if renewed.elapsed() >= deadline {
                return Error::Renew { deadline, last };
            }
        }
    }

    /// Leaves the lease free, if this candidate still holds it.
    async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(Error::Read)? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released(spec, Timestamp::now()));
        let name = &self.config.name;
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await
            .map_err(Error::Write)?;
        Ok(())
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT. A standby must handle them itself: as a
/// container's PID 1 it would otherwise ignore SIGTERM until killed after the grace period.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signals) => {
                signals.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests;
