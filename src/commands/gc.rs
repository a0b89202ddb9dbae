//! `banger gc`: for cron. Deletes expired VMs, reconciles every VM, and
//! removes leaked resources that are banger's and nothing else. Silent when
//! there is nothing to do; never touches a VM another command holds.

use anyhow::Result;

use super::{Global, print_json};
use crate::cli::GcArgs;
use crate::ops;

pub fn run(args: GcArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let removals = ops::gc::collect(&ctx, args.dry_run)?;
    if args.json {
        return print_json(&removals);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &removals {
        let verb = match (r.kept, r.refill, args.dry_run) {
            (true, _, _) => "kept",
            (_, true, false) => "refilling",
            (_, true, true) => "would refill",
            _ => verb,
        };
        outln!("{verb} {} {} ({})", r.kind, r.target, r.reason)?;
    }
    if removals.is_empty() && global.verbose > 0 {
        eprintln!("nothing to clean up");
    }
    Ok(())
}
