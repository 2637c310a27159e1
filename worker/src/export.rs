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
    #[error("the built-in mlp has no fc1/fc2 weight and bias: not the model this export traces")]
    NotTheMlp,
    #[error("failed to create or move {path}")]
    Rename { path: PathBuf, source: std::io::Error },
}

/// Writes the model's parameters (already set from a checkpoint) to `out` as safetensors.
pub fn safetensors(model: &Model, out: &Path) -> Result<(), ExportError> {
    let named: Vec<(&str, Tensor)> = model
        .named_params()
        .map(|(name, p)| (name, p.detach().to_device(tch::Device::Cpu)))
        .collect();
    into_place(out, |partial| Tensor::write_safetensors(&named, partial))
}

/// Writes the model as TorchScript, with its parameters as they are now, to `out`: the user's
/// module itself, or the built-in mlp traced (its trained weights become the trace's constants).
pub fn torchscript(model: &Model, out: &Path) -> Result<(), ExportError> {
    match model {
        Model::Script { module, .. } => into_place(out, |partial| module.save(partial)),
        Model::Mlp { .. } => {
            let weight = |name: &str| {
                model
                    .named_params()
                    .find(|(n, _)| *n == name)
                    .map(|(_, p)| p.detach())
            };
            let (Some(w1), Some(b1), Some(w2), Some(b2)) = (
                weight("fc1.weight"),
                weight("fc1.bias"),
                weight("fc2.weight"),
                weight("fc2.bias"),
            ) else {
                return Err(ExportError::NotTheMlp);
            };
            // Detached copies: a trace keeps them as constants (a tensor that requires grad
            // cannot be one); the computation is the built-in mlp's (fc1, ReLU, fc2).
            let example = Tensor::zeros([1, w1.size()[1]], (tch::Kind::Float, w1.device()));
            let traced = tch::CModule::create_by_tracing("AnykMlp", "forward", &[example], &mut |inputs| {
                vec![inputs[0].linear(&w1, Some(&b1)).relu().linear(&w2, Some(&b2))]
            })
            .map_err(|source| ExportError::Write {
                path: out.to_path_buf(),
                source,
            })?;
            into_place(out, |partial| traced.save(partial))
        }
    }
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
