//! `anyk data split`: a data set (CSV with or without a header, optionally gzip'd, or
//! safetensors with `x` and `y`; a file, a directory of them, an http(s) URL or S3-compatible
//! storage) becomes m block files plus a held-out test file, reproducibly from a seed. Bad data
//! is refused before anything is written; the output appears whole or not at all.

mod csv_table;
pub mod fetch;
pub mod source;
pub mod table;
mod write;

use anyk_core::dataset::{LabelKind, Manifest};
use anyk_core::minibatch::permutation;
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub use table::Header;
pub use write::Outcome;

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Input: a `.csv`, `.csv.gz` or `.safetensors` (x, y) file, a directory of them,
    /// `http(s)://...`, or `s3://BUCKET/KEY` (a KEY ending in `/` means every data file under
    /// it; credentials, region and a non-AWS endpoint from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL).
    #[arg(long)]
    pub input: String,
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
    /// `class`: labels are class ids 0..C; `value`: real-valued targets (for models with
    /// `forward(x, y) -> loss`).
    #[arg(long, default_value = "class")]
    pub labels: LabelKind,
    /// Whether CSV files start with a header row (`auto`: when a first-row field is not a number).
    #[arg(long, value_enum, default_value = "auto")]
    pub header: Header,
    /// The CSV label column, by header name or 0-based index (default: the last column).
    #[arg(long)]
    pub label_column: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// Bad data or bad arguments, with where the problem is.
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

pub fn run(args: &SplitArgs) -> Result<(Manifest, Outcome), SplitError> {
    if args.blocks == 0 {
        return Err(SplitError::Invalid("--blocks must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&args.test_fraction) {
        return Err(SplitError::Invalid(format!(
            "--test-fraction must be in [0, 1), got {}",
            args.test_fraction
        )));
    }
    eprintln!("anyk data split: reading {}", args.input);
    let files = source::read(&args.input)?;
    let input_sha256 = digest(&files);
    let reading = table::Reading {
        labels: args.labels,
        header: args.header,
        label_column: args.label_column.clone(),
    };
    let data = table::read(&files, &reading).map_err(SplitError::Invalid)?;
    let n = data.samples();
    eprintln!(
        "anyk data split: {n} samples, {} features, from {} file(s); checked",
        data.features,
        files.len()
    );
    let test = (n as f64 * args.test_fraction).round() as usize;
    let train = n - test;
    if train < args.blocks as usize {
        return Err(SplitError::Invalid(format!(
            "{n} samples leave {train} for training, which cannot fill {} blocks (need at least one sample per block)",
            args.blocks
        )));
    }
    let order = permutation(args.seed, n);
    let (test_rows, train_rows) = order.split_at(test);
    let plan = write::Plan {
        data: &data,
        train_rows,
        test_rows,
        scale: scale(&data, train_rows),
    };
    let manifest = Manifest {
        blocks: args.blocks,
        features: data.features as u64,
        classes: data.classes(),
        labels: args.labels,
        train_samples: train as u64,
        test_samples: test as u64,
        scale: plan.scale,
        seed: args.seed,
        source: args.input.clone(),
        input_sha256,
        test_fraction: args.test_fraction,
    };
    let outcome = write::commit(&args.out, &manifest, &plan)?;
    Ok((manifest, outcome))
}

/// Features are scaled to [-1, 1] by the largest magnitude in the training split.
fn scale(data: &table::Table, train_rows: &[usize]) -> f32 {
    let f = data.features;
    train_rows
        .iter()
        .flat_map(|&r| &data.x[r * f..(r + 1) * f])
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE)
}

fn digest(files: &[source::InputFile]) -> String {
    let mut sum = Sha256::new();
    for file in files {
        sum.update((file.bytes.len() as u64).to_le_bytes());
        sum.update(&file.bytes);
    }
    hex::encode(sum.finalize())
}
