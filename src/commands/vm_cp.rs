//! `banger vm cp SRC... DST`: files and trees between the host and a VM.

use anyhow::Result;

use super::Global;
use crate::cli::CpArgs;
use crate::ops;

pub fn run(args: CpArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let (dest, sources) = args
        .paths
        .split_last()
        .ok_or_else(|| ops::UsageError("expected SRC... DST".into()))?;
    ops::copy::cp(&ctx, sources, dest)
}
