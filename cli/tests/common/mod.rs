//! Runs the real `anyk` binary (which starts the real anyk-server and anyk-worker processes).

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Local runs are serialized: each starts nine processes, and a 2-core machine is small.
static LOCAL_RUNS: Mutex<()> = Mutex::new(());

pub fn anyk(args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_anyk");
    let dir = Path::new(exe).parent().expect("a binary lives in a directory");
    for sibling in ["anyk-server", "anyk-worker"] {
        assert!(
            dir.join(sibling).exists(),
            "{sibling} is not built next to {exe}: run `cargo build --release --workspace --bins` first (hack/test does)"
        );
    }
    let _guard =
        (args.first() == Some(&"local")).then(|| LOCAL_RUNS.lock().unwrap_or_else(|e| e.into_inner()));
    Command::new(exe).args(args).output().expect("anyk runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `anyk local` with `args` plus a summary file and workdir; returns the summary.
#[allow(dead_code)] // not every test binary runs anyk local
pub fn local(args: &[&str]) -> (serde_json::Value, Output) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let summary = dir.path().join("summary.json");
    let workdir = dir.path().join("work");
    let mut full = vec![
        "local",
        "--summary",
        summary.to_str().expect("a UTF-8 path"),
        "--workdir",
        workdir.to_str().expect("a UTF-8 path"),
    ];
    full.extend_from_slice(args);
    let out = anyk(&full);
    assert!(
        out.status.success(),
        "anyk {full:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = std::fs::read_to_string(&summary).expect("anyk local wrote the summary");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the summary is JSON");
    // Every run draws itself beside its summary.
    let png = workdir.join("run.png");
    assert_eq!(json["plot"].as_str(), png.to_str());
    let picture = std::fs::read(&png).expect("anyk local drew run.png");
    assert!(picture.starts_with(b"\x89PNG\r\n\x1a\n") && picture.len() > 10_000);
    (json, out)
}
