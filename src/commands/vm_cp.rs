//! `banger vm cp SRC... DST`: files and trees between the host and a VM.

use anyhow::Result;

use super::Global;
use crate::cli::CpArgs;
use crate::ops;

pub fn run(args: CpArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    ops::copy::cp(&ctx, &args.sources, &args.dest)
}
