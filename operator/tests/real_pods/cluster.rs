//! The real-node cluster (`hack/real-cluster`): bringing it up, its clients and tools, and what
//! the host sees of its pods (a pod's container process, a pod's address).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyk_testkit::{repo_root, run_tool_on};

/// Brings the real-node cluster up once per process (idempotent: reuses a running one; installs
/// the operator from the chart with the images built from this checkout) and returns its
/// kubeconfig. Panics with the script's output when it cannot start: never skipped silently.
pub fn kubeconfig() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo_root().join("hack/real-cluster"))
            .arg("up")
            .output()
            .expect("hack/real-cluster runs");
        assert!(
            out.status.success(),
            "hack/real-cluster up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
    })
}

/// kubectl or helm against the real-node cluster; its stdout.
pub fn tool(name: &str, args: &[&str]) -> String {
    run_tool_on(kubeconfig(), name, args)
}

/// The PID of the process named `comm` in the pod with `uid`, as the host sees it: containers
/// are this host's processes, in the pod's cgroup (named after its UID, dashes as dashes or
/// underscores depending on the cgroup driver).
pub fn container_process(pod_uid: &str, comm: &str) -> Option<u32> {
    let underscored = pod_uid.replace('-', "_");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        if name.trim() != comm {
            return None;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
        (cgroup.contains(pod_uid) || cgroup.contains(&underscored)).then_some(pid)
    })
}

/// Kills a container's process with SIGKILL, as a crash or the kernel's OOM killer would.
pub fn kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -KILL {pid}");
}
