//! The committed CRD files are exactly what the code generates (generated files are never
//! hand-edited).

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use anyk_operator::crd::{CRD_PATHS, crd_yaml};

#[test]
fn committed_crds_match_the_generator() {
    for path in CRD_PATHS {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "{path} is stale: run `cargo run --release -p anyk-operator --bin anyk-crdgen`"
        );
    }
}

#[test]
fn crd_carries_the_coverage_rule_and_printer_columns() {
    let yaml = crd_yaml();
    assert!(yaml.contains("self.replication >= self.workers - self.targetWorkers + 1"));
    assert!(yaml.contains("dataset is immutable"));
    assert!(yaml.contains("helm.sh/resource-policy: keep"));
    for column in ["Phase", "Workers", "Margin", "Step", "Loss", "Age"] {
        assert!(
            yaml.contains(&format!("name: {column}")),
            "missing printer column {column}"
        );
    }
}
