//! `bench create`: create (and optionally wait for) VMs one after another,
//! delete each, and summarise each stage's min / median / max.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::create::Spec;
use crate::state::model::{VmId, VmName};
use crate::vm::{Ctx, LockedVm, Timings};

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

/// Creates and deletes `runs` VMs of `image`, waiting for each guest when
/// `wait`; `each` hears about every finished run.
pub fn create_runs(
    ctx: &Ctx,
    image: Option<String>,
    runs: u32,
    wait: bool,
    each: &dyn Fn(u32, &Timings),
) -> Result<Report> {
    let mut samples = Vec::new();
    for run in 0..runs {
        let name = VmName::parse(&format!("bench-{run}-{}", &VmId::random().as_str()[..6]))?;
        let spec = Spec {
            name: Some(name.clone()),
            image: image.clone(),
            work_size: Some(256 << 20),
            nat: true,
            ttl: Some(Duration::from_secs(3600)),
            ..Spec::default()
        };
        let mut timings = ctx.timings();
        let created = super::create::create(ctx, &spec, true, &mut timings);
        let waited = match (&created, wait) {
            (Ok(read), true) => super::ready::wait(ctx, &read.vm, None, &mut timings).map(drop),
            (Ok(_), false) => Ok(()),
            (Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
        };
        if let Some(vm) = ctx.store.find_vm(name.as_str())? {
            LockedVm::lock(ctx, vm)?
                .delete(true)
                .with_context(|| format!("cannot delete {name}"))?;
        }
        created.with_context(|| format!("run {} of {runs}", run + 1))?;
        waited?;
        each(run, &timings);
        samples.push(timings);
    }
    Ok(summarize(&samples, wait))
}

/// Per-stage statistics across runs, stages in first-seen order, then `total`.
pub fn summarize(samples: &[Timings], wait: bool) -> Report {
    let mut order: Vec<&'static str> = Vec::new();
    let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for timings in samples {
        for (stage, d) in timings.stages.iter().chain(&timings.overlapped) {
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
        let run = |a: u64, b: u64| Timings {
            stages: vec![
                ("disks", Duration::from_millis(a)),
                ("spawn", Duration::from_millis(b)),
            ],
            ..Timings::default()
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
