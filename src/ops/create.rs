//! Creating a VM: allocate its row (name, IP, MAC, CID) under a fresh lock,
//! make its disks, and start it.

use std::time::Duration;

use anyhow::{Context, Result};

use super::UsageError;
use crate::state::model::{Image, PublishedPort, VmId, VmName, VmmChoice, VmmKind, now};
use crate::state::parse::format_size;
use crate::state::store::{NewVm, Store};
use crate::vm::locked::{file_size, lock_new_id};
use crate::vm::{Ctx, ImageFiles, LockedVm, Timings, VmRead, vmm_choice};

/// What a new VM should be; `None` takes the config's default.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: Option<VmName>,
    pub image: Option<String>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    pub disk_size: Option<u64>,
    pub work_size: Option<u64>,
    pub nat: bool,
    /// `--publish`: host ports forwarded to the guest while it runs.
    pub published: Vec<PublishedPort>,
    pub ttl: Option<Duration>,
    /// `--vmm`; `None` follows the config at each start.
    pub vmm: Option<VmmChoice>,
    /// Made for this image's warm pool (by `pool fill`), not for a user.
    pub pool: Option<String>,
}

/// Creates a VM and, when `start` is set, starts it (without waiting for
/// the guest). A VM whose disks could not be made is deleted again; one
/// that failed to start is left stopped with its `last_error`.
pub fn create(ctx: &Ctx, spec: &Spec, start: bool, timings: &mut Timings) -> Result<VmRead> {
    let named = spec
        .image
        .as_deref()
        .map(|name| ctx.store.image(name))
        .transpose()?;
    // A missing VMM is known now: refuse before making anything (and
    // before building a default image for minutes).
    let picked = if start {
        Some(vmm_choice::pick(ctx, spec.vmm)?.kind)
    } else {
        None
    };
    let image = match named {
        Some(image) => image,
        None => timings.time("image", || super::images::ensure_default(ctx))?,
    };
    let image_files = ImageFiles::of(&ctx.paths, &image);
    image_files.check(&image.name)?;
    let (disk_size, work_size) = sizes(ctx, &image, &image_files, spec.disk_size, spec.work_size)?;
    for (i, port) in spec.published.iter().enumerate() {
        if let Some(other) = spec.published[..i].iter().find(|p| p.clashes_with(port)) {
            return Err(UsageError(format!(
                "--publish {port} and --publish {other} take the same host port"
            ))
            .into());
        }
        // Refused before anything is made; the insert below refuses a port
        // another VM publishes.
        ctx.host.net.check_port_free(port)?;
    }
    // Without a start, the VMM it would get now; the start picks again.
    let vmm = match picked.map_or_else(|| vmm_choice::pick(ctx, spec.vmm).map(|p| p.kind), Ok) {
        Ok(kind) => kind,
        Err(_) if spec.vmm == Some(VmmChoice::Qemu) => VmmKind::Qemu,
        Err(_) => VmmKind::Firecracker,
    };
    let new = NewVm {
        name: spec.name.clone(),
        image: image.name.clone(),
        vcpus: spec.vcpus.unwrap_or(ctx.config.vcpus),
        memory_mib: spec.memory_mib.unwrap_or(ctx.config.memory_mib),
        disk_size,
        work_size,
        nat: spec.nat,
        published: spec.published.clone(),
        expires_at: spec.ttl.map(|ttl| now() + ttl.as_secs() as i64),
        vmm,
        vmm_choice: spec.vmm,
        pool: spec.pool.clone(),
    };
    let (id, guard, unregistered) = lock_new_id(ctx)?;
    let vm = timings.time("allocate", || {
        Ok(ctx
            .store
            .insert_vm(&new, &id, &ctx.config.subnet, &generated_name)?)
    })?;
    // The row exists: gc sees the VM (and its held lock) from now on.
    drop(unregistered);
    let mut vm = LockedVm::new_row(ctx, vm, guard);
    let prepared = {
        let _image_lock = ctx.lock_image_shared(&image.name)?;
        timings.time("disks", || vm.prepare_disks(&image_files, start))
    };
    if let Err(err) = prepared {
        let name = vm.vm().name.clone();
        vm.delete(true).context("cleaning up the half-created VM")?;
        return Err(err.context(format!("cannot make the disks of VM {name}")));
    }
    if start {
        let name = vm.vm().name.clone();
        vm.start(timings).with_context(|| {
            format!("VM {name} was created but did not start; it is left stopped")
        })?;
    }
    Ok(vm.read())
}

