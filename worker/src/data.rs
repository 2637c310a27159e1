//! Reading the block files written by `anyk data split` (their names and the manifest are
//! defined in [`anyk_core::dataset`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyk_core::dataset::{FEATURES_TENSOR, LABELS_TENSOR, MANIFEST_FILE, Manifest, block_file};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("failed to read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to parse {path}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to load tensors from {path}")]
    Tensors { path: PathBuf, source: tch::TchError },
    #[error("no data set: {path} did not appear within {waited} s (`anyk data split` writes it)")]
    NoDataSet { path: PathBuf, waited: u64 },
    #[error("{path} has no tensor named {name:?}")]
    Missing { path: PathBuf, name: &'static str },
}

pub fn manifest(dir: &Path) -> Result<Manifest, DataError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| DataError::Read {
        path: path.clone(),
        source,
    })?;
    Manifest::from_json(&text).map_err(|source| DataError::Manifest { path, source })
}

/// Waits until `dir` holds a data set (its manifest, which `anyk data split` writes last), for
/// at most `patience`. On a cluster the data claim may be filled by a split Job that runs beside
/// the workers; failing at once would only make the operator replace the worker.
pub fn await_data_set(dir: &Path, patience: Duration) -> Result<(), DataError> {
    let path = dir.join(MANIFEST_FILE);
    let started = Instant::now();
    let mut said = false;
    while !path.exists() {
        if started.elapsed() >= patience {
            return Err(DataError::NoDataSet {
                path,
                waited: patience.as_secs(),
            });
        }
        if !said {
            tracing::warn!(path = %path.display(), "waiting for the data set (written by `anyk data split`)");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

pub fn block_path(dir: &Path, block: u32) -> PathBuf {
    dir.join(block_file(block))
}

/// Samples of one file, on the training device.
pub struct Samples {
    pub x: Tensor,
    pub y: Tensor,
}

impl Samples {
    pub fn load(path: &Path, device: Device) -> Result<Self, DataError> {
        let tensors = Tensor::read_safetensors(path).map_err(|source| DataError::Tensors {
            path: path.to_path_buf(),
            source,
        })?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut take = |name: &'static str| {
            by_name.remove(name).ok_or_else(|| DataError::Missing {
                path: path.to_path_buf(),
                name,
            })
        };
        Ok(Self {
            x: take(FEATURES_TENSOR)?.to_kind(Kind::Float).to_device(device),
            y: labels(take(LABELS_TENSOR)?).to_device(device),
        })
    }

    pub fn len(&self) -> usize {
        self.y.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `indices`.
    pub fn select(&self, indices: &[usize]) -> (Tensor, Tensor) {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::from_slice(&idx).to_device(self.x.device());
        (self.x.index_select(0, &idx), self.y.index_select(0, &idx))
    }
}

/// Class ids as i64 (what cross-entropy takes), values as f32.
fn labels(y: Tensor) -> Tensor {
    if y.is_floating_point() {
        y.to_kind(Kind::Float)
    } else {
        y.to_kind(Kind::Int64)
    }
}

/// Blocks loaded so far; a layout change loads only the blocks that are new to this worker.
#[derive(Default)]
pub struct BlockCache {
    blocks: HashMap<u32, Samples>,
}

impl BlockCache {
    pub fn ensure(&mut self, dir: &Path, blocks: &[u32], device: Device) -> Result<usize, DataError> {
        let mut loaded = 0;
        for &b in blocks {
            if let Entry::Vacant(slot) = self.blocks.entry(b) {
                slot.insert(Samples::load(&block_path(dir, b), device)?);
                loaded += 1;
            }
        }
        self.blocks.retain(|b, _| blocks.contains(b));
        Ok(loaded)
    }

    pub fn get(&self, block: u32) -> Option<&Samples> {
        self.blocks.get(&block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_set_that_never_appears_is_named_after_the_patience() {
        let dir = tempfile::tempdir().unwrap();
        let err = await_data_set(dir.path(), Duration::from_millis(50)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("manifest.json") && message.contains("did not appear"),
            "{message}"
        );
    }

    #[test]
    fn a_data_set_written_while_waiting_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join(MANIFEST_FILE);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(manifest, "{}").unwrap();
        });
        let started = Instant::now();
        await_data_set(dir.path(), Duration::from_secs(30)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        writer.join().unwrap();
    }
}
