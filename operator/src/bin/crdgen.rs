//! Prints the TrainingJob CRD as YAML: `cargo run -p anyk-operator --bin anyk-crdgen > crds/trainingjob.yaml`.

fn main() {
    print!("{}", anyk_operator::crd::crd_yaml());
}
