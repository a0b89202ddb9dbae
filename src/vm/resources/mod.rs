//! The runtime resources a VM holds while it runs, as one list. Each kind
//! is one file implementing [`Resource`]: it is recorded in the VM's
//! [`Journal`] (`handles.json`) before it is made, released by a function
//! that tolerates it being already gone, and swept by `gc` when no live VM
//! owns it. Teardown and `gc` walk the same list, [`ALL`].

mod nat;
mod ports;
mod root_device;
mod sockets;
mod tap;
mod vmm;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use super::Ctx;
use crate::state::handles::Handles;
use crate::state::model::{Vm, VmId};

pub use nat::{add_firewall, rule_key};
pub use ports::publish as publish_ports;
pub use root_device::{attach as attach_root_device, with_read_only_snapshot};
pub use tap::acquire as acquire_tap;
pub use vmm::{find as find_vmm, spawn as spawn_vmm};

/// One kind of runtime resource.
pub trait Resource: Sync {
    /// Its name in messages and in `gc`'s output.
    fn kind(&self) -> &'static str;
    /// Releases this VM's instance, found by its handles or by the name
    /// derived from its id; already gone is fine.
    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()>;
    /// Finds instances on the host that no live VM owns, and unless
    /// `dry_run` removes them. Only names banger could have made are
    /// considered (`state::layout`).
    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>>;
}

/// Every kind, in teardown order: the VMM first, then what it used.
pub static ALL: &[&dyn Resource] = &[
    &vmm::Vmm,
    &nat::Nat,
    &ports::Ports,
    &tap::Tap,
    &root_device::RootDevice,
    &sockets::Sockets,
];

/// One thing `gc` removed (or, with `--dry-run`, would remove), or found
/// and keeps for now (`kept`: an orphan still within its grace period).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removal {
    pub kind: &'static str,
    pub target: String,
    pub reason: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// Not a removal: a short warm pool that a fill was started for.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refill: bool,
}

impl Removal {
    pub fn new(kind: &'static str, target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            kind,
            target: target.into(),
            reason: reason.into(),
            kept: false,
            refill: false,
        }
    }

    /// A short pool refilled (in the background).
    pub fn refill(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            refill: true,
            ..Self::new("pool", target, reason)
        }
    }

    /// Found, and left alone for now.
    pub fn kept(kind: &'static str, target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            kept: true,
            ..Self::new(kind, target, reason)
        }
    }
}

/// What `gc` must leave alone: VMs that exist, and what running or busy
/// VMs own.
#[derive(Debug, Default)]
pub struct Live {
    /// Every VM with a row.
    pub known: HashSet<VmId>,
    /// VMs that run, or that another command holds.
    pub running: HashSet<VmId>,
    pub taps: HashSet<String>,
    pub loops: HashSet<PathBuf>,
    /// The VMM executables recorded for running VMs: a VMM of a deleted VM
    /// may run one of them (a binary replaced since) rather than the
    /// configured one.
    pub vmm_exes: Vec<crate::state::model::FileId>,
}

impl Live {
    /// A running VM, or one another command holds: it owns its handles and
    /// whatever its derived names say.
    pub fn add_running(&mut self, id: &VmId, handles: &Handles) {
        self.running.insert(id.clone());
        self.taps.insert(crate::state::layout::tap(id));
        self.taps.extend(handles.tap.clone());
        self.loops.extend(handles.base_loop.clone());
        self.loops.extend(handles.cow_loop.clone());
        if let Some(exe) = handles.vmm_exe
            && !self.vmm_exes.contains(&exe)
        {
            self.vmm_exes.push(exe);
        }
    }
}

/// Releases every runtime resource of a VM whose VMM is gone (or is to go),
/// then its `handles.json`. Each kind is tried even when another fails.
pub fn teardown(ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
    let mut errors = Vec::new();
    for resource in ALL {
        if let Err(e) = resource.release(ctx, vm, handles) {
            errors.push(format!("{}: {e:#}", resource.kind()));
        }
    }
    if !errors.is_empty() {
        bail!(
            "could not release everything of VM {}: {}; `banger gc` retries",
            vm.name,
            errors.join("; ")
        );
    }
    Handles::remove(&ctx.paths.vm_dir(&vm.id))?;
    Ok(())
}

/// Runs every kind's sweep.
pub fn sweep(ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    for resource in ALL {
        removals.extend(resource.sweep(ctx, live, dry_run)?);
    }
    Ok(removals)
}

/// The journal of one VM's runtime resources: `handles.json`, rewritten
/// atomically before each resource is made so teardown always knows what
/// may exist.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    handles: Handles,
}

impl Journal {
    pub fn new(dir: &Path, handles: Handles) -> Self {
        Self {
            dir: dir.to_owned(),
            handles,
        }
    }

    /// Records a resource about to be made (or just made).
    pub fn record(&mut self, change: impl FnOnce(&mut Handles)) -> Result<()> {
        change(&mut self.handles);
        self.handles.save(&self.dir)?;
        Ok(())
    }

    pub fn handles(&self) -> &Handles {
        &self.handles
    }
}

/// Removes a directory tree; already gone is fine.
pub fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("cannot remove {}", dir.display())))
        }
        _ => Ok(()),
    }
}
