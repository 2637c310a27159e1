//! `anyk local` end to end: real processes, real gRPC, real libtorch.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use common::{anyk, local, stderr, stdout};

#[test]
fn the_default_demo_learns_digits_through_a_straggler_and_a_kill() {
    let (s, out) = local(&[]);
    let accuracy = s["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");
    assert_eq!(s["steps"], 300);
    assert_eq!(s["workers_killed"], 1);
    assert_eq!(s["repairs"], 1);
    assert_eq!(s["coverage_held_every_step"], true);
    // The 5x straggler was not waited for on most steps.
    assert!(s["stragglers_skipped"].as_u64().unwrap() >= 150, "{s}");
    let text = stdout(&out);
    assert!(
        text.contains("killed worker 4") && text.contains("repair to epoch 2"),
        "{text}"
    );
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        format!("param sha256: {}", s["param_sha256"].as_str().unwrap())
    );
}

/// Invariant 2 (docs/design.md): stragglers and up to r-1 killed workers leave every bit of the
/// model unchanged.
#[test]
fn faults_within_tolerance_do_not_change_a_bit() {
    let steps = ["--steps", "60"];
    let (clean, _) = local(&[&steps[..], &["--no-faults"]].concat());
    let (faulty, _) = local(
        &[
            &steps[..],
            &["--straggle", "1:5", "--kill", "2@15", "--kill", "6@30"],
        ]
        .concat(),
    );
    assert_eq!(faulty["workers_killed"], 2);
    assert_eq!(faulty["repairs"], 2);
    assert_eq!(faulty["coverage_held_every_step"], true);
    assert_eq!(clean["param_sha256"], faulty["param_sha256"]);
    // And the same as the uncoded baseline: coding changes who computes, not what is computed.
    let (sync, _) = local(&[&steps[..], &["--baseline", "sync", "--no-faults"]].concat());
    assert_eq!(sync["gradients_per_step"], 24.0);
    assert_eq!(clean["param_sha256"], sync["param_sha256"]);
}

/// bf16 gradients (anyk_core::precision): each unit rounded once, whoever computed it, so
/// stragglers, kills and the uncoded baseline still give the same bits; not those of f32.
#[test]
fn bf16_gradients_are_exact_under_faults_and_differ_from_f32() {
    let job = ["--steps", "40", "--gradient-precision", "bf16"];
    let (clean, out) = local(&[&job[..], &["--no-faults"]].concat());
    assert!(stdout(&out).contains("bf16 gradients"), "{}", stdout(&out));
    let (faulty, _) = local(&[&job[..], &["--straggle", "1:5", "--kill", "2@15"]].concat());
    assert_eq!(faulty["workers_killed"], 1);
    assert_eq!(clean["param_sha256"], faulty["param_sha256"]);
    let (sync, _) = local(&[&job[..], &["--baseline", "sync", "--no-faults"]].concat());
    assert_eq!(clean["param_sha256"], sync["param_sha256"]);
    let (f32_run, _) = local(&["--steps", "40", "--no-faults"]);
    assert_ne!(clean["param_sha256"], f32_run["param_sha256"]);
    assert!(clean["final_test_accuracy"].as_f64().unwrap() > 0.9, "{clean}");
}

#[test]
fn fractional_layouts_heal_without_changing_a_bit() {
    let job = [
        "--workers",
        "6",
        "--replication",
        "3",
        "--target",
        "4",
        "--blocks",
        "12",
        "--steps",
        "40",
    ];
    let (clean, out) = local(&[&job[..], &["--no-faults"]].concat());
    assert!(stdout(&out).contains("fractional"), "{}", stdout(&out));
    let (faulty, _) = local(&[&job[..], &["--kill", "0@10", "--kill", "4@20"]].concat());
    assert_eq!(faulty["repairs"], 2);
    assert_eq!(clean["param_sha256"], faulty["param_sha256"]);
}

