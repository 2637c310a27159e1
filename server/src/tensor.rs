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
    if tensor.dtype != DataType::F32 as i32 {
        return Err(RequestError::UnsupportedDtype(tensor.dtype));
    }
    // Sizes are checked before anything is decoded, so a wrong tensor costs no copy.
    if tensor.length.checked_mul(4) != Some(tensor.data.len() as u64) {
        return Err(RequestError::RaggedTensor {
            length: tensor.length,
            bytes: tensor.data.len(),
        });
    }
    let part = Part::wire(tensor.data.clone()).map_err(|_| RequestError::RaggedTensor {
        length: tensor.length,
        bytes: tensor.data.len(),
    })?;
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
