//! A digest of parameters that two runs can compare bit for bit.

use sha2::{Digest, Sha256};

use crate::tensor_bytes;

/// SHA-256 (hex) of the parameters as little-endian f32 bytes.
pub fn param_sha256(params: &[f32]) -> String {
    hex::encode(Sha256::digest(tensor_bytes::to_bytes(params)))
}