#[test]
fn bad_arguments_name_the_problem() {
    let out = anyk(&["local", "--replication", "2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("r >= n-k+1"), "{}", stderr(&out));
    let out = anyk(&["local", "--kill", "9@10"]);
    assert!(stderr(&out).contains("worker 9"), "{}", stderr(&out));
    let out = anyk(&["local", "--straggle", "1:x"]);
    assert!(stderr(&out).contains("not a number"), "{}", stderr(&out));
    let out = anyk(&["local", "--node-type", "8:avx2"]);
    assert!(stderr(&out).contains("worker 8"), "{}", stderr(&out));
    let out = anyk(&["local", "--node-type", "1:sse"]);
    assert!(stderr(&out).contains("avx512"), "{}", stderr(&out));
    let out = anyk(&["local", "--numerics", "fast"]);
    assert!(stderr(&out).contains("native"), "{}", stderr(&out));
    let out = anyk(&["local", "--gradient-precision", "fp8"]);
    assert!(stderr(&out).contains("bf16"), "{}", stderr(&out));
    let out = anyk(&["local", "--gradient-precision", "bf16", "--strict"]);
    assert!(
        stderr(&out).contains("cannot be used with '--strict'"),
        "{}",
        stderr(&out)
    );
}

/// A user's own PyTorch model: a TorchScript file made by real PyTorch, trained through tch.
#[test]
fn trains_a_users_torchscript_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.pt");
    let script = format!(
        "import torch\n\
         torch.manual_seed(0)\n\
         m = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 10))\n\
         torch.jit.script(m).save({:?})\n",
        model.to_str().unwrap()
    );
    let made = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", &script])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "PyTorch must be importable (hack/test puts its virtual environment on PATH): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (s, _) = local(&[
        "--model",
        model.to_str().unwrap(),
        "--no-faults",
        "--steps",
        "150",
    ]);
    let accuracy = s["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "TorchScript model reached only {accuracy}");
}

/// Invariant 7 across node types: workers on emulated AVX-512, AVX2 and baseline CPUs compute the
/// same bits under the reproducible profile (the default), so the job's result is that of a
/// homogeneous one and no replica ever disagrees; a worker that computes wrong bits from step 30
/// (strict mode) is caught in that very step, outvoted, replaced, and changes nothing.
#[test]
fn node_types_agree_and_a_corrupt_worker_is_caught_and_replaced() {
    let steps = ["--steps", "60", "--no-faults"];
    let (homogeneous, _) = local(&steps);
    let mixed = [&steps[..], &node_types()].concat();
    let (heterogeneous, _) = local(&mixed);
    assert_eq!(heterogeneous["numerics"], "reproducible");
    assert_eq!(heterogeneous["replica_disagreements"], 0, "{heterogeneous}");
    assert_eq!(homogeneous["replica_disagreements"], 0, "{homogeneous}");
    assert_eq!(homogeneous["param_sha256"], heterogeneous["param_sha256"]);

    let (corrupt, out) = local(&["--steps", "60", "--strict", "--corrupt", "2@30"]);
    assert_eq!(corrupt["strict"], true);
    assert_eq!(corrupt["first_disagreement_step"], 30, "{corrupt}");
    assert!(corrupt["faulty_replaced"].as_u64().unwrap() >= 1, "{corrupt}");
    let text = stdout(&out);
    assert!(text.contains("worker 2 faulty (outvoted"), "{text}");
    assert!(text.contains("worker 2 lost; repair"), "{text}");
    assert_eq!(corrupt["param_sha256"], homogeneous["param_sha256"]);
}

/// Without the profile, mixed node types compute different bits and the server's replica checks
/// see it. They are certain to in strict mode (every copy sent and compared); outside it copies
/// meet only where two holders happen to send the same block (a straggler's, once a step is
/// overdue, worker/src/run/pacing.rs). Strict mode needs two equal copies of every block: node
/// types in pairs give each block's three holders (workers w, w+1, w+2) two of one type.
#[test]
fn native_numerics_on_mixed_nodes_is_detected() {
    let paired = [
        "0:default",
        "1:default",
        "2:avx512",
        "3:avx512",
        "4:default",
        "5:default",
        "6:avx512",
        "7:avx512",
    ];
    let mut args = vec!["--steps", "30", "--no-faults", "--numerics", "native", "--strict"];
    for t in paired {
        args.extend(["--node-type", t]);
    }
    let (native, _) = local(&args);
    assert_eq!(native["numerics"], "native");
    assert!(native["replica_disagreements"].as_u64().unwrap() > 0, "{native}");
    assert_eq!(native["faulty_replaced"], 0, "{native}");
}

/// Workers 0..8 on baseline, AVX2 and AVX-512 nodes in turn.
fn node_types() -> Vec<&'static str> {
    const TYPES: [&str; 8] = [
        "0:default",
        "1:avx2",
        "2:avx512",
        "3:default",
        "4:avx2",
        "5:avx512",
        "6:default",
        "7:avx2",
    ];
    TYPES.iter().flat_map(|t| ["--node-type", *t]).collect()
}
