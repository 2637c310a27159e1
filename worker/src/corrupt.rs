//! Fault injection for tests and demos (`--corrupt-from STEP`): a worker that computes wrong
//! bits, as a bad core, bad memory or a faulty GPU would. From the given step on, every gradient
//! it sends has the lowest mantissa bit of its first value flipped: the smallest error there is,
//! still finite, so only a comparison with another holder's copy can catch it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Corruption {
    /// The first step whose gradients are corrupted; `None`: a healthy worker.
    pub from: Option<u64>,
}

impl Corruption {
    pub const NONE: Corruption = Corruption { from: None };

    /// Corrupts `gradient` in place when `step` is at or past the first corrupted step; says
    /// whether it did.
    pub fn apply(self, step: u64, gradient: &mut [f32]) -> bool {
        match (self.from, gradient.first_mut()) {
            (Some(from), Some(first)) if step >= from => {
                *first = flip_lowest_bit(*first);
                true
            }
            _ => false,
        }
    }
}

impl Corruption {
    /// [`Corruption::apply`] on little-endian f32 wire bytes: the first value's lowest bit.
    pub fn apply_bytes(self, step: u64, bytes: &mut [u8]) -> bool {
        match (self.from, bytes.first_mut()) {
            (Some(from), Some(first)) if step >= from => {
                *first ^= 1;
                true
            }
            _ => false,
        }
    }
}

/// `value` with its lowest mantissa bit flipped: one unit in the last place, never a NaN or an
/// infinity (the exponent is untouched).
pub fn flip_lowest_bit(value: f32) -> f32 {
    f32::from_bits(value.to_bits() ^ 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_one_bit_from_the_given_step_on() {
        let clean = vec![0.25f32, -1.5, 3.0];
        let corruption = Corruption { from: Some(5) };
        let mut g = clean.clone();
        assert!(!corruption.apply(4, &mut g));
        assert_eq!(g, clean);
        assert!(corruption.apply(5, &mut g));
        assert_ne!(g[0].to_bits(), clean[0].to_bits());
        assert_eq!((g[0].to_bits() ^ clean[0].to_bits()).count_ones(), 1);
        assert_eq!(&g[1..], &clean[1..]);
        assert!(corruption.apply(9, &mut g));
        assert_eq!(g, clean, "flipping twice restores the value");
        assert!(!Corruption::NONE.apply(100, &mut g));
        assert!(!corruption.apply(9, &mut []));
    }

    #[test]
    fn stays_finite_at_the_edges() {
        for v in [0.0f32, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1.0] {
            let flipped = flip_lowest_bit(v);
            assert!(flipped.is_finite(), "{v} -> {flipped}");
            assert_ne!(flipped.to_bits(), v.to_bits());
        }
    }
}
