//! Writing a split so that a reader never sees half of one: blocks are written into a staging
//! directory beside the output, moved in only when all are written, and the manifest (which
//! readers take as "the data set is complete") is removed first and written last. A split
//! identical to the one already there is not written again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyk_core::dataset::{FEATURES_TENSOR, LABELS_TENSOR, MANIFEST_FILE, Manifest, TEST_FILE, block_file};
use safetensors::tensor::{Dtype, TensorView};

use super::SplitError;
use super::table::{Labels, Table};

/// What to write: the table, its shuffled rows and the feature scale.
pub struct Plan<'a> {
    pub data: &'a Table,
    pub train_rows: &'a [usize],
    pub test_rows: &'a [usize],
    pub scale: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The output already held this exact split (same input bytes and settings).
    AlreadyThere,
}

pub fn commit(out: &Path, manifest: &Manifest, plan: &Plan<'_>) -> Result<Outcome, SplitError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SplitError::Write { path, source }
    };
    if already_there(out, manifest) {
        return Ok(Outcome::AlreadyThere);
    }
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    remove_leftovers(out);
    let staging = out.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let written = write_all(&staging, manifest.blocks, plan);
    let moved = written.and_then(|files| move_in(out, &staging, &files));
    // Whatever happened, no staging directory is left behind.
    let _ = std::fs::remove_dir_all(&staging);
    moved?;
    let path = out.join(MANIFEST_FILE);
    let partial = out.join(format!(".{MANIFEST_FILE}.partial"));
    std::fs::write(&partial, manifest.to_json().map_err(SplitError::Manifest)?)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(write_err(&path))?;
    Ok(Outcome::Written)
}

/// Staging directories of splits that were killed before they could clean up.
fn remove_leftovers(out: &Path) {
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

const STAGING_PREFIX: &str = ".anyk-split-";

fn already_there(out: &Path, manifest: &Manifest) -> bool {
    let Ok(text) = std::fs::read_to_string(out.join(MANIFEST_FILE)) else {
        return false;
    };
    Manifest::from_json(&text).is_ok_and(|old| old == *manifest)
        && (0..manifest.blocks).all(|b| out.join(block_file(b)).is_file())
        && out.join(TEST_FILE).is_file()
}

fn write_all(staging: &Path, blocks: u32, plan: &Plan<'_>) -> Result<Vec<String>, SplitError> {
    std::fs::create_dir_all(staging).map_err(|source| SplitError::Write {
        path: staging.to_path_buf(),
        source,
    })?;
    let (train, m) = (plan.train_rows.len(), blocks as usize);
    let mut names = Vec::with_capacity(m + 1);
    // About twenty progress lines whatever m is: the operator shows the last one while staging.
    let every = m.div_ceil(20).max(1);
    for b in 0..m {
        if b % every == 0 {
            eprintln!("anyk data split: writing block {} of {m}", b + 1);
        }
        let rows = &plan.train_rows[b * train / m..(b + 1) * train / m];
        let name = block_file(b as u32);
        write_samples(&staging.join(&name), plan, rows)?;
        names.push(name);
    }
    write_samples(&staging.join(TEST_FILE), plan, plan.test_rows)?;
    names.push(TEST_FILE.to_string());
    Ok(names)
}

/// Replaces the output's data set by the staged files: the manifest goes first, so no reader
/// takes the mix of old and new files during the move for a data set; stale blocks go too.
fn move_in(out: &Path, staging: &Path, files: &[String]) -> Result<(), SplitError> {
    let remove = |path: PathBuf| match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SplitError::Write { path, source: e }),
        _ => Ok(()),
    };
    remove(out.join(MANIFEST_FILE))?;
    for name in files {
        let to = out.join(name);
        std::fs::rename(staging.join(name), &to).map_err(|source| SplitError::Write { path: to, source })?;
    }
    let listing = std::fs::read_dir(out).map_err(|source| SplitError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("block-") && name.ends_with(".safetensors") && !files.contains(&name) {
            remove(entry.path())?;
        }
    }
    Ok(())
}

fn write_samples(path: &Path, plan: &Plan<'_>, rows: &[usize]) -> Result<(), SplitError> {
    let (data, f) = (plan.data, plan.data.features);
    let x: Vec<u8> = rows
        .iter()
        .flat_map(|&r| {
            data.x[r * f..(r + 1) * f]
                .iter()
                .flat_map(|v| (v / plan.scale).to_le_bytes())
        })
        .collect();
    let (dtype, y): (Dtype, Vec<u8>) = match &data.labels {
        Labels::Class(y) => (
            Dtype::I64,
            rows.iter().flat_map(|&r| y[r].to_le_bytes()).collect(),
        ),
        Labels::Value(y) => (
            Dtype::F32,
            rows.iter().flat_map(|&r| y[r].to_le_bytes()).collect(),
        ),
    };
    let encode = |source| SplitError::Encode {
        path: path.into(),
        source,
    };
    let tensors: HashMap<String, TensorView> = HashMap::from([
        (
            FEATURES_TENSOR.to_string(),
            TensorView::new(Dtype::F32, vec![rows.len(), f], &x).map_err(encode)?,
        ),
        (
            LABELS_TENSOR.to_string(),
            TensorView::new(dtype, vec![rows.len()], &y).map_err(encode)?,
        ),
    ]);
    safetensors::serialize_to_file(tensors, None, path).map_err(encode)
}