/// The root and work disk sizes a VM of `image` gets for `--disk-size` and
/// `--work-size` (`None`: the image's root filesystem size and the
/// config's work size), refused when smaller than what the image holds.
pub(crate) fn sizes(
    ctx: &Ctx,
    image: &Image,
    image_files: &ImageFiles,
    disk_size: Option<u64>,
    work_size: Option<u64>,
) -> Result<(u64, u64)> {
    let rootfs_size = file_size(&image_files.rootfs)?;
    let disk_size = disk_size.unwrap_or(rootfs_size);
    if disk_size < rootfs_size {
        return Err(UsageError(format!(
            "--disk-size {} is smaller than image {}'s root filesystem ({})",
            format_size(disk_size),
            image.name,
            format_size(rootfs_size)
        ))
        .into());
    }
    let work_size = work_size.unwrap_or(ctx.config.work_size);
    let seed_size = file_size(&image_files.work_seed)?;
    if work_size < seed_size {
        return Err(UsageError(format!(
            "--work-size {} is smaller than image {}'s work seed; its minimum is {}",
            format_size(work_size),
            image.name,
            format_size(seed_size)
        ))
        .into());
    }
    Ok((disk_size, work_size))
}

/// How long a leased VM outlives the last renewal of its lease, unless
/// `BANGER_RM_LEASE` says otherwise.
const LEASE_TTL: Duration = Duration::from_secs(90);

fn lease_ttl() -> Result<Duration> {
    Ok(crate::env::Env::get().rm_lease()?.unwrap_or(LEASE_TTL))
}

/// A VM that lives only as long as the command that made it (`vm run
/// --rm`): its TTL is kept [`LEASE_TTL`] (or `BANGER_RM_LEASE`) ahead, renewed
/// every sixth of it, by a thread with a database
/// connection of its own, so that if the command is killed outright
/// (`kill -9`) the next `gc` removes the VM once the TTL runs out. A TTL
/// the user gave is kept when it comes first. Dropping the lease stops
/// the renewals; the command deletes the VM itself when it ends.
pub struct Lease {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// The expiry a leased VM is created with.
    pub fn first_expiry(ttl: Option<Duration>) -> Result<Option<Duration>> {
        let lease = lease_ttl()?;
        Ok(Some(ttl.map_or(lease, |ttl| ttl.min(lease))))
    }

    /// Renews the lease of VM `id` (whose expiry the user set to
    /// `user_expiry`, if at all) until dropped.
    pub fn hold(ctx: &Ctx, id: &VmId, user_expiry: Option<i64>) -> Result<Self> {
        let ttl = lease_ttl()?;
        let renewal = (ttl / 6).max(Duration::from_millis(100));
        let store = Store::open(&ctx.paths.db())?;
        let id = id.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                loop {
                    let lease = now() + ttl.as_secs().max(1) as i64;
                    let expiry = user_expiry.map_or(lease, |user| user.min(lease));
                    // A failed renewal is retried; the TTL covers a few.
                    let _ = store.set_expiry(&id, Some(expiry));
                    if !matches!(
                        stopped.recv_timeout(renewal),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return;
                    }
                }
            })
            .context("cannot start the thread renewing the VM's lease")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "happy", "icy", "jolly", "keen",
    "lucky", "mellow", "nimble", "odd", "proud", "quick", "rusty", "shy", "tidy", "vivid", "witty",
    "young", "zesty",
];
const NOUNS: &[&str] = &[
    "badger", "comet", "dingo", "ember", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
    "lemur", "moose", "newt", "otter", "panda", "quail", "raven", "seal", "tapir", "urchin",
    "viper", "walrus", "yak", "zebra",
];

/// A readable name for the n-th attempt: `brave-otter`, then with a number.
pub(crate) fn generated_name(attempt: u32) -> VmName {
    let seed = u32::from_str_radix(&VmId::random().as_str()[..8], 16).unwrap_or(attempt);
    let adjective = ADJECTIVES[seed as usize % ADJECTIVES.len()];
    let noun = NOUNS[(seed / 97) as usize % NOUNS.len()];
    let text = if attempt < 8 {
        format!("{adjective}-{noun}")
    } else {
        format!("{adjective}-{noun}-{attempt}")
    };
    VmName::generated(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        for attempt in [0, 9, 100] {
            crate::state::parse::vm_name(generated_name(attempt).as_str()).unwrap();
        }
    }
}
