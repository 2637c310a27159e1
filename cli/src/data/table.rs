//! Input files to one in-memory table of samples, with every check a training job needs: a bad
//! value is refused here, naming its file, line (or tensor and sample) and column, instead of
//! surfacing later as a NaN loss or a crash in a worker.

use std::io::Read;

use anyk_core::dataset::{FEATURES_TENSOR, LABELS_TENSOR, LabelKind, MAX_CLASSES};
use safetensors::tensor::Dtype;

use super::source::InputFile;

/// How to find a CSV file's header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Header {
    /// A first row with a field that is not a number is a header.
    Auto,
    Yes,
    No,
}

/// How to read the input files.
#[derive(Debug, Clone)]
pub struct Reading {
    pub labels: LabelKind,
    pub header: Header,
    /// A CSV file's label column: a header name or a 0-based index; `None`: the last column.
    pub label_column: Option<String>,
}

/// Samples in memory: row-major features and one label per row.
pub struct Table {
    pub features: usize,
    pub x: Vec<f32>,
    pub labels: Labels,
}

pub enum Labels {
    Class(Vec<i64>),
    Value(Vec<f32>),
}

impl Table {
    pub fn samples(&self) -> usize {
        match &self.labels {
            Labels::Class(y) => y.len(),
            Labels::Value(y) => y.len(),
        }
    }

    /// Classes (largest label + 1); 0 for values.
    pub fn classes(&self) -> u64 {
        match &self.labels {
            Labels::Class(y) => y.iter().max().map_or(0, |&l| l.unsigned_abs() + 1),
            Labels::Value(_) => 0,
        }
    }

    pub(super) fn empty(labels: LabelKind) -> Self {
        Table {
            features: 0,
            x: Vec::new(),
            labels: match labels {
                LabelKind::Class => Labels::Class(Vec::new()),
                LabelKind::Value => Labels::Value(Vec::new()),
            },
        }
    }

    pub(super) fn push_label(&mut self, label: f64) {
        match &mut self.labels {
            Labels::Class(y) => y.push(label as i64),
            Labels::Value(y) => y.push(label as f32),
        }
    }

    /// Appends `other` (same features) and takes its rows.
    fn append(&mut self, other: Table) {
        self.x.extend(other.x);
        match (&mut self.labels, other.labels) {
            (Labels::Class(a), Labels::Class(b)) => a.extend(b),
            (Labels::Value(a), Labels::Value(b)) => a.extend(b),
            _ => unreachable!("every file is read with the same label kind"),
        }
    }
}

/// Reads every input file into one table; all files must have the same number of features.
pub fn read(files: &[InputFile], reading: &Reading) -> Result<Table, String> {
    let mut table = Table::empty(reading.labels);
    for file in files {
        let part = if file.name.ends_with(".safetensors") {
            read_safetensors(&file.bytes, reading.labels).map_err(|why| format!("{}: {why}", file.name))?
        } else {
            let text = text_of(file)?;
            super::csv_table::read(&text, reading).map_err(|why| format!("{}, {why}", file.name))?
        };
        if table.features != 0 && part.features != table.features {
            return Err(format!(
                "{} has {} features, earlier files have {}",
                file.name, part.features, table.features
            ));
        }
        table.features = part.features;
        table.append(part);
    }
    if table.samples() == 0 {
        return Err("no samples in the input".into());
    }
    Ok(table)
}

fn text_of(file: &InputFile) -> Result<String, String> {
    if file.name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&file.bytes[..])
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: not valid gzip'd UTF-8 text ({e})", file.name))?;
        return Ok(text);
    }
    String::from_utf8(file.bytes.clone()).map_err(|e| format!("{}: not UTF-8 text ({e})", file.name))
}

/// Checks one label; `at` names where it is.
pub fn check_label(label: f64, kind: LabelKind, at: &dyn Fn() -> String) -> Result<(), String> {
    match kind {
        LabelKind::Value if !label.is_finite() => Err(format!("{}: label {label} is not finite", at())),
        LabelKind::Value => Ok(()),
        LabelKind::Class if label < 0.0 || label.fract() != 0.0 || !label.is_finite() => Err(format!(
            "{}: label {label} is not a class id (a non-negative integer; use --labels value for regression targets)",
            at()
        )),
        LabelKind::Class if label >= MAX_CLASSES as f64 => Err(format!(
            "{}: label {label} would make more than {MAX_CLASSES} classes (use --labels value for regression targets)",
            at()
        )),
        LabelKind::Class => Ok(()),
    }
}

fn read_safetensors(bytes: &[u8], kind: LabelKind) -> Result<Table, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let x = st
        .tensor(FEATURES_TENSOR)
        .map_err(|_| format!("no tensor named {FEATURES_TENSOR:?}"))?;
    let y = st
        .tensor(LABELS_TENSOR)
        .map_err(|_| format!("no tensor named {LABELS_TENSOR:?}"))?;
    if x.dtype() != Dtype::F32 || x.shape().len() != 2 {
        return Err(format!(
            "tensor x must be 2-d F32, got {:?} {:?}",
            x.dtype(),
            x.shape()
        ));
    }
    let (rows, features) = (x.shape()[0], x.shape()[1]);
    if features == 0 {
        return Err("tensor x has no features (shape [N, 0])".into());
    }
    let values: Vec<f32> = x
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "tensor x, sample {}, feature {}: {} is not finite",
            i / features,
            i % features,
            values[i]
        ));
    }
    let labels = labels_of(&y)?;
    if labels.len() != rows || y.shape().len() != 1 {
        return Err(format!(
            "tensor y must hold one label per row of x ({rows}), got shape {:?}",
            y.shape()
        ));
    }
    let mut table = Table::empty(kind);
    table.features = features;
    table.x = values;
    for (i, &label) in labels.iter().enumerate() {
        check_label(label, kind, &|| format!("tensor y, sample {i}"))?;
        table.push_label(label);
    }
    Ok(table)
}

fn labels_of(y: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f64>, String> {
    let data = y.data();
    Ok(match y.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(array(c)) as f64)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_le_bytes(array(c))))
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(array(c))))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(array(c)))
            .collect(),
        other => return Err(format!("tensor y must be I64, I32, F32 or F64, got {other:?}")),
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}
