//! `banger vm create`: allocate a VM, make its disks, start it, wait for it
//! (or claim a booted one from a warm pool).
//! A VM that does not answer is left as it is, with its logs' last lines
//! and the likely cause on stderr.

use anyhow::Result;

use super::{Global, VmView, print_json, print_timings};
use crate::cli::CreateArgs;
use crate::ops;
use crate::ops::diagnose::{Evidence, LogMark};
use crate::ops::ready::Left;
use crate::vm::VmRead;

pub fn run(args: CreateArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let mut timings = ctx.timings();
    let spec = args.spec.resolve(args.name);
    // A started VM is claimed from a warm pool, booted already, when one
    // matches; else made cold.
    let claimed = if args.no_start {
        None
    } else {
        ops::pool::claim(&ctx, &spec, &mut timings)
            .inspect_err(|_| print_timings_if(args.spec.wait.timings, &timings))?
    };
    let warm = claimed.is_some();
    let mut read = match claimed {
        Some(read) => read,
        None => ops::create::create(&ctx, &spec, !args.no_start, &mut timings)
            .inspect_err(|_| print_timings_if(args.spec.wait.timings, &timings))?,
    };
    if !args.no_start && !args.no_wait {
        match ops::ready::wait(&ctx, &read.vm, args.spec.wait.timeout, &mut timings) {
            Ok(vm) => read = VmRead::observe(&ctx, vm),
            Err(err) => {
                print_timings_if(args.spec.wait.timings, &timings);
                let evidence = Evidence::read(&ctx, &read.vm, LogMark::default());
                let left = Left::Kept {
                    running: evidence.running,
                };
                let shown = evidence.under(&err);
                return Err(ops::ready::failure(
                    err,
                    read.vm.name.as_str(),
                    left,
                    &shown,
                ));
            }
        }
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
    let how = if warm {
        format!(" from the warm pool of image {}", read.vm.image)
    } else {
        String::new()
    };
    eprintln!(
        "created VM {} ({}, {}){how} in {:.1}s",
        read.vm.name,
        read.vm.ip,
        ctx.dns_name(&read.vm),
        timings.total().as_secs_f64()
    );
    outln!("{}", read.vm.name)?;
    Ok(())
}

fn print_timings_if(wanted: bool, timings: &crate::vm::Timings) {
    if wanted {
        print_timings(timings);
    }
}
