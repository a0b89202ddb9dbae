//! `banger image delete`: remove an image no VM uses.

use anyhow::{Result, bail};

use crate::cli::ImageNameArg;
use crate::lifecycle::{Ctx, remove_dir_if_present};

pub fn run(args: ImageNameArg) -> Result<()> {
    let ctx = Ctx::open()?;
    let _lock = ctx.lock_image(&args.name)?;
    ctx.store.image(&args.name)?;
    let users = ctx.store.vms_using_image(&args.name)?;
    if !users.is_empty() {
        bail!(
            "image {} is used by VM(s) {}; delete them first",
            args.name,
            users.join(", ")
        );
    }
    ctx.store.delete_image(&args.name)?;
    remove_dir_if_present(&ctx.paths.image_dir(&args.name))?;
    eprintln!("deleted image {}", args.name);
    Ok(())
}
