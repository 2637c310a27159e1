//! `anyk data fetch`: one file (a TorchScript model, say) from where `anyk data split` reads
//! data, written whole or not at all. The operator's staging Job fetches a model given by URI
//! with it, beside the data.

use std::path::PathBuf;

use clap::Args;

use super::SplitError;
use super::source::{self, SourceError};

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// `s3://BUCKET/KEY`, `http(s)://...` or a local file (as `anyk data split --input`).
    #[arg(long)]
    pub input: String,
    /// Where to write it.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &FetchArgs) -> Result<u64, SplitError> {
    let mut files = source::read_any(&args.input)?;
    if files.len() != 1 {
        return Err(SourceError::Invalid(format!(
            "{}: expected one file, found {}",
            args.input,
            files.len()
        ))
        .into());
    }
    let file = files.remove(0);
    let write_err = |source| SplitError::Write {
        path: args.out.clone(),
        source,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let name = args
        .out
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let partial = args.out.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, &file.bytes)
        .and_then(|()| std::fs::rename(&partial, &args.out))
        .map_err(write_err)?;
    Ok(file.bytes.len() as u64)
}
