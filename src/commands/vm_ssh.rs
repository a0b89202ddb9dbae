//! `banger vm ssh`: the user's OpenSSH into a running VM, with banger's key
//! and pinned host key; the remote exit code becomes banger's.

use anyhow::Result;

use super::Global;
use crate::cli::SshArgs;
use crate::ops;

pub fn run(args: SshArgs, global: &Global) -> Result<i32> {
    let ctx = global.ctx()?;
    let vm = ops::ssh::running(&ctx, &args.name)?;
    ops::ssh::run(&ctx, &vm, &args.command)
}
