//! `banger image commit`: a stopped VM's disks, as its guest saw them, become a new image.

use anyhow::Result;

use super::Global;
use crate::cli::ImageCommitArgs;
use crate::ops::images;

pub fn run(args: ImageCommitArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let vm = args.vm.as_str();
    let how = images::commit_vm(&ctx, vm, &args.name, args.with_work, args.default)?;
    let work = if args.with_work {
        "its work disk"
    } else {
        "its image's work seed"
    };
    eprintln!(
        "committed VM {vm} as image {}: the root from {}, the work seed from {work}",
        args.name,
        how.describe()
    );
    Ok(())
}
