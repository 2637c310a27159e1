//! A checkpoint as files other tools read: safetensors with the model's own parameter names
//! (what `torch.nn.Module.load_state_dict` takes), and for a TorchScript model the module itself
//! with the trained weights (what `torch.jit.load` takes). Files are written beside their final
//! name and renamed into place, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::model::{Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("failed to write {path}")]
    Write { path: PathBuf, source: tch::TchError },
    #[error("failed to create or move {path}")]
    Rename { path: PathBuf, source: std::io::Error },
    #[error("the built-in mlp has no TorchScript form: --torchscript-out needs a TorchScript model")]
    NoScript,
}

/// Writes the model's parameters (already set from a checkpoint) to `out` as safetensors.
pub fn safetensors(model: &Model, out: &Path) -> Result<(), ExportError> {
    let named: Vec<(&str, Tensor)> = model
        .named_params()
        .map(|(name, p)| (name, p.detach().to_device(tch::Device::Cpu)))
        .collect();
    into_place(out, |partial| Tensor::write_safetensors(&named, partial))
}

/// Writes a TorchScript model, with its parameters as they are now, to `out`.
pub fn torchscript(model: &Model, out: &Path) -> Result<(), ExportError> {
    let Model::Script { module, .. } = model else {
        return Err(ExportError::NoScript);
    };
    into_place(out, |partial| module.save(partial))
}

fn into_place(out: &Path, write: impl FnOnce(&Path) -> Result<(), tch::TchError>) -> Result<(), ExportError> {
    let name = out
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let partial = out.with_file_name(format!(".{name}.partial"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ExportError::Rename {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write(&partial).map_err(|source| ExportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    std::fs::rename(&partial, out).map_err(|source| ExportError::Rename {
        path: out.to_path_buf(),
        source,
    })
}
