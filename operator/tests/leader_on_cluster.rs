//! One leader at a time, on the real control plane: two `anyk-operator` processes (the binary,
//! as a Deployment with two replicas runs it) elect a leader on a Lease; only the leader
//! reconciles, the standby waits; the leader killed (SIGKILL, so it releases nothing), the
//! standby takes over within about the lease duration and reconciles. And the Lease's optimistic
//! concurrency: of candidates racing for the same free lease, exactly one wins.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A scenario reads best top to bottom.
#![allow(clippy::too_many_lines)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::TrainingJob;
use anyk_operator::leader::{Elector, LeaseConfig, Round};
use anyk_testkit::{TestNamespace, eventually, free_port, training_job};
use common::install_crd;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const LEASE_SECONDS: u64 = 3;
const MINUTE: Duration = Duration::from_secs(60);

/// One operator process with its own pod name (HOSTNAME), metrics port and log file.
struct Candidate {
    name: String,
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Candidate {
    /// Starts the operator binary watching `namespace`, its lease (3 s) in that namespace too.
    fn start(name: &str, namespace: &str, dir: &std::path::Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let metrics_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_anyk-operator"))
            // An admin identity: RBAC is the chart's concern (tests/e2e runs with the chart's).
            .env("KUBECONFIG", anyk_testkit::kubeconfig())
            .env("HOSTNAME", name)
            .env("ANYK_WATCH_NAMESPACES", namespace)
            .env("ANYK_OPERATOR_NAMESPACE", namespace)
            .env("ANYK_LEASE_DURATION_SECONDS", LEASE_SECONDS.to_string())
            .env("ANYK_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("ANYK_LOG", "info,anyk_operator=debug")
            .env_remove("ANYK_LEADER_ELECTION")
            .env_remove("ANYK_LEASE_NAME")
            .env_remove("ANYK_LEASE_NAMESPACE")
            .current_dir(anyk_testkit::repo_root())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            name: name.into(),
            child,
            log,
            metrics_port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `anyk_reconciles_total`, or None while the metrics endpoint is not up.
    fn reconciles(&self) -> Option<f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("anyk_reconciles_total "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Candidate {
    /// SIGKILL: no lease released, as when a node dies. A failing test prints the log's tail.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- last lines of {} ---", self.name);
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
            }
        }
    }
}

fn terminate(candidate: &Candidate) {
    let pid = candidate.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// Waits up to a minute for the process to exit.
async fn exited(candidate: &mut Candidate) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = candidate.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < MINUTE, "{} did not exit", candidate.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn holder(leases: &Api<Lease>) -> Option<(String, LeaseSpec)> {
    let spec = leases.get_opt("anyk-operator").await.ok()??.spec?;
    Some((spec.holder_identity.clone()?, spec))
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> usize {
    let selector = ListParams::default().labels(&format!("{JOB_LABEL}={job}"));
    pods.list(&selector).await.map_or(0, |list| list.items.len())
}

/// A job of a server and four workers (its pods may stay Pending: only their creation counts).
fn job(name: &str) -> TrainingJob {
    training_job(name)
        .spec(json!({ "workers": 4, "targetWorkers": 2 }))
        .build()
}

#[tokio::test]
async fn one_operator_leads_and_a_standby_takes_over_when_it_dies() {
    let ns = TestNamespace::create("leader", &[]).await;
    install_crd(ns.client.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut candidates = vec![
        Candidate::start("operator-a", &ns.name, dir.path()),
        Candidate::start("operator-b", &ns.name, dir.path()),
    ];
    let leases: Api<Lease> = ns.api();
    let (leader, spec) = eventually("a leader", MINUTE, || holder(&leases)).await;
    assert_eq!(spec.lease_duration_seconds, Some(LEASE_SECONDS as i32));
    let transitions = spec.lease_transitions.unwrap_or(0);
    let (lead, standby) = if leader == "operator-a" { (0, 1) } else { (1, 0) };
    assert_eq!(candidates[lead].name, leader);

    // Only the leader acts: the job gets its pods, and the standby has reconciled nothing.
    let jobs: Api<TrainingJob> = ns.api();
    let pods: Api<Pod> = ns.api();
    jobs.create(&PostParams::default(), &job("first")).await.unwrap();
    eventually("the first job's five pods", MINUTE, || async {
        (pods_of(&pods, "first").await == 5).then_some(())
    })
    .await;
    eventually("the leader counting passes", MINUTE, || async {
        (candidates[lead].reconciles()? >= 1.0).then_some(())
    })
    .await;
    // A few renewals later the standby still stands by.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let waiting = eventually("the standby's metrics", MINUTE, || async {
        candidates[standby].reconciles()
    })
    .await;
    assert_eq!(waiting, 0.0, "the standby reconciled");
    assert!(
        candidates[standby]
            .log()
            .contains("standby: another replica leads"),
        "the standby's log: {}",
        candidates[standby].log()
    );
    assert_eq!(
        holder(&leases).await.unwrap().0,
        leader,
        "the leader kept its lease"
    );

    // SIGKILL the leader: the standby takes the lease once it expires (3 s after the last renewal,
    // tried every second), and reconciles: a new job gets its pods.
    let killed_at = Instant::now();
    drop(candidates.remove(lead));
    let successor = &candidates[0];
    let (now_leading, spec) = eventually("a new leader", MINUTE, || async {
        holder(&leases).await.filter(|(h, _)| *h != leader)
    })
    .await;
    let took = killed_at.elapsed();
    println!("the standby took over {took:?} after the leader was killed");
    assert_eq!(now_leading, successor.name);
    assert!(
        took < Duration::from_secs(LEASE_SECONDS + 5),
        "took over after {took:?}"
    );
    assert_eq!(spec.lease_transitions, Some(transitions + 1));
    jobs.create(&PostParams::default(), &job("second")).await.unwrap();
    eventually("the second job's five pods", MINUTE, || async {
        (pods_of(&pods, "second").await == 5).then_some(())
    })
    .await;
    eventually("the new leader counting passes", MINUTE, || async {
        (successor.reconciles()? >= 1.0).then_some(())
    })
    .await;
    assert!(successor.log().contains("leading"), "{}", successor.log());
    drop(candidates);
    ns.cleanup().await;
}

#[tokio::test]
async fn of_candidates_racing_for_a_free_lease_exactly_one_wins() {
    let ns = TestNamespace::create("lease-race", &[]).await;
    let config = |identity: String| LeaseConfig {
        name: "race".into(),
        namespace: ns.name.clone(),
        identity,
        duration: Duration::from_secs(LEASE_SECONDS),
    };
    // Twice: for a lease nobody has created yet (create vs create), and for one that has expired
    // (replace vs replace, by resourceVersion).
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
        }
        let electors: Vec<Elector> = (0..6)
            .map(|i| Elector::new(ns.client.clone(), config(format!("candidate-{round}-{i}"))))
            .collect();
        let rounds = futures::future::join_all(electors.iter().map(|elector| elector.try_lead())).await;
        let rounds: Vec<Round> = rounds.into_iter().map(Result::unwrap).collect();
        let winners = rounds.iter().filter(|r| **r == Round::Leading).count();
        assert_eq!(winners, 1, "round {round}: {rounds:?}");
        let leases: Api<Lease> = ns.api();
        let spec = leases.get("race").await.unwrap().spec.unwrap();
        let winner = rounds.iter().position(|r| *r == Round::Leading).unwrap();
        assert_eq!(spec.holder_identity, Some(format!("candidate-{round}-{winner}")));
        assert_eq!(spec.lease_transitions, Some(round));
        // The loser's next try follows the winner.
        let loser = Elector::new(ns.client.clone(), config(format!("late-{round}")));
        assert_eq!(
            loser.try_lead().await.unwrap(),
            Round::Following(format!("candidate-{round}-{winner}"))
        );
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn a_leader_exits_when_its_lease_is_taken_and_releases_it_when_stopped() {
    let ns = TestNamespace::create("leader-loss", &[]).await;
    install_crd(ns.client.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let leases: Api<Lease> = ns.api();

    // Another holder writes itself into the lease (as a partitioned leader would see after the
    // standbys took over): the leader stops at its next renewal, exiting non-zero.
    let mut leader = Candidate::start("operator-a", &ns.name, dir.path());
    eventually("operator-a leading", MINUTE, || async {
        holder(&leases).await.filter(|(h, _)| h == "operator-a")
    })
    .await;
    let mut lease = leases.get("anyk-operator").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(3600);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("anyk-operator", &PostParams::default(), &lease)
        .await
        .unwrap();
    let status = exited(&mut leader).await;
    assert_eq!(status.code(), Some(1), "{}", leader.log());
    assert!(leader.log().contains("intruder holds it now"), "{}", leader.log());
    leases.delete("anyk-operator", &Default::default()).await.unwrap();

    // SIGTERM: the controller shuts down and the lease is left without a holder, for a standby to
    // take at once; the process exits 0.
    let mut stopped = Candidate::start("operator-b", &ns.name, dir.path());
    eventually("operator-b leading", MINUTE, || async {
        holder(&leases).await.filter(|(h, _)| h == "operator-b")
    })
    .await;
    // A standby stops at once too (it listens for SIGTERM while it waits).
    let mut standby = Candidate::start("operator-c", &ns.name, dir.path());
    eventually("operator-c standing by", MINUTE, || async {
        standby
            .log()
            .contains("standby: another replica leads")
            .then_some(())
    })
    .await;
    terminate(&standby);
    let status = exited(&mut standby).await;
    assert!(status.success(), "{status:?}: {}", standby.log());
    terminate(&stopped);
    let status = exited(&mut stopped).await;
    assert!(status.success(), "{status:?}: {}", stopped.log());
    let spec = leases.get("anyk-operator").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity, None, "{spec:?}");
    drop((leader, stopped, standby));
    ns.cleanup().await;
}
