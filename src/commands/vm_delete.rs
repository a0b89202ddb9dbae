//! `banger vm delete`: stop if running, then remove the VM's disks and row.

use anyhow::Result;

use super::vm_start::for_each;
use crate::cli::DeleteArgs;
use crate::lifecycle::{self, Ctx};

pub fn run(args: DeleteArgs) -> Result<()> {
    let ctx = Ctx::open()?;
    for_each(&args.names, |name| {
        let mut vm = ctx.store.vm(name)?;
        let _lock = ctx.lock_vm(&mut vm)?;
        delete(&ctx, &mut vm, args.force)?;
        eprintln!("deleted VM {name}");
        Ok(())
    })
}

/// Deletes one VM whose lock the caller holds.
pub fn delete(ctx: &Ctx, vm: &mut crate::state::model::Vm, force: bool) -> Result<()> {
    let observed = lifecycle::reconcile(ctx, vm)?;
    if observed.pid.is_some() {
        lifecycle::stop(ctx, vm, &observed, ctx.config.stop_timeout, force)?;
    } else {
        lifecycle::teardown(ctx, vm, &observed.handles)?;
    }
    // Shown if this deletion is interrupted; the row is gone otherwise.
    let interrupted = format!(
        "deletion did not finish; run `banger vm delete {}` again",
        vm.name
    );
    ctx.store.set_last_error(&vm.id, Some(&interrupted))?;
    crate::fault::point("delete:stop");
    lifecycle::remove(ctx, vm)
}
