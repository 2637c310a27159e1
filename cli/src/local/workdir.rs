//! The working directory of a local run: block files, checkpoints and logs.

use std::path::{Path, PathBuf};

use anyk_core::dataset::{MANIFEST_FILE, Manifest};

use super::{LocalArgs, LocalError};
use crate::data_split::{self, SplitArgs};

pub struct Workdir {
    /// The data set's block files.
    pub data: PathBuf,
    pub logs: PathBuf,
    pub checkpoints: PathBuf,
}

impl Workdir {
    /// Creates the working directory with fresh `logs` and `checkpoints` folders, and the blocks.
    pub fn prepare(args: &LocalArgs) -> Result<Self, LocalError> {
        let dir = args
            .workdir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("anyk-local-{}", std::process::id())));
        create(&dir)?;
        let data = prepare_data(args, &dir)?;
        let (logs, checkpoints) = (dir.join("logs"), dir.join("checkpoints"));
        for dir in [&logs, &checkpoints] {
            // A fresh checkpoint directory: the server would otherwise resume an earlier run.
            let _ = std::fs::remove_dir_all(dir);
            create(dir)?;
        }
        Ok(Self {
            data,
            logs,
            checkpoints,
        })
    }
}

fn create(dir: &Path) -> Result<(), LocalError> {
    std::fs::create_dir_all(dir).map_err(|source| LocalError::Io {
        what: format!("create {}", dir.display()),
        source,
    })
}

/// Block files for this run: the given directory, or a split of the given (or bundled) file.
fn prepare_data(args: &LocalArgs, workdir: &Path) -> Result<PathBuf, LocalError> {
    let input = args.data.clone().unwrap_or_else(bundled_digits);
    if input.is_dir() {
        let path = input.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LocalError::Io {
            what: format!("read {}", path.display()),
            source,
        })?;
        let manifest = Manifest::from_json(&text).map_err(|source| LocalError::Manifest { path, source })?;
        if manifest.blocks != args.blocks {
            return Err(LocalError::Invalid(format!(
                "{} holds {} blocks but --blocks is {}",
                input.display(),
                manifest.blocks,
                args.blocks
            )));
        }
        return Ok(input);
    }
    let out = workdir.join("data");
    data_split::run(&SplitArgs {
        input,
        blocks: args.blocks,
        out: out.clone(),
        test_fraction: 0.2,
        seed: 0,
    })?;
    Ok(out)
}

/// The digits data set shipped in the repository (data/digits.csv.gz).
fn bundled_digits() -> PathBuf {
    std::env::var_os("ANYK_DATA_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz"))
}
