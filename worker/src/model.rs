//! Models a worker can train: the built-in MLP, or the user's own TorchScript file.
//! Either way the parameters are seen as one flat f32 vector in a canonical order (sorted by
//! name), which is what travels to and from the parameter server.

use std::path::Path;

use anyk_core::ModelContract;
use tch::{Device, Kind, Tensor, nn, nn::Module};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("failed to load TorchScript model {path}")]
    Load { path: String, source: tch::TchError },
    #[error("failed to run the model")]
    Torch(#[from] tch::TchError),
    #[error("parameters have {got} values, the model has {want}")]
    WrongLength { got: usize, want: usize },
    #[error("forward(x, y) must return a scalar loss (contract `loss`), got a tensor of shape {shape:?}")]
    NotALoss { shape: Vec<i64> },
}

/// Which model to build.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// Two-layer perceptron with a ReLU hidden layer.
    Mlp {
        features: i64,
        hidden: i64,
        classes: i64,
    },
    /// A TorchScript module; `contract` says what its `forward` takes and returns.
    TorchScript {
        path: std::path::PathBuf,
        contract: ModelContract,
    },
}

pub enum Model {
    Mlp {
        _vs: nn::VarStore,
        net: nn::Sequential,
        params: Vec<Tensor>,
        names: Vec<String>,
    },
    Script {
        module: tch::CModule,
        params: Vec<Tensor>,
        names: Vec<String>,
        contract: ModelContract,
    },
}

