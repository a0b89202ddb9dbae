//! `banger bench create`: create and delete VMs with the configured VMM and
//! report each stage's min / median / max and the total.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::print_json;
use crate::cli::{BenchCreateArgs, VmSpec, WaitArgs};
use crate::lifecycle::{Ctx, Timings};

#[derive(Debug, Serialize)]
pub struct StageStats {
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: u32,
    pub wait: bool,
    /// In the order the stages ran, then `total`.
    pub stages: Vec<(String, StageStats)>,
}

pub fn create(args: BenchCreateArgs) -> Result<()> {
    let ctx = Ctx::open()?;
    let spec = VmSpec {
        image: args.image.clone(),
        vcpus: None,
        memory: None,
        disk_size: None,
        work_size: Some(256 << 20),
        no_nat: false,
        ttl: Some(Duration::from_secs(3600)),
        wait: WaitArgs {
            no_wait: !args.wait,
            timeout: None,
            timings: false,
        },
    };
    let mut samples: Vec<Timings> = Vec::new();
    for run in 0..args.runs {
        let name = format!("bench-{run}-{}", &super::vm_create::new_id()[..6]);
        let mut timings = Timings::default();
        let created = super::vm_create::create(&ctx, Some(name.clone()), &spec, true, &mut timings);
        let waited = created
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|(vm, _)| {
                super::vm_run::wait_ready(
                    &ctx,
                    vm,
                    spec.wait.no_wait,
                    spec.wait.timeout,
                    &mut timings,
                )
            });
        if let Some(mut vm) = ctx.store.find_vm(&name)? {
            let _lock = ctx.lock_vm(&mut vm)?;
            super::vm_delete::delete(&ctx, &mut vm, true)
                .with_context(|| format!("cannot delete {name}"))?;
        }
        created.with_context(|| format!("run {} of {}", run + 1, args.runs))?;
        waited?;
        eprintln!(
            "run {}/{}: {:.1} ms",
            run + 1,
            args.runs,
            timings.total().as_secs_f64() * 1000.0
        );
        samples.push(timings);
    }
    let report = summarize(&samples, args.wait);
    if args.json {
        return print_json(&report);
    }
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "stage", "min ms", "median ms", "max ms"
    );
    for (stage, s) in &report.stages {
        println!(
            "{stage:<12} {:>10.1} {:>10.1} {:>10.1}",
            s.min_ms, s.median_ms, s.max_ms
        );
    }
    Ok(())
}

/// Per-stage statistics across runs, stages in first-seen order, then `total`.
pub fn summarize(samples: &[Timings], wait: bool) -> Report {
    let mut order: Vec<&'static str> = Vec::new();
    let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for timings in samples {
        for (stage, d) in timings.0.iter().chain(&timings.1) {
            if !order.contains(stage) {
                order.push(stage);
            }
            values
                .entry(stage)
                .or_default()
                .push(d.as_secs_f64() * 1000.0);
        }
        values
            .entry("total")
            .or_default()
            .push(timings.total().as_secs_f64() * 1000.0);
    }
    order.push("total");
    let stages = order
        .into_iter()
        .filter_map(|stage| Some((stage.to_owned(), stats(values.get(stage)?))))
        .collect();
    Report {
        runs: samples.len() as u32,
        wait,
        stages,
    }
}

fn stats(values: &[f64]) -> StageStats {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    StageStats {
        min_ms: sorted[0],
        median_ms: median,
        max_ms: sorted[sorted.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_stages_in_order_with_median() {
        let run = |a: u64, b: u64| {
            Timings(
                vec![
                    ("disks", Duration::from_millis(a)),
                    ("spawn", Duration::from_millis(b)),
                ],
                Vec::new(),
            )
        };
        let report = summarize(&[run(10, 1), run(30, 3), run(20, 2)], false);
        let names: Vec<_> = report.stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["disks", "spawn", "total"]);
        let disks = &report.stages[0].1;
        assert_eq!(
            (disks.min_ms, disks.median_ms, disks.max_ms),
            (10.0, 20.0, 30.0)
        );
        assert_eq!(report.stages[2].1.median_ms, 22.0);
    }
}
