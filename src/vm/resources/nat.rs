//! The VM's nftables rules in table `inet banger` (NAT and forwarding,
//! each tagged `banger:<id>`), and the host fence they come with.

use anyhow::Result;

use super::{Live, Removal, Resource};
use crate::host::net::nat::Fence;
use crate::state::handles::Handles;
use crate::state::layout::{self, HomeTag};
use crate::state::model::{Vm, VmId};
use crate::state::paths::Paths;
use crate::vm::Ctx;
use crate::vm::host::Network;

pub struct Nat;

/// Adds the VM's rules (with NAT) or just the host fence (without), under
/// the network lock. The journal must already say `nat` for a NAT VM. Runs
/// beside the VMM's configuration, so it takes only what it needs.
pub fn add_firewall(paths: &Paths, net: &dyn Network, fence: &Fence, vm: &Vm) -> Result<()> {
    let _net = crate::vm::ctx::lock_net(paths)?;
    if vm.nat {
        net.add_vm_rules(&rule_key(paths, &vm.id), vm.ip, fence)
    } else {
        net.ensure_host_fence(fence)
    }
}

/// The key tagging the rules of VM `id` of this home.
pub fn rule_key(paths: &Paths, id: &VmId) -> String {
    layout::nat_key(&HomeTag::of(&paths.home), id)
}

impl Resource for Nat {
    fn kind(&self) -> &'static str {
        "NAT rules"
    }

    /// Removes the rules under either key: this home's, and the one of a
    /// VM started before homes were named.
    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        if handles.nat || vm.nat {
            ctx.host
                .net
                .remove_vm_rules(&rule_key(&ctx.paths, &vm.id))?;
            ctx.host
                .net
                .remove_vm_rules(&layout::legacy_nat_key(&vm.id))?;
        }
        Ok(())
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        let home = ctx.home_tag();
        for key in ctx.host.net.vms_with_rules()? {
            let Some(owner) = layout::owner_of_nat_key(&key) else {
                continue;
            };
            // Another home's rules are that home's to sweep.
            if !owner.is_of(&home) || live.running.contains(&owner.id) {
                continue;
            }
            if !dry_run {
                ctx.host.net.remove_vm_rules(&key)?;
            }
            removals.push(Removal::new(
                "nat-rules",
                owner.id.to_string(),
                "VM not running",
            ));
        }
        Ok(removals)
    }
}
