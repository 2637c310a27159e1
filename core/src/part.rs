//! One gradient part as the parameter server holds it: the little-endian bytes it arrived in,
//! or values already summed. A part is decoded only where it is added to another, so a push
//! costs no vector of its own beside its receive buffer (docs/design.md, "Aggregation as
//! parts arrive").

use bytes::{Bytes, BytesMut};

use crate::precision;
use crate::tensor_bytes::{self, RaggedBytes};

/// A gradient (or a sum of gradients) over the model's parameters.
#[derive(Debug, Clone)]
pub struct Part(Repr);

/// Wire forms hold a whole number of little-endian f32 values (bf16: 2-byte values), checked
/// when made.
#[derive(Debug, Clone)]
enum Repr {
    Values(Vec<f32>),
    /// The bytes as received, possibly shared with the request they came in.
    Shared(Bytes),
    /// Received bytes this part owns alone, summed into in place.
    Owned(BytesMut),
    /// A unit's sum received as bfloat16 ([`crate::precision`]): half the bytes while it waits
    /// for its sibling; widened (exactly) where it is added.
    Bf16(Bytes),
}

impl Part {
    /// A part kept as the little-endian bytes it arrived in; `bytes` must hold whole values.
    pub fn wire(bytes: Bytes) -> Result<Self, RaggedBytes> {
        if !bytes.len().is_multiple_of(4) {
            return Err(RaggedBytes { len: bytes.len() });
        }
        Ok(Self(Repr::Shared(bytes)))
    }

    /// A part kept as the little-endian bfloat16 bytes it arrived in (2 per value).
    pub fn wire_bf16(bytes: Bytes) -> Result<Self, RaggedBytes> {
        if !bytes.len().is_multiple_of(2) {
            return Err(RaggedBytes { len: bytes.len() });
        }
        Ok(Self(Repr::Bf16(bytes)))
    }

    /// How many values it has.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Values(v) => v.len(),
            Repr::Shared(b) => b.len() / 4,
            Repr::Owned(b) => b.len() / 4,
            Repr::Bf16(b) => b.len() / 2,
        }
    }

    /// Whether it arrived as bfloat16.
    pub fn is_bf16(&self) -> bool {
        matches!(self.0, Repr::Bf16(_))
    }

    /// Its values rounded to bfloat16 (in place where it can be written; a bf16 part already
    /// is). Rounding twice changes nothing, so a unit rounded by its sender stays as it came.
    pub fn rounded_to_bf16(self) -> Part {
        let repr = match self.0 {
            Repr::Values(mut v) => {
                precision::round_in_place(&mut v);
                Repr::Values(v)
            }
            Repr::Owned(mut b) => {
                precision::round_le_in_place(&mut b);
                Repr::Owned(b)
            }
            Repr::Shared(b) => match b.try_into_mut() {
                Ok(mut b) => {
                    precision::round_le_in_place(&mut b);
                    Repr::Owned(b)
                }
                Err(b) => {
                    let mut v = tensor_bytes::from_bytes(&b).unwrap_or_default();
                    precision::round_in_place(&mut v);
                    Repr::Values(v)
                }
            },
            bf16 @ Repr::Bf16(_) => bf16,
        };
        Part(repr)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its values (decoded if it is still in wire form).
    pub fn into_values(self) -> Vec<f32> {
        match self.0 {
            Repr::Values(v) => v,
            Repr::Shared(b) => tensor_bytes::from_bytes(&b).unwrap_or_default(),
            Repr::Owned(b) => tensor_bytes::from_bytes(&b).unwrap_or_default(),
            Repr::Bf16(b) => precision::bf16_le_values(&b).collect(),
        }
    }

    /// The first non-finite value and its index.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match &self.0 {
            Repr::Values(v) => tensor_bytes::first_non_finite(v),
            Repr::Bf16(b) => precision::first_non_finite_bf16_le(b),
            wire => tensor_bytes::first_non_finite_le(wire.le_bytes()),
        }
    }

    /// The element-wise f32 sum of two parts of the same length. IEEE addition of two values is
    /// commutative, so which operand accumulates does not change a bit. The sum is written into
    /// an operand where one can be written (values, or received bytes owned alone), so joining
    /// the parts of a step allocates nothing beyond the bytes they arrived in.
    pub fn join(self, other: Part) -> Part {
        let sum = match (self.0, other.0) {
            (Repr::Values(mut acc), b) | (b, Repr::Values(mut acc)) => {
                b.add_to(&mut acc);
                Repr::Values(acc)
            }
            (Repr::Owned(mut acc), b) | (b, Repr::Owned(mut acc)) => {
                b.add_to_le(&mut acc);
                Repr::Owned(acc)
            }
            (Repr::Shared(a), Repr::Bf16(b)) | (Repr::Bf16(b), Repr::Shared(a)) => match a.try_into_mut() {
                Ok(mut acc) => {
                    precision::add_bf16_le_into_le(&mut acc, &b);
                    Repr::Owned(acc)
                }
                Err(a) => {
                    let mut acc = tensor_bytes::from_bytes(&a).unwrap_or_default();
                    precision::add_bf16_le_into(&mut acc, &b);
                    Repr::Values(acc)
                }
            },
            (Repr::Bf16(a), Repr::Bf16(b)) => {
                let mut acc: Vec<f32> = precision::bf16_le_values(&a).collect();
                precision::add_bf16_le_into(&mut acc, &b);
                Repr::Values(acc)
            }
            (Repr::Shared(a), Repr::Shared(b)) => match a.try_into_mut() {
                Ok(mut acc) => {
                    tensor_bytes::add_le_into_le(&mut acc, &b);
                    Repr::Owned(acc)
                }
                Err(a) => match b.try_into_mut() {
                    Ok(mut acc) => {
                        tensor_bytes::add_le_into_le(&mut acc, &a);
                        Repr::Owned(acc)
                    }
                    Err(b) => Repr::Values(tensor_bytes::sum_le(&a, &b)),
                },
            },
        };
        Part(sum)
    }

    /// Whether both have exactly the same bits.
    pub fn same_bits(&self, other: &Part) -> bool {
        match (&self.0, &other.0) {
            (Repr::Values(a), Repr::Values(b)) => bits_equal(a.iter().copied(), b.iter().copied()),
            (Repr::Values(a), wire) | (wire, Repr::Values(a)) => {
                let bytes = wire.le_bytes();
                a.len() * 4 == bytes.len()
                    && bits_equal(
                        a.iter().copied(),
                        tensor_bytes::from_bytes(bytes).unwrap_or_default(),
                    )
            }
            // Only strict mode compares copies, and it never takes bf16: decoding both is fine.
            (a @ Repr::Bf16(_), b) | (b, a @ Repr::Bf16(_)) => {
                bits_equal(Part(a.clone()).into_values(), Part(b.clone()).into_values())
            }
            (a, b) => a.le_bytes() == b.le_bytes(),
        }
    }
}

