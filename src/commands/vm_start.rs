//! `banger vm start` and `banger vm restart`. A VM that does not answer is
//! left as it is, with its logs' last lines and the likely cause on stderr.

use anyhow::Result;

use super::{Global, print_timings};
use crate::cli::StartArgs;
use crate::ops;
use crate::ops::diagnose::{Evidence, LogMark};
use crate::ops::ready::Left;
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
        let mark = LogMark::of(&ctx, vm.vm());
        vm.start(&mut timings).inspect_err(|_| {
            if args.wait.timings {
                print_timings(&timings);
            }
        })?;
        // Held for the whole wait, which may restart it under another VMM.
        let mut locked = vm;
        let mut vm = locked.vm().clone();
        if !args.no_wait {
            match ops::ready::wait_holding(&ctx, &mut locked, args.wait.timeout, &mut timings) {
                Ok(now) => vm = now,
                Err(err) => {
                    if args.wait.timings {
                        print_timings(&timings);
                    }
                    let evidence = Evidence::read(&ctx, &vm, mark);
                    let left = Left::Kept {
                        running: evidence.running,
                    };
                    let shown = evidence.under(&err);
                    return Err(ops::ready::failure(err, name, left, &shown));
                }
            }
        }
        drop(locked);
        if args.wait.timings {
            print_timings(&timings);
        }
        let verb = if restart { "restarted" } else { "started" };
        eprintln!("{verb} VM {name} ({})", vm.ip);
        Ok(())
    })
}
