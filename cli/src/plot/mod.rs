//! `anyk plot`: a picture of a run from the history its checkpoint carries: loss, step time,
//! stragglers skipped and coverage margin by step, with the repairs and rebalances marked.
//! PNG or SVG; the text is drawn with a bundled DejaVu Sans, so no system font library is needed.

mod chart;

use std::path::{Path, PathBuf};

use anyk_core::checkpoint::{Checkpoint, CheckpointError};
use anyk_core::history::History;
use clap::Args;
use plotters::prelude::{BitMapBackend, SVGBackend};

/// Pixels; large enough for three panels and their labels, small enough for a README.
const SIZE: (u32, u32) = (1200, 900);

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A checkpoint file (`ckpt-*.anyk`) written by the parameter server.
    pub checkpoint: PathBuf,
    /// The picture to write: a `.png` or `.svg` file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("failed to read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to decode {path} as an anyk checkpoint")]
    Decode { path: PathBuf, source: CheckpointError },
    #[error(
        "{0} holds no history of steps (it was written before the first step, or before checkpoints kept one)"
    )]
    NoHistory(PathBuf),
    #[error("{0}: the picture must be a .png or .svg file")]
    Format(PathBuf),
    #[error("failed to draw the picture: {0}")]
    Draw(String),
    #[error("failed to write {path}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The picture formats, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

impl Format {
    fn of(path: &Path) -> Result<Self, PlotError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Self::Png),
            Some("svg") => Ok(Self::Svg),
            _ => Err(PlotError::Format(path.to_path_buf())),
        }
    }
}

pub fn run(args: &PlotArgs) -> Result<(), PlotError> {
    plot_checkpoint(&args.checkpoint, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Draws the history of the checkpoint file at `checkpoint` into `out` (PNG or SVG).
pub fn plot_checkpoint(checkpoint: &Path, out: &Path) -> Result<(), PlotError> {
    // Checked first: a wrong name should not cost reading a large checkpoint.
    let format = Format::of(out)?;
    let bytes = std::fs::read(checkpoint).map_err(|source| PlotError::Read {
        path: checkpoint.to_path_buf(),
        source,
    })?;
    let ckpt = Checkpoint::decode(&bytes).map_err(|source| PlotError::Decode {
        path: checkpoint.to_path_buf(),
        source,
    })?;
    if ckpt.history.steps.is_empty() {
        return Err(PlotError::NoHistory(checkpoint.to_path_buf()));
    }
    write(&ckpt.history, format, out)
}

fn write(history: &History, format: Format, out: &Path) -> Result<(), PlotError> {
    let bytes = match format {
        Format::Png => png(history)?,
        Format::Svg => {
            let mut text = String::new();
            chart::draw(SVGBackend::with_string(&mut text, SIZE), history)?;
            text.into_bytes()
        }
    };
    std::fs::write(out, bytes).map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// The picture as PNG bytes: drawn into an RGB buffer, then encoded.
fn png(history: &History) -> Result<Vec<u8>, PlotError> {
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    chart::draw(BitMapBackend::with_buffer(&mut rgb, SIZE), history)?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let encoding = |e: png::EncodingError| PlotError::Draw(format!("PNG encoding: {e}"));
    let mut writer = encoder.write_header().map_err(encoding)?;
    writer.write_image_data(&rgb).map_err(encoding)?;
    writer.finish().map_err(encoding)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
