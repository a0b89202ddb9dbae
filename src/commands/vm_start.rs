//! `banger vm start` and `banger vm restart`.

use anyhow::{Result, bail};

use super::print_timings;
use crate::cli::StartArgs;
use crate::lifecycle::{self, Ctx, Timings};

pub fn run(args: StartArgs) -> Result<()> {
    start_each(args, false)
}

/// `vm restart`: stop (politely) then start each VM.
pub fn restart(args: StartArgs) -> Result<()> {
    start_each(args, true)
}

fn start_each(args: StartArgs, restart: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    for_each(&args.names, |name| {
        let mut vm = ctx.store.vm(name)?;
        let _lock = ctx.lock_vm(&mut vm)?;
        let observed = lifecycle::reconcile(&ctx, &mut vm)?;
        match (observed.pid.is_some(), restart) {
            (true, false) => {
                eprintln!("VM {name} is already running");
                return Ok(());
            }
            (true, true) => {
                lifecycle::stop(&ctx, &mut vm, &observed, ctx.config.stop_timeout, false)?;
            }
            (false, _) => {}
        }
        let mut timings = Timings::default();
        lifecycle::start(&ctx, &mut vm, &mut timings)?;
        super::vm_run::wait_ready(
            &ctx,
            &vm,
            args.wait.no_wait,
            args.wait.timeout,
            &mut timings,
        )?;
        if args.wait.timings {
            print_timings(&timings);
        }
        let verb = if restart { "restarted" } else { "started" };
        eprintln!("{verb} VM {name} ({})", vm.ip);
        Ok(())
    })
}

/// Runs `action` for each name, reporting each failure and going on; fails
/// at the end if any did.
pub fn for_each(names: &[String], mut action: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = Vec::new();
    for name in names {
        if let Err(err) = action(name) {
            if names.len() == 1 {
                return Err(err);
            }
            eprintln!("error: {name}: {err:#}");
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("failed for {}", failed.join(", "));
    }
    Ok(())
}
