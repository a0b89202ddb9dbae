//! The VM's nftables rules in table `inet banger` (NAT and forwarding,
//! each tagged `banger:<id>`), and the host fence they come with.

use anyhow::Result;

use super::{Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::model::{Vm, VmId};
use crate::state::paths::Paths;
use crate::vm::Ctx;
use crate::vm::host::Network;

pub struct Nat;

/// Adds the VM's rules (with NAT) or just the host fence (without), under
/// the network lock. The journal must already say `nat` for a NAT VM. Runs
/// beside the VMM's configuration, so it takes only what it needs.
pub fn add_firewall(paths: &Paths, net: &dyn Network, bridge: &str, vm: &Vm) -> Result<()> {
    let _net = crate::vm::ctx::lock_net(paths)?;
    if vm.nat {
        net.add_vm_rules(vm.id.as_str(), vm.ip, bridge)
    } else {
        net.ensure_host_fence(bridge)
    }
}

impl Resource for Nat {
    fn kind(&self) -> &'static str {
        "NAT rules"
    }

    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        if handles.nat || vm.nat {
            ctx.host.net.remove_vm_rules(vm.id.as_str())?;
        }
        Ok(())
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        for id in ctx.host.net.vms_with_rules()? {
            let Some(id) = VmId::parse(&id) else {
                continue;
            };
            if live.running.contains(&id) {
                continue;
            }
            if !dry_run {
                ctx.host.net.remove_vm_rules(id.as_str())?;
            }
            removals.push(Removal::new("nat-rules", id.to_string(), "VM not running"));
        }
        Ok(removals)
    }
}
