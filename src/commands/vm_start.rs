//! `banger vm start` and `banger vm restart`.

use anyhow::Result;

use super::{Global, print_timings};
use crate::cli::StartArgs;
use crate::ops;
use crate::vm::LockedVm;
use crate::vm::status::Next;

pub fn run(args: StartArgs, global: &Global) -> Result<()> {
    start_each(args, global, false)
}

/// `vm restart`: stop (politely) then start each VM.
pub fn restart(args: StartArgs, global: &Global) -> Result<()> {
    start_each(args, global, true)
}

fn start_each(args: StartArgs, global: &Global, restart: bool) -> Result<()> {
    let ctx = global.ctx()?;
    ops::for_each(&args.names, |name| {
        let mut vm = LockedVm::open(&ctx, name)?;
        if vm.status().can_start(name)? == Next::AlreadyThere {
            if !restart {
                eprintln!("VM {name} is already running");
                return Ok(());
            }
            vm.stop(ctx.config.stop_timeout, false)?;
        }
        let mut timings = ctx.timings();
        vm.start(&mut timings)?;
        let vm = vm.read().vm;
        if !args.wait.no_wait {
            ops::ready::wait(&ctx, &vm, args.wait.timeout, &mut timings)?;
        }
        if args.wait.timings {
            print_timings(&timings);
        }
        let verb = if restart { "restarted" } else { "started" };
        eprintln!("{verb} VM {name} ({})", vm.ip);
        Ok(())
    })
}
