//! `banger vm port`: a VM's published ports, one a line.

use anyhow::Result;

use super::Global;
use crate::cli::PortArgs;

pub fn run(args: PortArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let vm = ctx.store.vm(args.name.as_str())?;
    for port in &vm.published {
        outln!("{port}")?;
    }
    Ok(())
}
