//! Checked conversion between wire tensors and f32 vectors.

use anyk_core::part::Part;
use anyk_proto::v1::{DataType, Tensor};

use crate::error::RequestError;

/// Decodes a wire tensor of `want` f32 values, rejecting other dtypes, shapes and non-finite values.
pub fn decode(tensor: Option<&Tensor>, want: usize) -> Result<Vec<f32>, RequestError> {
    Ok(check_length(checked_part(tensor)?, want)?.into_values())
}

/// A wire tensor of any length (checked against the model later, under the job lock) as a
/// part that keeps its bytes: its dtype, size and finiteness checked, nothing copied.
pub fn checked_part(tensor: Option<&Tensor>) -> Result<Part, RequestError> {
    let tensor = tensor.ok_or(RequestError::MissingTensor)?;
    // A whole unit's sum may come as bf16 (the aggregator checks that the job and the part
    // allow it); everything else is f32.
    let (width, wire): (u64, fn(_) -> _) = match DataType::try_from(tensor.dtype) {
        Ok(DataType::F32) => (4, Part::wire),
        Ok(DataType::Bf16) => (2, Part::wire_bf16),
        _ => return Err(RequestError::UnsupportedDtype(tensor.dtype)),
    };
    let ragged = || RequestError::RaggedTensor {
        length: tensor.length,
        bytes: tensor.data.len(),
    };
    // Sizes are checked before anything is decoded, so a wrong tensor costs no copy.
    if tensor.length.checked_mul(width) != Some(tensor.data.len() as u64) {
        return Err(ragged());
    }
    let part = wire(tensor.data.clone()).map_err(|_| ragged())?;
    if let Some((index, value)) = part.first_non_finite() {
        return Err(RequestError::NotFinite { index, value });
    }
    Ok(part)
}

/// `values` if the model has exactly that many parameters.
pub fn check_length(values: Part, want: usize) -> Result<Part, RequestError> {
    if values.len() != want {
        return Err(RequestError::WrongLength {
            got: values.len() as u64,
            want: want as u64,
        });
    }
    Ok(values)
}

pub fn encode(values: &[f32]) -> Tensor {
    Tensor::from_f32(values)
}
