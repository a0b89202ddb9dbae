//! `banger vm list`: every VM, reconciled, as a table, JSON or names.

use anyhow::Result;

use super::{VmView, print_json, print_table, vm_row};
use crate::cli::ListArgs;
use crate::lifecycle::{self, Ctx};

pub fn run(args: ListArgs) -> Result<()> {
    let ctx = Ctx::open()?;
    let mut views = Vec::new();
    for mut vm in ctx.store.list_vms()? {
        // A VM deleted since the listing was read is no longer shown.
        if let Some(observed) = lifecycle::reconcile_if_free(&ctx, &mut vm)? {
            views.push(VmView::new(&ctx, &vm, &observed));
        }
    }
    if args.json {
        return print_json(&views);
    }
    if args.quiet {
        for view in &views {
            println!("{}", view.name);
        }
        return Ok(());
    }
    let rows: Vec<_> = views.iter().map(vm_row).collect();
    print_table(
        &[
            "NAME", "STATE", "IP", "IMAGE", "VCPUS", "MEMORY", "WORK", "CREATED",
        ],
        &rows,
    );
    Ok(())
}
