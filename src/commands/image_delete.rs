//! `banger image delete`: remove an image no VM uses.

use anyhow::Result;

use super::Global;
use crate::cli::ImageNameArg;
use crate::ops;

pub fn run(args: ImageNameArg, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    ops::images::delete(&ctx, &args.name)?;
    eprintln!("deleted image {}", args.name);
    Ok(())
}
