//! The committed CRD is exactly what the code generates (generated files are never hand-edited).

#[test]
fn committed_crd_matches_the_generator() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/trainingjob.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == anyk_operator::crd::crd_yaml(),
        "crds/trainingjob.yaml is stale: run `cargo run -p anyk-operator --bin anyk-crdgen > crds/trainingjob.yaml`"
    );
}

#[test]
fn crd_carries_the_coverage_rule_and_printer_columns() {
    let yaml = anyk_operator::crd::crd_yaml();
    assert!(yaml.contains("self.replication >= self.workers - self.targetWorkers + 1"));
    assert!(yaml.contains("dataset is immutable"));
    for column in ["Phase", "Workers", "Margin", "Step", "Loss", "Age"] {
        assert!(
            yaml.contains(&format!("name: {column}")),
            "missing printer column {column}"
        );
    }
}
