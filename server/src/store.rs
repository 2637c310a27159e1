//! Checkpoints on disk: write-then-rename so a crash never leaves a torn newest file, keep the
//! last few, resume from the newest one that decodes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyk_core::checkpoint::Checkpoint;

const KEEP: usize = 3;

static SAVES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to write checkpoint {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read checkpoint directory {path}")]
    List { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Writes `ckpt` as `ckpt-<step>.anyk` and prunes older ones; returns its path.
    pub fn save(&self, ckpt: &Checkpoint) -> Result<PathBuf, StoreError> {
        let path = self.dir.join(format!("ckpt-{:012}.anyk", ckpt.step));
        // Unique per save: a periodic save and an on-demand one may race for the same step.
        let unique = SAVES.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".ckpt-{:012}.{unique}.anyk.tmp", ckpt.step));
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut file = std::io::BufWriter::new(fs::File::create(&tmp)?);
            ckpt.encode_into(&mut file)?;
            let file = file.into_inner().map_err(std::io::IntoInnerError::into_error)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory entry is.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StoreError::Write {
            path: path.clone(),
            source,
        })?;
        for old in self.list()?.into_iter().skip(KEEP) {
            let _ = fs::remove_file(old);
        }
        Ok(path)
    }

    /// The newest checkpoint that decodes, skipping (and logging) damaged ones.
    pub fn latest(&self) -> Result<Option<(PathBuf, Checkpoint)>, StoreError> {
        for path in self.list()? {
            match fs::read(&path).map(|bytes| Checkpoint::decode(&bytes)) {
                Ok(Ok(ckpt)) => return Ok(Some((path, ckpt))),
                Ok(Err(err)) => {
                    tracing::warn!(path = %path.display(), %err, "skipping damaged checkpoint")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "skipping unreadable checkpoint")
                }
            }
        }
        Ok(None)
    }

    /// Complete checkpoint files, newest first.
    fn list(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::List {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_checkpoint(p))
            .collect();
        paths.sort_unstable_by(|a, b| b.cmp(a));
        Ok(paths)
    }
}

fn is_checkpoint(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".anyk"))
}
