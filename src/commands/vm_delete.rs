//! `banger vm delete`: stop if running, then remove the VM's disks and row.

use anyhow::Result;

use super::Global;
use crate::cli::DeleteArgs;
use crate::ops;
use crate::vm::LockedVm;

pub fn run(args: DeleteArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    ops::for_each(&args.names, |name| {
        LockedVm::open(&ctx, name)?.delete(args.force)?;
        eprintln!("deleted VM {name}");
        Ok(())
    })
}
