//! One gradient part as the parameter server holds it: the little-endian bytes it arrived in,
//! or values already summed. A part is decoded only where it is added to another, so a push
//! costs no vector of its own beside its receive buffer (docs/design.md, "Aggregation as
//! parts arrive").

use bytes::{Bytes, BytesMut};

use crate::tensor_bytes::{self, RaggedBytes};

/// A gradient (or a sum of gradients) over the model's parameters.
#[derive(Debug, Clone)]
pub struct Part(Repr);

/// Wire forms hold a whole number of little-endian f32 values (checked when made).
#[derive(Debug, Clone)]
enum Repr {
    Values(Vec<f32>),
    /// The bytes as received, possibly shared with the request they came in.
    Shared(Bytes),
    /// Received bytes this part owns alone, summed into in place.
    Owned(BytesMut),
}

impl Part {
    /// A part kept as the little-endian bytes it arrived in; `bytes` must hold whole values.
    pub fn wire(bytes: Bytes) -> Result<Self, RaggedBytes> {
        if !bytes.len().is_multiple_of(4) {
            return Err(RaggedBytes { len: bytes.len() });
        }
        Ok(Self(Repr::Shared(bytes)))
    }

    /// How many values it has.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Values(v) => v.len(),
            Repr::Shared(b) => b.len() / 4,
            Repr::Owned(b) => b.len() / 4,
        }
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
        }
    }

    /// The first non-finite value and its index.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match &self.0 {
            Repr::Values(v) => tensor_bytes::first_non_finite(v),
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
                tensor_bytes::add_le_into_le(&mut acc, b.le_bytes());
                Repr::Owned(acc)
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
            (a, b) => a.le_bytes() == b.le_bytes(),
        }
    }
}

impl Repr {
    /// The wire bytes (empty for values, which callers handle first).
    fn le_bytes(&self) -> &[u8] {
        match self {
            Repr::Values(_) => &[],
            Repr::Shared(b) => b,
            Repr::Owned(b) => b,
        }
    }

    /// `acc += self`, element by element.
    fn add_to(&self, acc: &mut [f32]) {
        match self {
            Repr::Values(v) => crate::aggregate::add_into(acc, v),
            wire => tensor_bytes::add_le_into(acc, wire.le_bytes()),
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
