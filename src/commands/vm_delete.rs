//! `banger vm delete`: stop if running, then remove the VM's disks and row
//! (of an unusable row, the row alone).

use anyhow::Result;

use super::Global;
use crate::cli::DeleteArgs;
use crate::ops;
use crate::state::StateError;
use crate::vm::LockedVm;

pub fn run(args: DeleteArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    ops::for_each(&args.names, |name| {
        match LockedVm::open(&ctx, name) {
            Ok(vm) => vm.delete(args.force)?,
            // Nothing can be derived from a row banger did not write: only
            // the row goes, and `gc` sweeps what carries banger's names.
            Err(err) => match err.downcast_ref::<StateError>() {
                Some(StateError::BadVm(bad)) => {
                    ctx.store.delete_bad_vm(bad)?;
                    eprintln!(
                        "removed the unusable row of VM {name}; `banger gc` removes what it left"
                    );
                    return Ok(());
                }
                _ => return Err(err),
            },
        }
        eprintln!("deleted VM {name}");
        Ok(())
    })
}
