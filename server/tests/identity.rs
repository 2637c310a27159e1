//! Mutual TLS on a real `anyk-server` process (docs/design.md, invariant 11): only a certificate
//! of the job gets in; a worker's acts only as that worker and never on Control; the operator's
//! may call Control, on the Control port only.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyk_proto::tls::{Credentials, Identity, JobCa, Role};
use anyk_proto::v1::{
    CheckpointRequest, GradientRequest, InitializeRequest, JoinRequest, ProgressRequest, SetLayoutRequest,
    SubscribeRequest, Tensor, control_client::ControlClient, training_client::TrainingClient,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const JOB: &str = "job-a";

struct Server {
    child: Child,
    training: String,
    control: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary with its job's credentials, on loopback ports of the system's choosing.
fn start(ca: &JobCa) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ca.issue(&Identity::new(JOB, Role::Server), &[], &localhost)
        .unwrap()
        .write_dir(&dir.path().join("tls"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anyk-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--blocks",
            "4",
        ])
        .arg("--tls-dir")
        .arg(dir.path().join("tls"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut addr = || {
        lines
            .next()
            .unwrap()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let (training, control) = (addr(), addr());
    Server {
        child,
        training: format!("https://{training}"),
        control: format!("https://{control}"),
        _dir: dir,
    }
}

fn channel(url: &str, creds: &Credentials) -> Channel {
    anyk_proto::transport::secure_channel(url, Some(creds)).unwrap()
}

fn creds(ca: &JobCa, role: Role) -> Credentials {
    ca.issue(&Identity::new(JOB, role), &[], &[]).unwrap()
}

async fn join(channel: Channel, worker: u32) -> Result<(), tonic::Status> {
    let mut client = TrainingClient::new(channel);
    let call = client.join(JoinRequest { worker });
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .map(|_| ())
}

async fn progress(channel: Channel) -> Result<(), tonic::Status> {
    let mut client = ControlClient::new(channel);
    let call = client.get_progress(ProgressRequest {});
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .map(|_| ())
}

/// Every Training RPC made as `worker`: each one's answer.
async fn every_training_call(channel: Channel, worker: u32) -> Vec<Result<(), tonic::Status>> {
    let mut client = TrainingClient::new(channel);
    let init = InitializeRequest {
        worker,
        params: Some(Tensor::from_f32(&[0.0; 4])),
    };
    let push = GradientRequest {
        worker,
        blocks: vec![0],
        gradient: Some(Tensor::from_f32(&[0.0; 4])),
        ..GradientRequest::default()
    };
    vec![
        client.join(JoinRequest { worker }).await.map(|_| ()),
        client.initialize(init).await.map(|_| ()),
        client.subscribe(SubscribeRequest { worker }).await.map(|_| ()),
        client.push_gradient(push).await.map(|_| ()),
    ]
}

/// Every Control RPC: each one's answer.
async fn every_control_call(channel: Channel) -> Vec<Result<(), tonic::Status>> {
    let mut client = ControlClient::new(channel);
    let layout = anyk_proto::layout_to_wire(&anyk_core::plan(4, 2, 4, 3).unwrap());
    vec![
        client
            .set_layout(SetLayoutRequest { layout: Some(layout) })
            .await
            .map(|_| ()),
        client.get_progress(ProgressRequest {}).await.map(|_| ()),
        client.watch_progress(ProgressRequest {}).await.map(|_| ()),
        client.checkpoint(CheckpointRequest {}).await.map(|_| ()),
    ]
}

fn all_denied(answers: Vec<Result<(), tonic::Status>>, what: &str) {
    for (i, answer) in answers.into_iter().enumerate() {
        let status = answer.expect_err(what);
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{what}, call {i}: {status}"
        );
    }
}

#[tokio::test]
async fn a_certificate_of_the_job_may_make_no_call_of_another_role() {
    let ca = JobCa::generate(JOB).unwrap();
    let server = start(&ca);
    let worker_1 = creds(&ca, Role::Worker(1));
    let operator = creds(&ca, Role::Operator);
    all_denied(
        every_training_call(channel(&server.training, &worker_1), 2).await,
        "worker 1 acting as worker 2",
    );
    all_denied(
        every_training_call(channel(&server.training, &operator), 0).await,
        "the operator acting as a worker",
    );
    all_denied(
        every_control_call(channel(&server.control, &worker_1)).await,
        "a worker calling Control",
    );
    // The server's certificate is for serving only (extended key usage): the handshake refuses it
    // as a client's.
    for answer in every_control_call(channel(&server.control, &creds(&ca, Role::Server))).await {
        let status = answer.expect_err("the server's certificate calling Control");
        assert!(handshake_refused(&status), "{status}");
    }
}

#[tokio::test]
async fn only_the_jobs_certificates_get_in_each_for_its_own_role() {
    let ca = JobCa::generate(JOB).unwrap();
    let server = start(&ca);
    let worker_1 = creds(&ca, Role::Worker(1));
    let operator = creds(&ca, Role::Operator);

    // The operator installs a layout (Control); then a worker acts as itself, and only as itself.
    let layout = anyk_proto::layout_to_wire(&anyk_core::plan(4, 2, 4, 3).unwrap());
    ControlClient::new(channel(&server.control, &operator))
        .set_layout(SetLayoutRequest { layout: Some(layout) })
        .await
        .unwrap();
    join(channel(&server.training, &worker_1), 1).await.unwrap();
    let other = join(channel(&server.training, &worker_1), 2).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other}");
    assert!(
        other.message().contains("worker 1 cannot act as worker 2"),
        "{other}"
    );
    let stream = TrainingClient::new(channel(&server.training, &worker_1))
        .subscribe(SubscribeRequest { worker: 3 })
        .await
        .unwrap_err();
    assert_eq!(stream.code(), Code::PermissionDenied, "{stream}");

    // Control is the operator's: a worker is refused on the Control port, the operator is not.
    let worker_on_control = progress(channel(&server.control, &worker_1)).await.unwrap_err();
    assert_eq!(
        worker_on_control.code(),
        Code::PermissionDenied,
        "{worker_on_control}"
    );
    progress(channel(&server.control, &operator)).await.unwrap();
    // The operator on the Training port: Control is not served there, and Training is not its.
    let control_on_training = progress(channel(&server.training, &operator)).await.unwrap_err();
    assert_eq!(
        control_on_training.code(),
        Code::Unimplemented,
        "{control_on_training}"
    );
    let operator_as_worker = join(channel(&server.training, &operator), 0).await.unwrap_err();
    assert_eq!(
        operator_as_worker.code(),
        Code::PermissionDenied,
        "{operator_as_worker}"
    );
}

#[tokio::test]
async fn without_a_certificate_of_the_job_nothing_gets_in() {
    let ca = JobCa::generate(JOB).unwrap();
    let server = start(&ca);
    // Another job's authority, naming this job: the handshake refuses it.
    let impostor = JobCa::generate(JOB).unwrap();
    let forged = creds(&impostor, Role::Operator);
    let trusting_the_server = |creds: &Credentials| Credentials {
        ca_pem: ca.cert_pem.clone(),
        ..creds.clone()
    };
    // Every RPC, with a forged certificate, with none over TLS, and in plaintext.
    let forged_worker = trusting_the_server(&creds(&impostor, Role::Worker(0)));
    let mut refused = Vec::new();
    for (training, control) in [
        (
            channel(&server.training, &forged_worker),
            channel(&server.control, &trusting_the_server(&forged)),
        ),
        (
            no_certificate(&server.training, &ca),
            no_certificate(&server.control, &ca),
        ),
        (plaintext(&server.training), plaintext(&server.control)),
    ] {
        refused.extend(every_training_call(training, 0).await);
        refused.extend(every_control_call(control).await);
    }
    for (i, result) in refused.into_iter().enumerate() {
        let status = result.expect_err("refused");
        assert!(handshake_refused(&status), "case {i}: {status}");
    }
}

fn no_certificate(url: &str, ca: &JobCa) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .domain_name("127.0.0.1");
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

fn plaintext(url: &str) -> Channel {
    Endpoint::from_shared(url.replace("https://", "http://"))
        .unwrap()
        .connect_lazy()
}

/// The TLS handshake failed: the call never reached the server's handlers (the client sees the
/// connection closed in one of these ways).
fn handshake_refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    )
}
