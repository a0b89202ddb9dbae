//! `banger vm ssh-config [NAME...]`: OpenSSH `Host` blocks for VMs, with
//! banger's key and pinned `known_hosts`.

use anyhow::Result;

use super::Global;
use crate::cli::SshConfigArgs;
use crate::host::ssh;

pub fn run(args: SshConfigArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let vms = if args.names.is_empty() {
        ctx.store.list_vms()?
    } else {
        args.names
            .iter()
            .map(|name| ctx.store.vm(name.as_str()))
            .collect::<Result<Vec<_>, _>>()?
    };
    let blocks: Vec<String> = vms
        .iter()
        .map(|vm| {
            ssh::config_block(
                &[vm.name.to_string(), ctx.dns_name(vm)],
                &vm.ip.to_string(),
                &ctx.paths.ssh_key(),
                &ctx.paths.known_hosts(),
            )
        })
        .collect();
    {
        use std::io::Write as _;
        write!(std::io::stdout().lock(), "{}", blocks.join("\n"))?;
    }
    Ok(())
}
