//! `banger vm stop`: Ctrl-Alt-Del, wait, SIGTERM, SIGKILL; then tear down.

use anyhow::Result;

use super::Global;
use crate::cli::StopArgs;
use crate::ops;
use crate::vm::LockedVm;
use crate::vm::host::StopOutcome;
use crate::vm::status::Next;

pub fn run(args: StopArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let timeout = args.timeout.unwrap_or(ctx.config.stop_timeout);
    ops::for_each(&args.names, |name| {
        let mut vm = LockedVm::open(&ctx, name)?;
        if vm.status().can_stop() == Next::AlreadyThere {
            eprintln!("VM {name} is already stopped");
            return Ok(());
        }
        let how = match vm.stop(timeout, args.force)? {
            StopOutcome::CtrlAltDel => "shut down",
            StopOutcome::Term => "terminated (the guest did not shut down in time)",
            StopOutcome::Kill => "killed",
            StopOutcome::AlreadyGone => "found already gone",
        };
        eprintln!("stopped VM {name}: {how}");
        Ok(())
    })
}
