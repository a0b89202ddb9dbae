//! `banger vm run`: create (or start, or reuse) a VM, wait until it answers,
//! copy files in (`--copy`), run a command in it over SSH, copy files out
//! (`--copy-out`) and return that command's exit code.

use anyhow::{Context, Result};

use super::{Global, print_timings};
use crate::cli::RunArgs;
use crate::ops;
use crate::vm::LockedVm;

pub fn run(args: RunArgs, global: &Global) -> Result<i32> {
    let ctx = global.ctx()?;
    let mut timings = ctx.timings();
    let existing = match &args.name {
        Some(name) => ctx.store.find_vm(name.as_str())?,
        None => None,
    };
    let vm = match existing {
        Some(vm) => {
            let mut vm = LockedVm::lock(&ctx, vm)?;
            if vm.observed().pid.is_none() {
                vm.start(&mut timings)?;
            }
            vm.read().vm
        }
        None => {
            let spec = args.spec.resolve(args.name.clone());
            ops::create::create(&ctx, &spec, true, &mut timings)?.vm
        }
    };
    let outcome =
        ops::ready::wait(&ctx, &vm, args.spec.wait.timeout, &mut timings).and_then(|()| {
            if args.spec.wait.timings {
                print_timings(&timings);
            }
            ops::copy::around(&ctx, &vm, &args.copy, &args.copy_out, || {
                ops::ssh::run(&ctx, &vm, &args.command)
            })
        });
    if args.rm {
        let vm = ctx.store.vm(vm.name.as_str())?;
        let name = vm.name.clone();
        LockedVm::lock(&ctx, vm)?
            .delete(true)
            .with_context(|| format!("cannot delete VM {name}"))?;
    }
    outcome
}
