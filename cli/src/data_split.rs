//! `anyk data split`: a CSV (label in the last column, optionally gzip'd) or a safetensors file
//! with `x` and `y` becomes m block files plus a held-out test file, reproducibly from a seed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyk_core::dataset::{FEATURES_TENSOR, LABELS_TENSOR, MANIFEST_FILE, Manifest, TEST_FILE, block_file};
use anyk_core::minibatch::permutation;
use clap::Args;
use safetensors::tensor::{Dtype, TensorView};

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Input: `.csv`, `.csv.gz` (features then label per row, no header) or `.safetensors` (x, y).
    #[arg(long)]
    pub input: PathBuf,
    /// Number of blocks m.
    #[arg(long)]
    pub blocks: u32,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of samples held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("failed to read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}, line {line}: {why}")]
    Csv { path: PathBuf, line: usize, why: String },
    #[error("{path}: {why}")]
    Safetensors { path: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("failed to write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to write {path}")]
    Encode {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("failed to encode the manifest")]
    Manifest(#[source] serde_json::Error),
}

/// A data set in memory: row-major features and integer labels.
pub struct DataSet {
    pub features: usize,
    pub x: Vec<f32>,
    pub y: Vec<i64>,
}

pub fn run(args: &SplitArgs) -> Result<Manifest, SplitError> {
    let data = read(&args.input)?;
    let n = data.y.len();
    if args.blocks == 0 {
        return Err(SplitError::Invalid("--blocks must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&args.test_fraction) {
        return Err(SplitError::Invalid(format!(
            "--test-fraction must be in [0, 1), got {}",
            args.test_fraction
        )));
    }
    let test = (n as f64 * args.test_fraction).round() as usize;
    let train = n - test;
    if train < args.blocks as usize {
        return Err(SplitError::Invalid(format!(
            "{train} training samples cannot fill {} blocks (need at least one sample per block)",
            args.blocks
        )));
    }
    // Scale features to [-1, 1] by the largest magnitude seen in training data.
    let order = permutation(args.seed, n);
    let (test_rows, train_rows) = order.split_at(test);
    let scale = train_rows
        .iter()
        .flat_map(|&r| &data.x[r * data.features..(r + 1) * data.features])
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    std::fs::create_dir_all(&args.out).map_err(|source| SplitError::Write {
        path: args.out.clone(),
        source,
    })?;
    let m = args.blocks as usize;
    for (block, b) in (0..args.blocks).zip(0..m) {
        let rows = &train_rows[b * train / m..(b + 1) * train / m];
        write(&args.out.join(block_file(block)), &data, rows, scale)?;
    }
    write(&args.out.join(TEST_FILE), &data, test_rows, scale)?;
    let manifest = Manifest {
        blocks: args.blocks,
        features: data.features as u64,
        // Labels are non-negative (checked on reading).
        classes: data.y.iter().copied().max().unwrap_or(0).unsigned_abs() + 1,
        train_samples: train as u64,
        test_samples: test as u64,
        scale,
        seed: args.seed,
        source: args.input.display().to_string(),
    };
    // Written last and renamed into place: a worker waiting for the data set (on a cluster,
    // beside the split Job) takes a complete manifest as "every block is there".
    let path = args.out.join(MANIFEST_FILE);
    let partial = args.out.join(format!(".{MANIFEST_FILE}.partial"));
    std::fs::write(&partial, manifest.to_json().map_err(SplitError::Manifest)?)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|source| SplitError::Write { path, source })?;
    Ok(manifest)
}

fn read(path: &Path) -> Result<DataSet, SplitError> {
    let bytes = std::fs::read(path).map_err(|source| SplitError::Read {
        path: path.into(),
        source,
    })?;
    let name = path.to_string_lossy();
    if name.ends_with(".safetensors") {
        return read_safetensors(path, &bytes);
    }
    let text = if name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .map_err(|source| SplitError::Read {
                path: path.into(),
                source,
            })?;
        text
    } else {
        String::from_utf8(bytes).map_err(|e| SplitError::Csv {
            path: path.into(),
            line: 0,
            why: e.to_string(),
        })?
    };
    read_csv(path, &text)
}

fn read_csv(path: &Path, text: &str) -> Result<DataSet, SplitError> {
    let mut data = DataSet {
        features: 0,
        x: Vec::new(),
        y: Vec::new(),
    };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let err = |why: String| SplitError::Csv {
            path: path.into(),
            line: i + 1,
            why,
        };
        let values: Vec<f64> = line
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|e| err(format!("{v:?} is not a number ({e})")))
            })
            .collect::<Result<_, _>>()?;
        if values.len() < 2 {
            return Err(err("need at least one feature and a label".into()));
        }
        let features = values.len() - 1;
        if data.features == 0 {
            data.features = features;
        } else if features != data.features {
            return Err(err(format!(
                "{features} features, earlier rows have {}",
                data.features
            )));
        }
        let label = values[features];
        if label < 0.0 || label.fract() != 0.0 {
            return Err(err(format!("label {label} is not a non-negative integer")));
        }
        data.x.extend(values[..features].iter().map(|&v| v as f32));
        data.y.push(label as i64);
    }
    if data.y.is_empty() {
        return Err(SplitError::Csv {
            path: path.into(),
            line: 0,
            why: "no rows".into(),
        });
    }
    Ok(data)
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<DataSet, SplitError> {
    let err = |why: String| SplitError::Safetensors {
        path: path.into(),
        why,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let x = st
        .tensor(FEATURES_TENSOR)
        .map_err(|_| err(format!("no tensor named {FEATURES_TENSOR:?}")))?;
    let y = st
        .tensor(LABELS_TENSOR)
        .map_err(|_| err(format!("no tensor named {LABELS_TENSOR:?}")))?;
    if x.dtype() != Dtype::F32 || x.shape().len() != 2 {
        return Err(err(format!(
            "x must be a 2-d F32 tensor, got {:?} {:?}",
            x.dtype(),
            x.shape()
        )));
    }
    let labels: Vec<i64> = match y.dtype() {
        Dtype::I64 => y
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
            .collect(),
        Dtype::I32 => y
            .data()
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        other => return Err(err(format!("y must be I64 or I32, got {other:?}"))),
    };
    if labels.len() != x.shape()[0] || labels.iter().any(|&l| l < 0) {
        return Err(err("y must hold one non-negative label per row of x".into()));
    }
    let values = x
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    Ok(DataSet {
        features: x.shape()[1],
        x: values,
        y: labels,
    })
}

fn write(path: &Path, data: &DataSet, rows: &[usize], scale: f32) -> Result<(), SplitError> {
    let f = data.features;
    let x: Vec<u8> = rows
        .iter()
        .flat_map(|&r| {
            data.x[r * f..(r + 1) * f]
                .iter()
                .flat_map(|v| (v / scale).to_le_bytes())
        })
        .collect();
    let y: Vec<u8> = rows.iter().flat_map(|&r| data.y[r].to_le_bytes()).collect();
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
            TensorView::new(Dtype::I64, vec![rows.len()], &y).map_err(encode)?,
        ),
    ]);
    safetensors::serialize_to_file(tensors, None, path).map_err(encode)
}
