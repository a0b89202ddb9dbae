//! A small xorshift generator for tests that pick random moments and
//! commands: seeded from the clock, or from `BANGER_TEST_SEED` to replay a
//! run; the seed is printed either way.

use std::time::Duration;

pub struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        let seed = std::env::var("BANGER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("random seed {seed} (BANGER_TEST_SEED replays it)");
        Self(seed)
    }
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration in `0..bound`, in steps of a thousandth of it.
    pub fn within(&mut self, bound: Duration) -> Duration {
        bound.mul_f64(self.below(1000) as f64 / 1000.0)
    }
}
