//! Round trips of every command line through its parser.
use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Server {
    #[command(flatten)]
    launch: ServerLaunch,
}

#[derive(Debug, Parser)]
struct Worker {
    #[command(subcommand)]
    command: WorkerCommand,
}

fn parse_server(args: Vec<String>) -> ServerLaunch {
    Server::try_parse_from(std::iter::once("anyk-server".to_string()).chain(args))
        .unwrap()
        .launch
}

fn parse_worker(args: Vec<String>) -> WorkerCommand {
    Worker::try_parse_from(std::iter::once("anyk-worker".to_string()).chain(args))
        .unwrap()
        .command
}

#[test]
fn server_arguments_round_trip() {
    let launch = ServerLaunch {
        listen: "[::1]:0".parse().unwrap(),
        steps: 7,
        batch: 3,
        seed: 42,
        optimizer: OptimizerKind::Sgd,
        lr: 0.3,
        momentum: 0.5,
        checkpoint_dir: Some("/checkpoints".into()),
        checkpoint_every: 0,
        max_message_bytes: 1 << 20,
        strict: true,
        faulty_after: 5,
        clip_norm: Some(2.5),
        control_listen: Some("[::1]:7".parse().unwrap()),
        health_listen: Some("0.0.0.0:8".parse().unwrap()),
        tls_dir: Some("/tls".into()),
        job_id: Some("0b1c-uid".into()),
        ..ServerLaunch::new(24)
    };
    assert_eq!(parse_server(launch.args()), launch);
    assert_eq!(parse_server(ServerLaunch::new(5).args()), ServerLaunch::new(5));
    let bf16 = ServerLaunch {
        gradient_precision: anyk_core::GradientPrecision::Bf16,
        ..ServerLaunch::new(5)
    };
    assert_eq!(parse_server(bf16.args()), bf16);
}

#[test]
fn defaults_are_the_parsers_defaults() {
    let parsed = parse_server(vec!["--blocks".into(), "5".into()]);
    // Environment fallbacks aside (none are set for these in tests).
    assert_eq!(parsed.optimizer, ServerLaunch::new(5).optimizer);
    assert_eq!(parsed.steps, ServerLaunch::new(5).steps);
    let train = parse_worker(
        ["train", "--server", "http://s:1", "--worker", "2", "--data", "/d"]
            .map(String::from)
            .to_vec(),
    );
    assert_eq!(
        train,
        WorkerCommand::Train(WorkerLaunch::new("http://s:1", 2, ModelLaunch::new("/d")))
    );
}

#[test]
fn worker_arguments_round_trip() {
    let model = ModelLaunch {
        model: "/data/model.pt".into(),
        hidden: 48,
        device: "cpu".into(),
        threads: 2,
        numerics: Numerics::Native,
        ..ModelLaunch::new("/data/digits")
    };
    let train = WorkerCommand::Train(WorkerLaunch {
        straggle: 2.5,
        rejoin_seconds: 9,
        corrupt_from: Some(4),
        tls_dir: Some("/tls".into()),
        ..WorkerLaunch::new("https://127.0.0.1:50051", 3, model.clone())
    });
    assert_eq!(train.args()[0], "train");
    assert_eq!(parse_worker(train.args()), train);
    let evaluate = WorkerCommand::Evaluate(EvaluateLaunch {
        checkpoint: "/c/ckpt".into(),
        samples: Some("/d/test.safetensors".into()),
        model,
    });
    assert_eq!(evaluate.args()[0], "evaluate");
    assert_eq!(parse_worker(evaluate.args()), evaluate);
}

#[test]
fn unknown_optimizers_are_refused_with_the_names() {
    let err = Server::try_parse_from(["s", "--blocks", "2", "--optimizer", "rmsprop"]).unwrap_err();
    assert!(err.to_string().contains("adam, sgd"), "{err}");
}

#[test]
fn every_server_and_worker_image_sets_the_malloc_tunables() {
    let images = [
        include_str!("../../../docker/server.Dockerfile"),
        include_str!("../../../docker/worker.Dockerfile"),
        include_str!("../../../docker/local/server.Dockerfile"),
        include_str!("../../../docker/local/worker.Dockerfile"),
    ];
    let line = format!("ENV GLIBC_TUNABLES={}", super::MALLOC_TUNABLES);
    for image in images {
        assert!(image.contains(&line), "an image lacks {line:?}");
    }
}
