//! `banger vm create`: allocate a VM, make its disks, start it, wait for it.

use anyhow::Result;

use super::{Global, VmView, print_json, print_timings};
use crate::cli::CreateArgs;
use crate::ops;

pub fn run(args: CreateArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let mut timings = ctx.timings();
    let spec = args.spec.resolve(args.name);
    let read = ops::create::create(&ctx, &spec, !args.no_start, &mut timings)?;
    if !args.no_start && !args.spec.wait.no_wait {
        ops::ready::wait(&ctx, &read.vm, args.spec.wait.timeout, &mut timings)?;
    }
    if args.spec.wait.timings {
        print_timings(&timings);
    }
    let view = VmView::new(&ctx, &read);
    if args.json {
        let view = if args.spec.wait.timings {
            view.with_timings(&timings)
        } else {
            view
        };
        return print_json(&view);
    }
    eprintln!(
        "created VM {} ({}, {}) in {:.1}s",
        read.vm.name,
        read.vm.ip,
        ctx.dns_name(&read.vm),
        timings.total().as_secs_f64()
    );
    println!("{}", read.vm.name);
    Ok(())
}
