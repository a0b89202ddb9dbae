//! `banger vm list`: every VM, reconciled, as a table, JSON or names; the
//! VMs warm pools keep only with `--all`.

use anyhow::Result;

use super::{Global, VmView, print_json, print_table, vm_row};
use crate::cli::VmListArgs;
use crate::state::StateError;
use crate::state::model::BadVm;
use crate::vm::VmRead;

pub fn run(args: VmListArgs, global: &Global) -> Result<()> {
    let (args, all) = (args.list, args.all);
    let ctx = global.ctx()?;
    let members = ctx.store.pool_members()?;
    let mut views = Vec::new();
    let mut bad = Vec::new();
    let mut rows = Vec::new();
    for entry in VmRead::list(&ctx)? {
        match entry {
            Ok(read) => {
                let pool = members
                    .get(&read.vm.id)
                    .map(|m| if m.ready { "ready" } else { "filling" });
                if pool.is_some() && !all {
                    continue;
                }
                let mut view = VmView::new(&ctx, &read);
                view.pool = pool;
                rows.push(vm_row(&view));
                views.push(view);
            }
            Err(row) => {
                rows.push(unusable_row(&row));
                bad.push(row);
            }
        }
    }
    // Unusable rows are named on stderr whatever the format, after the
    // listing of the others.
    let warn = || {
        for row in &bad {
            eprintln!("warning: {}", StateError::BadVm(Box::new(row.clone())));
        }
    };
    if args.json {
        warn();
        return print_json(&views);
    }
    if args.quiet {
        for view in &views {
            outln!("{}", view.name)?;
        }
        warn();
        return Ok(());
    }
    print_table(
        &[
            "NAME", "STATE", "IP", "PORTS", "IMAGE", "VCPUS", "MEMORY", "WORK", "CREATED",
        ],
        &rows,
    )?;
    warn();
    Ok(())
}

/// A table row for an unusable VM row: its name and `unusable`.
fn unusable_row(row: &BadVm) -> Vec<String> {
    let mut cells = vec![row.label(), "unusable".to_owned()];
    cells.resize(9, "-".to_owned());
    cells
}
