//! Writes the TrainingJob CRD to every place it is committed: `cargo run -p anyk-operator --bin
//! anyk-crdgen` (from anywhere in the repository).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for path in anyk_operator::crd::CRD_PATHS {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("a file has a folder"))?;
        std::fs::write(&file, anyk_operator::crd::crd_yaml())?;
        println!("wrote {path}");
    }
    Ok(())
}
