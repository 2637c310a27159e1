//! Simulated slowness for demos and benchmarks. A straggler sleeps after each block for
//! (factor - 1) times the time the block took, so it is `factor` times slower without taking
//! CPU from the other workers on a small machine.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straggle(pub f64);

impl Straggle {
    pub const NONE: Straggle = Straggle(1.0);

    /// The extra wait after a block that took `compute`.
    pub fn delay(self, compute: Duration) -> Duration {
        compute.mul_f64((self.0 - 1.0).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_five_waits_four_times_the_compute() {
        assert_eq!(Straggle(5.0).delay(Duration::from_millis(10)), Duration::from_millis(40));
        assert_eq!(Straggle::NONE.delay(Duration::from_millis(10)), Duration::ZERO);
    }
}
