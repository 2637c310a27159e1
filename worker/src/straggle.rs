//! Simulated slowness for demos and benchmarks. A straggler is a slow machine: everything it
//! does per block (computing the gradient and sending it) takes `factor` times as long. It sleeps
//! (factor - 1) times the block's compute time plus its recent send round trip before sending, so
//! it slows down without taking CPU from the other workers on a small machine.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straggle(pub f64);

impl Straggle {
    pub const NONE: Straggle = Straggle(1.0);

    /// The extra wait for a block that took `compute`, when sends recently took `send`.
    pub fn delay(self, compute: Duration, send: Duration) -> Duration {
        (compute + send).mul_f64((self.0 - 1.0).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_five_waits_four_times_the_compute() {
        let ms = Duration::from_millis;
        assert_eq!(Straggle(5.0).delay(ms(10), ms(5)), ms(60));
        assert_eq!(Straggle::NONE.delay(ms(10), ms(5)), Duration::ZERO);
    }
}
