//! Minibatches drawn deterministically from (seed, step, block), so every holder of a block
//! computes exactly the same gradient and self-healing costs the model nothing (docs/design.md,
//! invariant 7).

/// Indices (ascending) of the `batch` samples of a block of `len` samples used at `step`.
/// The whole block when `batch >= len`.
pub fn minibatch(seed: u64, step: u64, block: u32, len: usize, batch: usize) -> Vec<usize> {
    if batch >= len {
        return (0..len).collect();
    }
    let mut rng = SplitMix64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(block) << 40));
    let mut pool: Vec<usize> = (0..len).collect();
    // Partial Fisher-Yates: the first `batch` slots become a uniform sample without replacement.
    for i in 0..batch {
        let j = i + (rng.next() % (len - i) as u64) as usize;
        pool.swap(i, j);
    }
    let mut picked = pool[..batch].to_vec();
    picked.sort_unstable();
    picked
}

/// A permutation of 0..len from `seed` (used to split a data set reproducibly).
pub fn permutation(seed: u64, len: usize) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut pool: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        pool.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    pool
}

/// Steele, Lea and Flood's SplitMix64: tiny, fast, and identical on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_batch_and_different_steps_differ() {
        let a = minibatch(7, 3, 2, 60, 16);
        assert_eq!(a, minibatch(7, 3, 2, 60, 16));
        assert_ne!(a, minibatch(7, 4, 2, 60, 16));
        assert_ne!(a, minibatch(7, 3, 1, 60, 16));
        assert_eq!(a.len(), 16);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[15] < 60);
    }

    #[test]
    fn batch_larger_than_block_takes_all() {
        assert_eq!(minibatch(1, 1, 1, 5, 8), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(42, 100);
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
