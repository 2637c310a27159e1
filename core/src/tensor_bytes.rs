//! Flat f32 vectors on the wire and on disk: little-endian bytes, 4 per value.

/// Encodes values as little-endian bytes.
pub fn to_bytes(values: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * 4];
    // Fixed-size chunks: the compiler turns this into a plain copy on little-endian machines.
    for (out, v) in bytes.chunks_exact_mut(4).zip(values) {
        out.copy_from_slice(&v.to_le_bytes());
    }
    bytes
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes is not a whole number of 4-byte f32 values")]
pub struct RaggedBytes {
    pub len: usize,
}

/// Decodes little-endian f32 bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<f32>, RaggedBytes> {
    if !bytes.len().is_multiple_of(4) {
        return Err(RaggedBytes { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The first non-finite value and its index. A branch-free pass first (it vectorizes, where a
/// search that stops at the first hit does not); the search only when that pass found one.
pub fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    if values.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return None;
    }
    values.iter().position(|v| !v.is_finite()).map(|i| (i, values[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_bit() {
        let v = vec![1.5, -0.0, f32::MIN_POSITIVE, 3.0e38];
        assert_eq!(from_bytes(&to_bytes(&v)).unwrap(), v);
        assert_eq!(from_bytes(&[0, 1, 2]), Err(RaggedBytes { len: 3 }));
    }

    #[test]
    fn the_first_non_finite_value_is_named() {
        assert_eq!(first_non_finite(&[1.0, -0.0, 3.0]), None);
        let found = first_non_finite(&[1.0, f32::INFINITY, f32::NAN]);
        assert!(matches!(found, Some((1, v)) if v == f32::INFINITY));
    }
}
