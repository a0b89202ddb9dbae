//! Stage durations for `--timings`, `-v` stage lines and `banger bench`.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Stage durations in the order they ran. `overlapped` stages ran beside
/// others and do not count towards the total.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    pub stages: Vec<(&'static str, Duration)>,
    pub overlapped: Vec<(&'static str, Duration)>,
    /// Print each stage on stderr as it starts and ends (`-v`).
    pub verbose: bool,
    /// The VMM the (last) start used.
    pub vmm: Option<crate::state::model::VmmKind>,
    /// Whether the VM came warm from a pool or was made cold, and why
    /// (shown once a pool exists).
    pub pool: Option<String>,
}

impl Timings {
    pub fn new(verbose: bool) -> Self {
        Self {
            verbose,
            ..Self::default()
        }
    }

    /// Runs one stage, timing it; a fault-injection build may abort after it.
    pub fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.verbose {
            eprintln!("banger: {stage} ...");
        }
        let start = Instant::now();
        let result = f();
        let elapsed = start.elapsed();
        self.stages.push((stage, elapsed));
        if self.verbose {
            let how = if result.is_ok() { "done" } else { "failed" };
            eprintln!(
                "banger: {stage} {how} in {:.1} ms",
                elapsed.as_secs_f64() * 1000.0
            );
        }
        crate::fault::point(stage);
        result
    }

    /// Records a stage that ran alongside the others.
    pub fn overlapped(&mut self, stage: &'static str, elapsed: Duration) {
        if self.verbose {
            eprintln!(
                "banger: {stage} done in {:.1} ms (alongside)",
                elapsed.as_secs_f64() * 1000.0
            );
        }
        self.overlapped.push((stage, elapsed));
    }

    pub fn total(&self) -> Duration {
        self.stages.iter().map(|(_, d)| *d).sum()
    }
}