impl Repr {
    /// The f32 wire bytes (empty for values and bf16, which callers handle first).
    fn le_bytes(&self) -> &[u8] {
        match self {
            Repr::Values(_) | Repr::Bf16(_) => &[],
            Repr::Shared(b) => b,
            Repr::Owned(b) => b,
        }
    }

    /// `acc += self`, element by element.
    fn add_to(&self, acc: &mut [f32]) {
        match self {
            Repr::Values(v) => crate::aggregate::add_into(acc, v),
            Repr::Bf16(b) => precision::add_bf16_le_into(acc, b),
            wire => tensor_bytes::add_le_into(acc, wire.le_bytes()),
        }
    }

    /// `acc += self` with the accumulator in little-endian f32 bytes.
    fn add_to_le(&self, acc: &mut [u8]) {
        match self {
            Repr::Bf16(b) => precision::add_bf16_le_into_le(acc, b),
            Repr::Values(v) => tensor_bytes::add_le_into_le(acc, &tensor_bytes::to_bytes(v)),
            wire => tensor_bytes::add_le_into_le(acc, wire.le_bytes()),
        }
    }
}

fn bits_equal(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> bool {
    a.into_iter()
        .map(f32::to_bits)
        .eq(b.into_iter().map(f32::to_bits))
}

impl From<Vec<f32>> for Part {
    fn from(values: Vec<f32>) -> Self {
        Self(Repr::Values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(values: &[f32]) -> Part {
        Part::wire(Bytes::from(tensor_bytes::to_bytes(values))).unwrap()
    }

    fn bits(v: Vec<f32>) -> Vec<u32> {
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn every_pairing_of_forms_sums_to_the_same_bits() {
        let a = vec![0.1f32, 3.0e38, -7.25, 1.0e-40];
        let b = vec![0.7f32, 3.0e38, 7.25, 2.0e-40];
        let want = bits(Part::from(a.clone()).join(Part::from(b.clone())).into_values());
        assert_eq!(want[1], f32::INFINITY.to_bits(), "overflow is kept, not hidden");
        for (x, y) in [
            (wire(&a), Part::from(b.clone())),
            (Part::from(a.clone()), wire(&b)),
            (wire(&a), wire(&b)),
            (wire(&b), wire(&a)),
        ] {
            assert_eq!(bits(x.join(y).into_values()), want);
        }
    }

    #[test]
    fn bf16_parts_join_every_form_as_their_widened_values() {
        let a = vec![0.1f32, -7.25, 1.0e-40, 5.0];
        let b = vec![0.7f32, 7.25, 2.0e-40, -1.0e30];
        let bf16 = |v: &[f32]| {
            let bytes = crate::precision::bf16_le_from_f32_le(&tensor_bytes::to_bytes(v));
            Part::wire_bf16(Bytes::from(bytes)).unwrap()
        };
        let widened = |v: &[f32]| bf16(v).into_values();
        assert_eq!(bf16(&a).len(), 4);
        let sum = |x: Vec<f32>, y: Vec<f32>| bits(Part::from(x).join(Part::from(y)).into_values());
        for (x, y, want) in [
            (bf16(&a), Part::from(b.clone()), sum(widened(&a), b.clone())),
            (wire(&b), bf16(&a), sum(b.clone(), widened(&a))),
            (bf16(&a), bf16(&b), sum(widened(&a), widened(&b))),
        ] {
            assert_eq!(bits(x.join(y).into_values()), want);
        }
        let shared = Bytes::from(tensor_bytes::to_bytes(&b));
        let kept = Part::wire(shared.clone()).unwrap().join(bf16(&a));
        assert_eq!(bits(kept.into_values()), sum(b.clone(), widened(&a)));
        assert_eq!(
            &shared[..],
            &tensor_bytes::to_bytes(&b)[..],
            "a shared operand is untouched"
        );
        assert!(Part::wire_bf16(Bytes::from_static(&[1, 2, 3])).is_err());
    }

    #[test]
    fn rounding_to_bf16_is_the_same_in_every_form_and_keeps_bf16_parts() {
        let v = vec![0.1f32, -3.3e-39, 12345.678];
        let mut want = v.clone();
        crate::precision::round_in_place(&mut want);
        let shared = Bytes::from(tensor_bytes::to_bytes(&v));
        for part in [
            Part::from(v.clone()),
            wire(&v),
            Part::wire(shared.clone()).unwrap(),
        ] {
            assert_eq!(bits(part.rounded_to_bf16().into_values()), bits(want.clone()));
        }
        assert_eq!(
            &shared[..],
            &tensor_bytes::to_bytes(&v)[..],
            "a shared operand is untouched"
        );
        let bytes = crate::precision::bf16_le_from_f32_le(&tensor_bytes::to_bytes(&v));
        let bf16 = Part::wire_bf16(Bytes::from(bytes)).unwrap().rounded_to_bf16();
        assert!(bf16.is_bf16());
        assert_eq!(bits(bf16.into_values()), bits(want));
    }

    #[test]
    fn received_bytes_owned_alone_are_summed_into_in_place() {
        let (a, b, c) = (vec![0.5f32, -1.0], vec![0.25f32, 4.0], vec![1.0f32, 1.0]);
        let kept = Bytes::from(tensor_bytes::to_bytes(&b));
        // `a` is owned alone, `b` is still shared (its request holds it): `a` accumulates.
        let sum = wire(&a).join(Part::wire(kept.clone()).unwrap());
        assert!(matches!(sum.0, Repr::Owned(_)));
        assert_eq!(
            &kept[..],
            &tensor_bytes::to_bytes(&b)[..],
            "the shared operand is untouched"
        );
        // Both shared: a new vector.
        let other = Bytes::from(tensor_bytes::to_bytes(&c));
        let fresh = Part::wire(kept.clone())
            .unwrap()
            .join(Part::wire(other.clone()).unwrap());
        assert!(matches!(fresh.0, Repr::Values(_)));
        let all = sum.join(wire(&c)).into_values();
        assert_eq!(bits(all), bits(vec![0.5 + 0.25 + 1.0, -1.0 + 4.0 + 1.0]));
    }

    #[test]
    fn wire_parts_keep_their_values_and_refuse_partial_values() {
        let v = vec![1.5f32, -0.0, f32::MIN_POSITIVE];
        let part = wire(&v);
        assert_eq!(part.len(), 3);
        assert!(part.same_bits(&Part::from(v.clone())));
        assert!(!part.same_bits(&Part::from(vec![1.5f32, 0.0, f32::MIN_POSITIVE])));
        assert_eq!(bits(part.into_values()), bits(v));
        assert_eq!(
            Part::wire(Bytes::from_static(&[0, 1, 2])).unwrap_err(),
            RaggedBytes { len: 3 }
        );
    }

    #[test]
    fn non_finite_values_are_found_in_either_form() {
        assert_eq!(wire(&[1.0, 2.0]).first_non_finite(), None);
        assert!(
            matches!(wire(&[1.0, f32::NEG_INFINITY]).first_non_finite(), Some((1, v)) if v.is_infinite())
        );
        assert!(matches!(Part::from(vec![f32::NAN]).first_non_finite(), Some((0, v)) if v.is_nan()));
    }
}