impl Model {
    /// Builds the model on `device`. Built-in weights come from `seed`, drawn on the CPU so that
    /// every worker, whatever its device, starts from the same parameters.
    pub fn build(spec: &ModelSpec, seed: u64, device: Device) -> Result<Self, ModelError> {
        match spec {
            ModelSpec::Mlp {
                features,
                hidden,
                classes,
            } => {
                tch::manual_seed(seed as i64);
                let mut vs = nn::VarStore::new(Device::Cpu);
                let root = vs.root();
                let net = nn::seq()
                    .add(nn::linear(&root / "fc1", *features, *hidden, Default::default()))
                    .add_fn(|x| x.relu())
                    .add(nn::linear(&root / "fc2", *hidden, *classes, Default::default()));
                vs.set_device(device);
                let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                let (names, params) = named.into_iter().unzip();
                Ok(Model::Mlp {
                    _vs: vs,
                    net,
                    params,
                    names,
                })
            }
            ModelSpec::TorchScript { path, contract } => {
                let module =
                    tch::CModule::load_on_device(path, device).map_err(|source| ModelError::Load {
                        path: display(path),
                        source,
                    })?;
                let mut named = module.named_parameters()?;
                named.sort_by(|a, b| a.0.cmp(&b.0));
                let (names, params) = named
                    .into_iter()
                    .map(|(name, t)| (name, t.set_requires_grad(true)))
                    .unzip();
                Ok(Model::Script {
                    module,
                    params,
                    names,
                    contract: *contract,
                })
            }
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            Model::Mlp { net, .. } => net.forward(xs),
            Model::Script { module, .. } => module.forward_ts(&[xs])?,
        })
    }

    /// The loss of a minibatch: the cross-entropy of the logits against class ids, or what a
    /// `forward(x, y) -> loss` model returns (which must be one value).
    pub fn loss(&self, xs: &Tensor, ys: &Tensor) -> Result<Tensor, ModelError> {
        if let Model::Script {
            module,
            contract: ModelContract::Loss,
            ..
        } = self
        {
            let loss = module.forward_ts(&[xs, ys])?;
            if loss.numel() != 1 {
                return Err(ModelError::NotALoss { shape: loss.size() });
            }
            return Ok(loss.reshape([] as [i64; 0]));
        }
        Ok(self.forward(xs)?.cross_entropy_for_logits(ys))
    }

    pub fn contract(&self) -> ModelContract {
        match self {
            Model::Mlp { .. } => ModelContract::Logits,
            Model::Script { contract, .. } => *contract,
        }
    }

    fn params(&self) -> &[Tensor] {
        match self {
            Model::Mlp { params, .. } | Model::Script { params, .. } => params,
        }
    }

    /// The parameters with the model's own names, in the flat vector's order.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        let names = match self {
            Model::Mlp { names, .. } | Model::Script { names, .. } => names,
        };
        names.iter().map(String::as_str).zip(self.params())
    }

    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// The parameters as one flat f32 vector.
    pub fn flat_params(&self) -> Result<Vec<f32>, ModelError> {
        flatten(self.params().iter().map(|p| p.shallow_clone()))
    }

    /// Overwrites the parameters from a flat vector.
    pub fn set_flat_params(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        self.set_from(&Tensor::from_slice(flat))
    }

    /// Overwrites the parameters from little-endian f32 wire bytes, copied once into a tensor.
    pub fn set_params_from_bytes(&mut self, bytes: &[u8]) -> Result<(), ModelError> {
        if cfg!(target_endian = "big") || !bytes.len().is_multiple_of(4) {
            let flat = anyk_core::tensor_bytes::from_bytes(bytes).map_err(|_| ModelError::WrongLength {
                got: bytes.len() / 4,
                want: self.param_count(),
            })?;
            return self.set_flat_params(&flat);
        }
        let flat = Tensor::f_from_data_size(bytes, &[(bytes.len() / 4) as i64], Kind::Float)?;
        self.set_from(&flat)
    }

    fn set_from(&mut self, flat: &Tensor) -> Result<(), ModelError> {
        let (want, got) = (self.param_count(), flat.numel());
        if got != want {
            return Err(ModelError::WrongLength { got, want });
        }
        let mut offset = 0;
        tch::no_grad(|| -> Result<(), ModelError> {
            for p in self.params() {
                let n = p.numel() as i64;
                let src = flat.narrow(0, offset, n).view_as(p);
                if p.device() == flat.device() && p.kind() == flat.kind() {
                    // The parameter takes a view of `flat` as its data (`param.data = ...`):
                    // no second model-sized copy per step.
                    p.shallow_clone().f_set_data(&src)?;
                } else {
                    p.shallow_clone().f_copy_(&src.to_device(p.device()))?;
                }
                offset += n;
            }
            Ok(())
        })
    }

    /// The loss of `xs` against labels `ys` ([`Model::loss`]), and the flat gradient of the parameters.
    pub fn gradient(&mut self, xs: &Tensor, ys: &Tensor) -> Result<(Vec<f32>, f32), ModelError> {
        let (flat, loss) = self.gradient_tensor(xs, ys)?;
        Ok((Vec::<f32>::try_from(&flat)?, loss))
    }

    /// [`Model::gradient`] as one flat, contiguous f32 tensor on the CPU (no copy to a vector).
    pub fn gradient_tensor(&mut self, xs: &Tensor, ys: &Tensor) -> Result<(Tensor, f32), ModelError> {
        let loss = self.loss(xs, ys)?;
        // The gradients as new tensors (torch.autograd.grad), not accumulated into `.grad`:
        // no zeroing pass and no `0 + g` pass per parameter (DDP's set_to_none does the same).
        let grads = Tensor::f_run_backward(&[&loss], self.params(), false, false)?;
        let flat = flatten_tensor(grads.into_iter())?;
        Ok((flat, loss.double_value(&[]) as f32))
    }
}

/// A flat f32 tensor's values as little-endian bytes, in one copy.
pub fn tensor_to_bytes(flat: &Tensor) -> Result<Vec<u8>, ModelError> {
    let numel = flat.numel();
    if cfg!(target_endian = "big") {
        return Ok(anyk_core::tensor_bytes::to_bytes(&Vec::<f32>::try_from(flat)?));
    }
    let mut bytes = vec![0u8; numel * 4];
    flat.f_copy_data_u8(&mut bytes, numel)?;
    Ok(bytes)
}

fn flatten(tensors: impl Iterator<Item = Tensor>) -> Result<Vec<f32>, ModelError> {
    Ok(Vec::<f32>::try_from(&flatten_tensor(tensors)?)?)
}

fn flatten_tensor(tensors: impl Iterator<Item = Tensor>) -> Result<Tensor, ModelError> {
    let parts: Vec<Tensor> = tensors
        .map(|t| {
            t.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1)
        })
        .collect();
    Ok(Tensor::f_cat(&parts, 0)?.contiguous())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
