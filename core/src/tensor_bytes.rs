//! Flat f32 vectors on the wire and on disk: little-endian bytes, 4 per value.

use std::sync::Arc;

use bytes::Bytes;

/// Encodes values as little-endian bytes.
pub fn to_bytes(values: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * 4];
    // Fixed-size chunks: the compiler turns this into a plain copy on little-endian machines.
    for (out, v) in bytes.chunks_exact_mut(4).zip(values) {
        out.copy_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// `values` as little-endian wire bytes that share their memory (no copy) where the machine is
/// little-endian; the bytes keep the values alive, so a caller that wants them back to write
/// in place gets them only once every holder of the bytes is gone.
pub fn shared_le_bytes(values: Arc<Vec<f32>>) -> Bytes {
    #[cfg(target_endian = "little")]
    return Bytes::from_owner(LittleEndian(values));
    #[cfg(not(target_endian = "little"))]
    return Bytes::from(to_bytes(&values));
}

/// f32 values viewed as their little-endian bytes (what they are in memory here).
#[cfg(target_endian = "little")]
struct LittleEndian(Arc<Vec<f32>>);

#[cfg(target_endian = "little")]
impl AsRef<[u8]> for LittleEndian {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(self.0.as_slice())
    }
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

/// The values of little-endian bytes, one by one (a trailing partial value is ignored; callers
/// check the length first).
fn le_values(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// `acc += values of bytes`, element by element in f32: what adding the decoded values gives,
/// bit for bit, without decoding them into a vector first.
pub fn add_le_into(acc: &mut [f32], bytes: &[u8]) {
    acc.iter_mut().zip(le_values(bytes)).for_each(|(a, v)| *a += v);
}

/// [`add_le_into`] with the accumulator in little-endian bytes too, written in place.
pub fn add_le_into_le(acc: &mut [u8], bytes: &[u8]) {
    for (a, v) in acc.chunks_exact_mut(4).zip(le_values(bytes)) {
        let sum = f32::from_le_bytes([a[0], a[1], a[2], a[3]]) + v;
        a.copy_from_slice(&sum.to_le_bytes());
    }
}

/// The element-wise f32 sum of two little-endian byte arrays of the same length.
pub fn sum_le(a: &[u8], b: &[u8]) -> Vec<f32> {
    le_values(a).zip(le_values(b)).map(|(x, y)| x + y).collect()
}

/// [`first_non_finite`] over little-endian bytes, without decoding them into a vector.
pub fn first_non_finite_le(bytes: &[u8]) -> Option<(usize, f32)> {
    if le_values(bytes).fold(true, |ok, v| ok & v.is_finite()) {
        return None;
    }
    le_values(bytes).enumerate().find(|(_, v)| !v.is_finite())
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
        assert_eq!(first_non_finite_le(&to_bytes(&[1.0, -0.0, 3.0])), None);
        let found = first_non_finite_le(&to_bytes(&[1.0, 2.0, f32::NAN, f32::INFINITY]));
        assert!(matches!(found, Some((2, v)) if v.is_nan()));
    }

    #[test]
    fn shared_bytes_are_the_encoding_and_keep_the_values_alive() {
        let values = Arc::new(vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e38]);
        let bytes = shared_le_bytes(values.clone());
        assert_eq!(&bytes[..], &to_bytes(&values)[..]);
        let values = Arc::try_unwrap(values).expect_err("the bytes still hold the values");
        drop(bytes);
        assert!(
            Arc::try_unwrap(values).is_ok(),
            "dropping the bytes lets the values go"
        );
    }

    #[test]
    fn sums_over_bytes_equal_sums_over_values() {
        let a = [0.1f32, 1.0e30, -3.5, f32::MIN_POSITIVE];
        let b = [0.2f32, 1.0e30, 3.5, 1.0e-3];
        let mut want = a;
        want.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        let mut acc = a;
        add_le_into(&mut acc, &to_bytes(&b));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&acc), bits(&want));
        assert_eq!(bits(&sum_le(&to_bytes(&a), &to_bytes(&b))), bits(&want));
        let mut in_place = to_bytes(&a);
        add_le_into_le(&mut in_place, &to_bytes(&b));
        assert_eq!(bits(&from_bytes(&in_place).unwrap()), bits(&want));
    }
}
