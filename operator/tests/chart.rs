//! The Helm chart passes `helm lint --strict` and offline schema validation of its renderings
//! (kubernetes-validate), with its RBAC, environment and security settings asserted
//! (`hack/chart-check` does the work; it exits non-zero and says why on any failure).

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

#[test]
fn the_chart_lints_renders_and_validates_offline() {
    let out = std::process::Command::new(anyk_testkit::repo_root().join("hack/chart-check"))
        .output()
        .expect("hack/chart-check runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "hack/chart-check failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
}
