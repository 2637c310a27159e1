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
