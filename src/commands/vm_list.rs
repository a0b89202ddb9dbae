//! `banger vm list`: every VM, reconciled, as a table, JSON or names.

use anyhow::Result;

use super::{Global, VmView, print_json, print_table, vm_row};
use crate::cli::ListArgs;
use crate::vm::VmRead;

pub fn run(args: ListArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let views: Vec<_> = VmRead::list(&ctx)?
        .iter()
        .map(|read| VmView::new(&ctx, read))
        .collect();
    if args.json {
        return print_json(&views);
    }
    if args.quiet {
        for view in &views {
            outln!("{}", view.name)?;
        }
        return Ok(());
    }
    let rows: Vec<_> = views.iter().map(vm_row).collect();
    print_table(
        &[
            "NAME", "STATE", "IP", "PORTS", "IMAGE", "VCPUS", "MEMORY", "WORK", "CREATED",
        ],
        &rows,
    )?;
    Ok(())
}
