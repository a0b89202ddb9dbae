//! `banger image build`: a bootable image from Debian packages alone.

use anyhow::{Context, Result};

use super::{Global, UsageError, print_json};
use crate::cli::ImageBuildArgs;
use crate::host::image::{self, BuildOptions};
use crate::ops::images::{self, IfExists};

pub fn run(args: ImageBuildArgs, global: &Global) -> Result<()> {
    if args.kernel.is_none() && args.initrd.is_some() {
        return Err(UsageError("--initrd needs --kernel".into()).into());
    }
    for (flag, path) in [("--kernel", &args.kernel), ("--initrd", &args.initrd)] {
        if let Some(path) = path {
            let why = match std::fs::metadata(path) {
                Err(e) => e.to_string(),
                Ok(meta) if !meta.is_file() => "not a regular file".into(),
                Ok(meta) if meta.len() == 0 => "the file is empty".into(),
                Ok(_) => continue,
            };
            return Err(UsageError(format!("{flag} {}: {why}", path.display())).into());
        }
    }
    if let Some(kernel) = &args.kernel {
        image::check_elf(
            &std::fs::read(kernel).with_context(|| format!("cannot read {}", kernel.display()))?,
            &kernel.display().to_string(),
        )
        .map_err(|e| UsageError(format!("--kernel: {e}")))?;
    }
    let ctx = global.ctx()?;
    let options = BuildOptions {
        suite: args.suite.clone(),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        size: args.size,
        packages: args.packages.clone(),
        ..images::build_options(&ctx)?
    };
    let if_exists = if args.force {
        IfExists::Replace
    } else {
        IfExists::Fail
    };
    let manifest = images::build(&ctx, &args.name, &options, args.default, if_exists)?;
    if args.json {
        print_json(&manifest)?;
    }
    Ok(())
}
