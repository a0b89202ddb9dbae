//! `banger pool set`, `pool ls`, `pool rm` and the hidden `pool fill` that
//! `pool set`, claims and `gc` start detached.

use anyhow::Result;
use serde::Serialize;

use super::{Global, print_json, print_table};
use crate::cli::{ImageNameArg, PoolListArgs, PoolSetArgs};
use crate::ops::pool::{self, PoolStatus, Settings};
use crate::state::model::PoolSpec;
use crate::state::parse::{format_duration, format_size};

/// A pool as `pool ls --json` shows it.
#[derive(Debug, Serialize)]
struct PoolView {
    image: String,
    size: u32,
    ready: usize,
    filling: usize,
    spec: PoolSpec,
    /// Pool VMs older than this many seconds are replaced by `gc`.
    max_age_secs: u64,
    /// Memory the pool's VMs hold now, in MiB.
    memory_held_mib: u64,
}

impl PoolView {
    fn of(status: PoolStatus) -> Self {
        Self {
            image: status.pool.image,
            size: status.pool.size,
            ready: status.ready,
            filling: status.filling,
            spec: status.pool.spec,
            max_age_secs: status.pool.max_age,
            memory_held_mib: status.memory_mib,
        }
    }
}

pub fn set(args: PoolSetArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let settings = Settings {
        vcpus: args.machine.vcpus,
        memory_mib: args.machine.memory,
        disk_size: args.machine.disk_size,
        work_size: args.machine.work_size,
        nat: !args.machine.no_nat,
        max_age: args.max_age,
    };
    let (pool, deleted) = pool::set(&ctx, &args.image, args.size, &settings)?;
    for name in &deleted {
        eprintln!("deleted pool VM {name} (another spec, or beyond the size)");
    }
    let spec = &pool.spec;
    eprintln!(
        "pool {}: {} VM(s) of {} vCPU(s), {} memory, {} work disk; filling in the background \
         (see `banger pool ls`)",
        pool.image,
        pool.size,
        spec.vcpus,
        format_size(u64::from(spec.memory_mib) << 20),
        format_size(spec.work_size),
    );
    Ok(())
}

pub fn list(args: PoolListArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let views: Vec<PoolView> = pool::status(&ctx)?.into_iter().map(PoolView::of).collect();
    if args.json {
        return print_json(&views);
    }
    if args.quiet {
        for view in &views {
            outln!("{}", view.image)?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.image.clone(),
                v.size.to_string(),
                v.ready.to_string(),
                v.filling.to_string(),
                v.spec.vcpus.to_string(),
                format_size(u64::from(v.spec.memory_mib) << 20),
                v.spec
                    .disk_size
                    .map_or_else(|| "image".to_owned(), format_size),
                format_size(v.spec.work_size),
                if v.spec.nat { "yes" } else { "no" }.to_owned(),
                format_duration(std::time::Duration::from_secs(v.max_age_secs)),
            ]
        })
        .collect();
    print_table(
        &[
            "IMAGE", "SIZE", "READY", "FILLING", "VCPUS", "MEMORY", "DISK", "WORK", "NAT",
            "MAX-AGE",
        ],
        &rows,
    )?;
    Ok(())
}

pub fn remove(args: ImageNameArg, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let deleted = pool::remove(&ctx, &args.name)?;
    if deleted.is_empty() {
        eprintln!("removed pool {}", args.name);
    } else {
        eprintln!(
            "removed pool {} and deleted its VM(s) {}",
            args.name,
            deleted.join(", ")
        );
    }
    Ok(())
}

pub fn fill(global: &Global) -> Result<()> {
    pool::fill(&global.ctx()?)
}
