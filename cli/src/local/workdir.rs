//! The working directory of a local run: block files, checkpoints and logs.
//!
//! `anyk local` never deletes what it did not create: `--workdir` must be new or empty, unless
//! an earlier `anyk local` made it (it leaves a marker file) and `--force` is given; then only
//! the folders it writes are removed. Without `--workdir` a new temporary directory is made.

use std::path::{Path, PathBuf};

use std::io::ErrorKind;

use anyk_core::dataset::{MANIFEST_FILE, Manifest};

use super::{LocalArgs, LocalError};
use crate::data::{self, Header, SplitArgs};

pub struct Workdir {
    /// The directory itself (`--workdir` or a new temporary one).
    pub root: PathBuf,
    /// The data set's block files.
    pub data: PathBuf,
    pub logs: PathBuf,
    pub checkpoints: PathBuf,
    /// The run's TLS credentials (made by `certs::make`).
    pub tls: PathBuf,
}

/// The file that says `anyk local` made a directory.
const MARKER: &str = ".anyk-local";
/// The folders `anyk local` writes in its working directory, and `--force` removes.
const FOLDERS: [&str; 4] = ["logs", "checkpoints", "data", "tls"];

impl Workdir {
    /// Makes (or claims) the working directory, with new `logs` and `checkpoints` folders (the
    /// server would otherwise resume an earlier run), and the blocks.
    pub fn prepare(args: &LocalArgs) -> Result<Self, LocalError> {
        let dir = match &args.workdir {
            Some(dir) => claim(dir, args.force)?,
            None => tempfile::Builder::new()
                .prefix("anyk-local-")
                .tempdir()
                .map(tempfile::TempDir::keep)
                .map_err(|source| LocalError::Io {
                    what: "create a temporary directory".into(),
                    source,
                })?,
        };
        write_marker(&dir)?;
        let data = prepare_data(args, &dir)?;
        let (logs, checkpoints) = (dir.join("logs"), dir.join("checkpoints"));
        for dir in [&logs, &checkpoints] {
            create(dir)?;
        }
        Ok(Self {
            root: dir.clone(),
            data,
            logs,
            checkpoints,
            tls: dir.join("tls"),
        })
    }
}

/// `dir` if it is new or empty; else, with `force`, an earlier run's directory without the
/// folders that run wrote. Refuses anything else, deleting nothing.
fn claim(dir: &Path, force: bool) -> Result<PathBuf, LocalError> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(source) => {
            return Err(LocalError::Io {
                what: format!("read --workdir {}", dir.display()),
                source,
            });
        }
    };
    if empty {
        create(dir)?;
        return Ok(dir.to_path_buf());
    }
    let shown = dir.display();
    if !dir.join(MARKER).is_file() {
        return Err(LocalError::Invalid(format!(
            "--workdir {shown} is not empty and was not made by `anyk local`: name a new or empty directory (nothing was deleted)"
        )));
    }
    if !force {
        return Err(LocalError::Invalid(format!(
            "--workdir {shown} holds an earlier `anyk local` run: pass --force to replace its {}, or name a new or empty directory (nothing was deleted)",
            FOLDERS.join(", ")
        )));
    }
    for folder in FOLDERS.map(|f| dir.join(f)) {
        match std::fs::remove_dir_all(&folder) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(LocalError::Io {
                    what: format!("remove {}", folder.display()),
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(dir.to_path_buf())
}

fn write_marker(dir: &Path) -> Result<(), LocalError> {
    let path = dir.join(MARKER);
    let text = "made by `anyk local`; `anyk local --force` may replace its logs, checkpoints and data\n";
    std::fs::write(&path, text).map_err(|source| LocalError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

fn create(dir: &Path) -> Result<(), LocalError> {
    std::fs::create_dir_all(dir).map_err(|source| LocalError::Io {
        what: format!("create {}", dir.display()),
        source,
    })
}

/// Block files for this run: the given directory, or a split of the given (or bundled) file.
fn prepare_data(args: &LocalArgs, workdir: &Path) -> Result<PathBuf, LocalError> {
    let input = args
        .data
        .clone()
        .unwrap_or_else(|| bundled_digits().display().to_string());
    if Path::new(&input).join(MANIFEST_FILE).is_file() {
        let input = PathBuf::from(input);
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
    data::run(&SplitArgs {
        input,
        blocks: args.blocks,
        out: out.clone(),
        test_fraction: 0.2,
        seed: 0,
        labels: args.labels,
        header: Header::Auto,
        label_column: None,
    })?;
    Ok(out)
}

/// The digits data set shipped in the repository (data/digits.csv.gz).
fn bundled_digits() -> PathBuf {
    std::env::var_os("ANYK_DATA_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz"))
}
