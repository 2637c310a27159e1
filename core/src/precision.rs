//! The precision gradients travel in (docs/design.md, "Reduced-precision gradients"). In bf16,
//! each reduction unit's gradient sum is rounded to bfloat16 once, to nearest even, and sent in
//! two bytes per value; everything above the units is summed in f32 as before. The rounding
//! point is a node of the job's fixed reduction tree, not a message: a unit sent whole by its
//! worker, sent whole by a backup, or assembled by the server from single blocks is rounded the
//! same way from the same f32 bits, so the final parameters are still bit-identical under any
//! arrival order and any failure within tolerance. They differ from an f32 job's.
//!
//! The rounding is done here, in Rust, on both sides (worker and server), never by libtorch, so
//! its bits cannot depend on the conversion kernel libtorch picks for a CPU (invariant 7).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum GradientPrecision {
    /// Gradients exactly as computed, 4 bytes per value.
    #[default]
    F32,
    /// Each unit's sum rounded to bfloat16: half the bytes of every on-time push.
    Bf16,
}

crate::names::named_values!(GradientPrecision, UnknownPrecision, "gradient precision", {
    F32 => "f32",
    Bf16 => "bf16",
});

/// The bfloat16 nearest to `x`, ties to even (the upper 16 bits of the rounded f32). A NaN
/// stays a NaN; a value within half a bf16 step of f32's largest rounds to infinity, which the
/// server's finiteness checks then refuse like any other overflow.
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let bias = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(bias) >> 16) as u16
}

/// `x` rounded to bfloat16, as an f32 (its lower 16 bits zero).
pub fn round_to_bf16(x: f32) -> f32 {
    widen(bf16_bits(x))
}

/// A bfloat16 as the f32 of the same value (exact).
pub fn widen(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Rounds every value to bfloat16 in place.
pub fn round_in_place(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = round_to_bf16(*v));
}

/// [`round_in_place`] over little-endian f32 bytes.
pub fn round_le_in_place(bytes: &mut [u8]) {
    for c in bytes.chunks_exact_mut(4) {
        let v = round_to_bf16(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        c.copy_from_slice(&v.to_le_bytes());
    }
}

/// Little-endian f32 bytes as little-endian bfloat16 bytes, each value rounded (what a worker
/// sends for a whole unit).
pub fn bf16_le_from_f32_le(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len() / 2];
    for (o, c) in out.chunks_exact_mut(2).zip(bytes.chunks_exact(4)) {
        let bits = bf16_bits(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        o.copy_from_slice(&bits.to_le_bytes());
    }
    out
}

/// The values of little-endian bfloat16 bytes, widened to f32 (exact).
pub fn bf16_le_values(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| widen(u16::from_le_bytes([c[0], c[1]])))
}

/// `acc += widened values of bf16 bytes`, element by element in f32.
pub fn add_bf16_le_into(acc: &mut [f32], bytes: &[u8]) {
    acc.iter_mut()
        .zip(bf16_le_values(bytes))
        .for_each(|(a, v)| *a += v);
}

/// [`add_bf16_le_into`] with the accumulator in little-endian f32 bytes, written in place.
pub fn add_bf16_le_into_le(acc: &mut [u8], bytes: &[u8]) {
    for (a, v) in acc.chunks_exact_mut(4).zip(bf16_le_values(bytes)) {
        let sum = f32::from_le_bytes([a[0], a[1], a[2], a[3]]) + v;
        a.copy_from_slice(&sum.to_le_bytes());
    }
}

/// The first non-finite value of little-endian bf16 bytes and its index.
pub fn first_non_finite_bf16_le(bytes: &[u8]) -> Option<(usize, f32)> {
    if bf16_le_values(bytes).fold(true, |ok, v| ok & v.is_finite()) {
        return None;
    }
    bf16_le_values(bytes).enumerate().find(|(_, v)| !v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_bytes::{from_bytes, to_bytes};

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for p in GradientPrecision::ALL {
            assert_eq!(p.as_str().parse::<GradientPrecision>(), Ok(p));
        }
        let err = "fp8".parse::<GradientPrecision>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown gradient precision \"fp8\" (expected f32 or bf16)"
        );
        assert_eq!(GradientPrecision::default(), GradientPrecision::F32);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        // 1 + 2^-8 is exactly half-way between bf16 neighbours 1 and 1 + 2^-7: to the even one.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        let odd = 1.0 + 2f32.powi(-7);
        assert_eq!(round_to_bf16(odd + 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // Just above half-way rounds up; just below, down.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), odd);
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8) - 2f32.powi(-20)), 1.0);
        assert_eq!(round_to_bf16(-2.5), -2.5, "exact values stay");
        assert_eq!(round_to_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        // Subnormals are rounded like any value, not flushed.
        let tiny = f32::from_bits(0x0001_0000);
        assert_eq!(round_to_bf16(tiny), tiny);
        assert_eq!(
            round_to_bf16(f32::from_bits(0x0001_8001)),
            f32::from_bits(0x0002_0000)
        );
        assert!(round_to_bf16(f32::MAX).is_infinite(), "overflow is not hidden");
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    #[test]
    fn every_form_rounds_and_sums_the_same_bits() {
        let v = [0.1f32, -3.3e-39, 12345.678, 1.0e30];
        let mut want = v;
        round_in_place(&mut want);
        let mut le = to_bytes(&v);
        round_le_in_place(&mut le);
        assert_eq!(from_bytes(&le).unwrap(), want);
        let wire = bf16_le_from_f32_le(&to_bytes(&v));
        assert_eq!(wire.len(), 8, "two bytes per value");
        assert_eq!(bf16_le_values(&wire).collect::<Vec<_>>(), want);
        let acc0 = [1.0f32, 2.0, -3.0, 4.0];
        let mut acc = acc0;
        add_bf16_le_into(&mut acc, &wire);
        let mut acc_le = to_bytes(&acc0);
        add_bf16_le_into_le(&mut acc_le, &wire);
        let sum: Vec<f32> = acc0.iter().zip(want).map(|(a, w)| a + w).collect();
        assert_eq!(acc.to_vec(), sum);
        assert_eq!(from_bytes(&acc_le).unwrap(), sum);
    }

    #[test]
    fn non_finite_bf16_values_are_found() {
        assert_eq!(
            first_non_finite_bf16_le(&bf16_le_from_f32_le(&to_bytes(&[1.0, 2.0]))),
            None
        );
        let bad = bf16_le_from_f32_le(&to_bytes(&[1.0, f32::MAX, f32::NAN]));
        assert!(matches!(first_non_finite_bf16_le(&bad), Some((1, v)) if v.is_infinite()));
    }
}
