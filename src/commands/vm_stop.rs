//! `banger vm stop`: Ctrl-Alt-Del, wait, SIGTERM, SIGKILL; then tear down.

use anyhow::Result;

use super::vm_start::for_each;
use crate::cli::StopArgs;
use crate::lifecycle::{self, Ctx, StopOutcome};

pub fn run(args: StopArgs) -> Result<()> {
    let ctx = Ctx::open()?;
    let timeout = args.timeout.unwrap_or(ctx.config.stop_timeout);
    for_each(&args.names, |name| {
        let mut vm = ctx.store.vm(name)?;
        let _lock = ctx.lock_vm(&mut vm)?;
        let observed = lifecycle::reconcile(&ctx, &mut vm)?;
        if observed.pid.is_none() {
            eprintln!("VM {name} is already stopped");
            return Ok(());
        }
        let how = match lifecycle::stop(&ctx, &mut vm, &observed, timeout, args.force)? {
            StopOutcome::CtrlAltDel => "shut down",
            StopOutcome::Term => "terminated (the guest did not shut down in time)",
            StopOutcome::Kill => "killed",
            StopOutcome::AlreadyGone => "found already gone",
        };
        eprintln!("stopped VM {name}: {how}");
        Ok(())
    })
}
