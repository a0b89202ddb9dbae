//! `banger bench create`: create and delete VMs with the configured VMM and
//! report each stage's min / median / max and the total.

use anyhow::Result;

use super::{Global, print_json};
use crate::cli::BenchCreateArgs;
use crate::ops;

pub fn create(args: BenchCreateArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let report = ops::bench::create_runs(
        &ctx,
        args.image.clone(),
        args.runs,
        args.wait,
        &|run, timings| {
            eprintln!(
                "run {}/{}: {:.1} ms",
                run + 1,
                args.runs,
                timings.total().as_secs_f64() * 1000.0
            );
        },
    )?;
    if args.json {
        return print_json(&report);
    }
    outln!(
        "{:<12} {:>10} {:>10} {:>10}",
        "stage",
        "min ms",
        "median ms",
        "max ms"
    )?;
    for (stage, s) in &report.stages {
        outln!(
            "{stage:<12} {:>10.1} {:>10.1} {:>10.1}",
            s.min_ms,
            s.median_ms,
            s.max_ms
        )?;
    }
    Ok(())
}
