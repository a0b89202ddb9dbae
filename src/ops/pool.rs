//! Warm pools, without a daemon: per image, a number of VMs made, booted
//! and left running, for `vm run` and `vm create` to claim instead of
//! booting one.
//!
//! A pool VM is an ordinary VM row with a row in `pool_vms` (hidden from
//! `vm ls` unless `--all`). `pool set` records the pool and starts a
//! detached `banger pool fill`, which makes and boots the missing VMs,
//! waits until each has finished its boot, opens an SSH connection master
//! to it (so that a claimer's first command costs a session, not a key
//! exchange), marks it ready, and exits when every pool is full; a claim
//! starts one again to replace what it took, and `gc` (from cron) starts
//! one for pools found short.
//!
//! A claim takes the pool VM's lock first, then removes its pool row and
//! renames it in one transaction (so no VM ever serves two claims), with
//! `claim` pending; then it renames the guest (the agent's `set_hostname`)
//! and re-pins its host key under the new name, and clears the pending
//! claim. A claim killed midway leaves a VM `gc` deletes.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::UsageError;
use super::create::Spec;
use crate::host::{ssh, vsock};
use crate::state::lock;
use crate::state::model::{Pool, PoolMember, PoolSpec, Vm, VmId, VmName, VmmChoice, VmmKind, now};
use crate::state::parse::{format_duration, format_size};
use crate::state::store::Claim;
use crate::state::{StateError, files};
use crate::vm::{Ctx, ImageFiles, LockedVm, Timings, VmFiles, VmRead};

/// How old a pool VM may get before `gc` replaces it, unless `--max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The most VMs one pool keeps.
pub const MAX_SIZE: u32 = 64;
/// How long a claim waits for the guest agent to take its new name.
const RENAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool with what its VMs are doing now.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub pool: Pool,
    /// Booted and answering: what a claim can take.
    pub ready: usize,
    /// Being made or booted by `pool fill`.
    pub filling: usize,
    /// Memory the pool's VMs hold, in MiB.
    pub memory_mib: u64,
}

/// Every pool with its VMs counted.
pub fn status(ctx: &Ctx) -> Result<Vec<PoolStatus>> {
    let members = ctx.store.pool_members()?;
    let vms: HashMap<VmId, Vm> = ctx
        .store
        .list_vms()?
        .into_iter()
        .map(|vm| (vm.id.clone(), vm))
        .collect();
    Ok(ctx
        .store
        .pools()?
        .into_iter()
        .map(|pool| {
            let mine: Vec<(&Vm, &PoolMember)> = members
                .iter()
                .filter(|(_, m)| m.image == pool.image)
                .filter_map(|(id, m)| Some((vms.get(id)?, m)))
                .collect();
            PoolStatus {
                ready: mine.iter().filter(|(_, m)| m.ready).count(),
                filling: mine.iter().filter(|(_, m)| !m.ready).count(),
                memory_mib: mine.iter().map(|(vm, _)| u64::from(vm.memory_mib)).sum(),
                pool,
            }
        })
        .collect())
}

/// What `pool set` was asked: `None` takes the config's default.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    pub disk_size: Option<u64>,
    pub work_size: Option<u64>,
    pub nat: bool,
    pub max_age: Option<Duration>,
}

/// Creates or changes `image`'s pool: `size` VMs made with `settings`.
/// VMs of the pool made with another spec, and those beyond `size`, are
/// deleted; a fill is started for what is missing. Returns the pool and
/// the names of the VMs deleted.
pub fn set(ctx: &Ctx, image: &str, size: u32, settings: &Settings) -> Result<(Pool, Vec<String>)> {
    if size > MAX_SIZE {
        return Err(UsageError(format!("--size {size} is more than {MAX_SIZE}")).into());
    }
    let found = ctx.store.image(image)?;
    let image_files = ImageFiles::of(&ctx.paths, &found);
    image_files.check(&found.name)?;
    // The sizes are checked as a create would check them, before anything.
    super::create::sizes(
        ctx,
        &found,
        &image_files,
        settings.disk_size,
        settings.work_size,
    )?;
    let pool = Pool {
        image: image.to_owned(),
        size,
        spec: PoolSpec {
            vcpus: settings.vcpus.unwrap_or(ctx.config.vcpus),
            memory_mib: settings.memory_mib.unwrap_or(ctx.config.memory_mib),
            disk_size: settings.disk_size,
            work_size: settings.work_size.unwrap_or(ctx.config.work_size),
            nat: settings.nat,
        },
        max_age: settings.max_age.unwrap_or(DEFAULT_MAX_AGE).as_secs(),
        created_at: now(),
    };
    ctx.store.set_pool(&pool)?;
    let wanted = resolved(ctx, &pool)?;
    let members = ctx.store.pool_members()?;
    let mut mine: Vec<Vm> = ctx
        .store
        .list_vms()?
        .into_iter()
        .filter(|vm| members.get(&vm.id).is_some_and(|m| m.image == image))
        .collect();
    // Kept: ready ones before filling ones, oldest first.
    mine.sort_by_key(|vm| (!members[&vm.id].ready, vm.created_at));
    let mut kept = 0;
    let mut deleted = Vec::new();
    for vm in mine {
        if VmShape::of(&vm) == wanted && kept < size {
            kept += 1;
            continue;
        }
        let name = vm.name.to_string();
        delete_member(ctx, vm)?;
        deleted.push(name);
    }
    start_fill(ctx)?;
    Ok((pool, deleted))
}

/// Removes `image`'s pool and deletes its VMs (stopping them); returns
/// their names. When no pool is left, waits for a fill at work to end.
pub fn remove(ctx: &Ctx, image: &str) -> Result<Vec<String>> {
    if !ctx.store.delete_pool(image)? {
        return Err(StateError::NoSuchPool(image.to_owned()).into());
    }
    let deleted = drain(ctx, image)?;
    if ctx.store.pools()?.is_empty() {
        // A fill at work finds its VMs gone and no pool left, and exits.
        match fill_lock(ctx) {
            Ok(_ended) => {}
            Err(err) if is_lock_timeout(&err) => eprintln!(
                "warning: a pool fill is still at work; it exits once it finds no pool left"
            ),
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

/// Deletes every VM of `image`'s pool (the pool itself stays, if any);
/// returns their names.
pub fn drain(ctx: &Ctx, image: &str) -> Result<Vec<String>> {
    let members = ctx.store.pool_members()?;
    let mut deleted = Vec::new();
    for (id, member) in members {
        if member.image != image {
            continue;
        }
        if let Some(vm) = ctx.store.vm_by_id(&id)? {
            let name = vm.name.to_string();
            delete_member(ctx, vm)?;
            deleted.push(name);
        }
    }
    Ok(deleted)
}

fn delete_member(ctx: &Ctx, vm: Vm) -> Result<()> {
    let name = vm.name.clone();
    match LockedVm::lock(ctx, vm) {
        Ok(locked) => locked
            .delete(true)
            .with_context(|| format!("cannot delete pool VM {name}")),
        Err(err) if crate::vm::locked::is_no_such_vm(&err) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The values a VM is made with that a claim must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VmShape {
    vcpus: u8,
    memory_mib: u32,
    disk_size: u64,
    work_size: u64,
    nat: bool,
}

impl VmShape {
    fn of(vm: &Vm) -> Self {
        Self {
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_size: vm.disk_size,
            work_size: vm.work_size,
            nat: vm.nat,
        }
    }

    /// `vcpus 2, memory 1G, disk 2G, work 8G, nat`.
    fn describe(&self) -> String {
        format!(
            "vcpus {}, memory {}, disk {}, work {}, {}",
            self.vcpus,
            format_size(u64::from(self.memory_mib) << 20),
            format_size(self.disk_size),
            format_size(self.work_size),
            if self.nat { "nat" } else { "no nat" }
        )
    }
}

/// What `pool`'s VMs are made with, the disk size resolved against its image.
fn resolved(ctx: &Ctx, pool: &Pool) -> Result<VmShape> {
    wanted(ctx, &spec_of(pool), &pool.image)
}

/// The create that makes one of `pool`'s VMs (unnamed).
fn spec_of(pool: &Pool) -> Spec {
    Spec {
        image: Some(pool.image.clone()),
        vcpus: Some(pool.spec.vcpus),
        memory_mib: Some(pool.spec.memory_mib),
        disk_size: pool.spec.disk_size,
        work_size: Some(pool.spec.work_size),
        nat: pool.spec.nat,
        pool: Some(pool.image.clone()),
        ..Spec::default()
    }
}

/// What a create with `spec` would make of `image`.
fn wanted(ctx: &Ctx, spec: &Spec, image: &str) -> Result<VmShape> {
    let found = ctx.store.image(image)?;
    let files = ImageFiles::of(&ctx.paths, &found);
    let (disk_size, work_size) =
        super::create::sizes(ctx, &found, &files, spec.disk_size, spec.work_size)?;
    Ok(VmShape {
        vcpus: spec.vcpus.unwrap_or(ctx.config.vcpus),
        memory_mib: spec.memory_mib.unwrap_or(ctx.config.memory_mib),
        disk_size,
        work_size,
        nat: spec.nat,
    })
}

/// Claims a ready VM of the pool of `spec`'s image for a create or run
/// with `spec`, named as `spec` says, with `spec`'s TTL from now; `None`
/// (after recording why in `timings`, and saying so under `-v`) when the
/// VM is to be made cold: no pool, another spec, `--publish`, a `--vmm`
/// the pool's VMs do not run under, or no ready VM. A claim started here
/// is finished here, or the VM is deleted and the next one tried.
pub fn claim(ctx: &Ctx, spec: &Spec, timings: &mut Timings) -> Result<Option<VmRead>> {
    let pools = ctx.store.pools()?;
    if pools.is_empty() {
        return Ok(None);
    }
    let found = timings.time("claim", || find_and_claim(ctx, spec, &pools))?;
    let (outcome, read) = match found {
        Found::Claimed { read, from } => (
            format!("warm (pool VM {from} of pool {})", read.vm.image),
            Some(*read),
        ),
        Found::Cold(why) => (format!("cold ({why})"), None),
    };
    if ctx.verbose {
        match &read {
            Some(read) => eprintln!("banger: VM {} is {outcome}", read.vm.name),
            None => eprintln!("banger: making the VM {outcome}"),
        }
    }
    timings.pool = Some(outcome);
    Ok(read)
}

enum Found {
    Claimed { read: Box<VmRead>, from: VmName },
    Cold(String),
}

fn find_and_claim(ctx: &Ctx, spec: &Spec, pools: &[Pool]) -> Result<Found> {
    let image = match &spec.image {
        Some(image) => image.clone(),
        None => match ctx.store.default_image()? {
            Some(image) => image.name,
            None => return Ok(Found::Cold("there is no default image yet".into())),
        },
    };
    let Some(pool) = pools.iter().find(|p| p.image == image) else {
        return Ok(Found::Cold(format!("image {image} has no warm pool")));
    };
    if !spec.published.is_empty() {
        return Ok(Found::Cold(
            "--publish: a VM's ports are set up when it starts, and pool VMs run already".into(),
        ));
    }
    let want = wanted(ctx, spec, &image)?;
    let theirs = match resolved(ctx, pool) {
        Ok(theirs) => theirs,
        Err(err) => {
            return Ok(Found::Cold(format!(
                "pool {image}'s spec no longer fits its image ({err:#})"
            )));
        }
    };
    if want != theirs {
        return Ok(Found::Cold(format!(
            "it asks for {}; pool {image}'s VMs have {}",
            want.describe(),
            theirs.describe()
        )));
    }
    let members = ctx.store.pool_members()?;
    let mut ready: Vec<Vm> = ctx
        .store
        .list_vms()?
        .into_iter()
        .filter(|vm| {
            members
                .get(&vm.id)
                .is_some_and(|m| m.image == image && m.ready)
                && VmShape::of(vm) == want
        })
        .collect();
    ready.sort_by_key(|vm| vm.created_at);
    let kind = match spec.vmm {
        Some(VmmChoice::Firecracker) => Some(VmmKind::Firecracker),
        Some(VmmChoice::Qemu) => Some(VmmKind::Qemu),
        Some(VmmChoice::Auto) | None => None,
    };
    if let (Some(kind), Some(choice)) = (kind, spec.vmm) {
        if !ready.is_empty() && ready.iter().all(|vm| vm.vmm != kind) {
            return Ok(Found::Cold(format!(
                "--vmm {}: pool {image}'s VMs run under {}",
                choice.as_str(),
                ready[0].vmm.as_str()
            )));
        }
        ready.retain(|vm| vm.vmm == kind);
    }
    let filling = members
        .values()
        .filter(|m| m.image == image && !m.ready)
        .count();
    if ready.is_empty() {
        return Ok(Found::Cold(format!(
            "pool {image} has no ready VM ({filling} being made)"
        )));
    }
    let claim = Claim {
        name: spec.name.clone(),
        expires_at: spec.ttl.map(|ttl| now() + ttl.as_secs() as i64),
        vmm_choice: spec.vmm,
    };
    let mut busy = 0;
    for vm in ready {
        // The lock first: a claim whose command dies leaves the VM to gc,
        // never to a second claim, and gc never sees it half-claimed.
        let Some(guard) = lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? else {
            busy += 1;
            continue;
        };
        let Some(claimed) =
            ctx.store
                .claim_pool_vm(&vm.id, &claim, &super::create::generated_name)?
        else {
            continue;
        };
        crate::fault::point("pool:claimed");
        let from = vm.name.clone();
        let locked = match LockedVm::with_guard(ctx, claimed, guard) {
            Ok(locked) => locked,
            Err(err) if crate::vm::locked::is_no_such_vm(&err) => continue,
            Err(err) => return Err(err),
        };
        match hand_over(ctx, &locked, &from) {
            Ok(()) => {
                ctx.store.finish_claim(&locked.vm().id)?;
                // Replaces what was taken; a claim succeeds even if the
                // refill cannot start (gc starts it later).
                if let Err(err) = start_fill(ctx) {
                    eprintln!("warning: cannot start refilling pool {image}: {err:#}");
                }
                let read = VmRead::observe(
                    ctx,
                    ctx.store
                        .vm_by_id(&locked.vm().id)?
                        .context("claimed VM vanished")?,
                );
                drop(locked);
                return Ok(Found::Claimed {
                    read: Box::new(read),
                    from,
                });
            }
            Err(err) => {
                eprintln!(
                    "warning: pool VM {from} of pool {image} could not be handed over ({err:#}); deleting it"
                );
                locked.delete(true)?;
                start_fill(ctx)?;
            }
        }
    }
    Ok(Found::Cold(if busy > 0 {
        format!("pool {image}'s ready VMs are all busy")
    } else {
        format!("pool {image} has no ready VM left")
    }))
}

/// Gives a claimed VM (its lock held) its new name in the guest and in
/// `known_hosts`, after checking its VMM still runs it.
fn hand_over(ctx: &Ctx, locked: &LockedVm<'_>, old_name: &VmName) -> Result<()> {
    let vm = locked.vm();
    if locked.observed().pid.is_none() {
        bail!("it is no longer running");
    }
    let uds = ctx.paths.vsock_uds(&vm.id);
    let reply = vsock::set_hostname(&uds, vm.name.as_str(), RENAME_TIMEOUT)
        .with_context(|| format!("cannot rename the guest to {}", vm.name))?;
    if reply.hostname != vm.name.as_str() {
        bail!(
            "the guest calls itself {:?} after being renamed {}",
            reply.hostname,
            vm.name
        );
    }
    // The host key banger made, or the one pinned when the pool VM first
    // answered (an image without banger's initramfs).
    let key = match files::read_text_bounded(&VmFiles::of(&ctx.paths, vm).host_key_pub, 4096) {
        Ok(key) => key.trim().to_owned(),
        Err(_) => vsock::ping(&uds, RENAME_TIMEOUT)?
            .ssh_host_key
            .context("the guest reports no SSH host key")?,
    };
    let known_hosts = ctx.paths.known_hosts();
    let old = Vm {
        name: old_name.clone(),
        ..vm.clone()
    };
    ssh::forget_hosts(&known_hosts, &[ctx.dns_name(&old)])?;
    ssh::pin_host_key(&known_hosts, &[vm.ip.to_string(), ctx.dns_name(vm)], &key)?;
    Ok(())
}

/// Starts `banger pool fill` detached, its output appended to the fill
/// log. It waits for a fill already at work, then fills what is missing.
pub fn start_fill(ctx: &Ctx) -> Result<()> {
    let log_path = ctx.paths.pool_fill_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find banger's own executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["pool", "fill"]);
    let stdout = log.try_clone().context("pool fill log")?;
    crate::host::procs::spawn_detached(&mut cmd, stdout, log)
        .context("cannot start `banger pool fill`")?;
    Ok(())
}

/// `banger pool fill`: makes and boots every pool's missing VMs, marks
/// each ready once it answers, and repeats until no pool is short (claims
/// may take VMs meanwhile). One fill works at a time; another waits for
/// it, then finds less or nothing to do. A VM that cannot be made or does
/// not become ready is deleted and the fill ends with an error (`gc`
/// starts the next).
pub fn fill(ctx: &Ctx) -> Result<()> {
    let _only_fill = match fill_lock(ctx) {
        Ok(guard) => guard,
        // The fill at work checks the pools again before it exits.
        Err(err) if is_lock_timeout(&err) => {
            eprintln!("pool fill: another fill is still at work; it fills what is missing");
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    // Holding the fill lock, every VM still being made is one a fill that
    // died left: none of this fill's own.
    for (id, member) in ctx.store.pool_members()? {
        if !member.ready
            && let Some(vm) = ctx.store.vm_by_id(&id)?
        {
            eprintln!(
                "pool {}: deleting VM {}, left by an interrupted fill",
                member.image, vm.name
            );
            delete_member(ctx, vm)?;
        }
    }
    loop {
        let mut made = Vec::new();
        let mut failed = Vec::new();
        for status in status(ctx)? {
            let pool = &status.pool;
            for _ in (status.ready + status.filling)..pool.size as usize {
                match make_one(ctx, pool) {
                    Ok(vm) => made.push(vm),
                    Err(err) => {
                        eprintln!("pool {}: cannot make a VM: {err:#}", pool.image);
                        failed.push(pool.image.clone());
                        break;
                    }
                }
            }
        }
        crate::fault::point("pool:filling");
        if made.is_empty() && failed.is_empty() {
            return Ok(());
        }
        for vm in made {
            let mut timings = ctx.timings();
            let ready = super::ready::wait(ctx, &vm, None, &mut timings).and_then(|vm| {
                // Deleted meanwhile (its pool removed): nothing to settle.
                if !ctx.store.pool_members()?.contains_key(&vm.id) {
                    bail!("it was deleted while it booted");
                }
                settle(ctx, &vm).map(|()| vm)
            });
            // A claim's sessions then skip the key exchange; without the
            // connection they still work, only slower.
            if let Ok(vm) = &ready
                && let Err(err) = super::ssh::open_master(ctx, vm)
            {
                eprintln!("pool {}: {err:#}", vm.image);
            }
            match ready {
                Ok(vm) => {
                    if ctx.store.mark_pool_ready(&vm.id)? {
                        eprintln!(
                            "pool {}: VM {} is ready ({:.1}s)",
                            vm.image,
                            vm.name,
                            timings.total().as_secs_f64()
                        );
                    }
                }
                Err(err) => {
                    eprintln!(
                        "pool {}: VM {} did not become ready: {err:#}",
                        vm.image, vm.name
                    );
                    failed.push(vm.image.clone());
                    if let Some(vm) = ctx.store.vm_by_id(&vm.id)? {
                        delete_member(ctx, vm)?;
                    }
                }
            }
        }
        if !failed.is_empty() {
            failed.dedup();
            bail!(
                "pool {} not filled; `banger gc` tries again",
                failed.join(", ")
            );
        }
    }
}

/// How long a pool VM's guest may take to finish its boot once it answers.
const SETTLE_TIMEOUT: &str = "120";

/// Waits, over SSH, until the guest's boot has finished (systemd has no job
/// left), so that a claim gets a quiet guest whose sshd has already served
/// a connection. A guest without systemd only proves SSH works.
fn settle(ctx: &Ctx, vm: &Vm) -> Result<()> {
    let script = format!(
        "timeout {SETTLE_TIMEOUT} systemctl is-system-running --wait >/dev/null 2>&1; exit 0"
    );
    // A VM deleted under the session is noticed within 15 s.
    let alive = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"];
    super::ssh::quietly(super::ssh::command_with(
        ctx,
        vm,
        &alive,
        false,
        &["sh".into(), "-c".into(), script],
    ))
    .context("SSH into it failed")
}

fn is_lock_timeout(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<StateError>(),
        Some(StateError::LockTimeout { .. })
    )
}

/// The fill lock, waited for: held by the one fill at work.
fn fill_lock(ctx: &Ctx) -> Result<lock::LockGuard> {
    Ok(lock::acquire(
        &ctx.paths.pool_fill_lock(),
        "pool fill",
        lock::DEFAULT_TIMEOUT,
        &crate::vm::ctx::say_waiting,
    )?)
}

/// Makes and starts one VM for `pool` (its guest boots on its own).
fn make_one(ctx: &Ctx, pool: &Pool) -> Result<Vm> {
    let id = VmId::random();
    let spec = Spec {
        name: Some(VmName::generated(format!("pool-{}", &id.as_str()[..8]))),
        ..spec_of(pool)
    };
    let mut timings = ctx.timings();
    Ok(super::create::create(ctx, &spec, true, &mut timings)?.vm)
}

/// What gc makes of the pools: which VMs to replace, and which pools to
/// refill after the sweep.
pub struct GcView {
    members: HashMap<VmId, PoolMember>,
    pools: HashMap<String, (Pool, Option<VmShape>)>,
    images: HashMap<String, i64>,
    /// Whether a `pool fill` is at work (it holds the fill lock).
    filling: bool,
}

impl GcView {
    pub fn read(ctx: &Ctx) -> Result<Self> {
        let filling = lock::try_acquire(&ctx.paths.pool_fill_lock())?.is_none();
        Ok(Self {
            members: ctx.store.pool_members()?,
            pools: ctx
                .store
                .pools()?
                .into_iter()
                .map(|pool| {
                    let shape = resolved(ctx, &pool).ok();
                    (pool.image.clone(), (pool, shape))
                })
                .collect(),
            images: ctx
                .store
                .list_images()?
                .into_iter()
                .map(|image| (image.name, image.created_at))
                .collect(),
            filling,
        })
    }

    /// Why gc replaces pool VM `read`, if it is one and should go.
    pub fn why_replace(&self, read: &VmRead) -> Option<String> {
        let vm = &read.vm;
        let member = self.members.get(&vm.id)?;
        let Some((pool, shape)) = self.pools.get(&member.image) else {
            return Some("its warm pool was removed".into());
        };
        if !member.ready {
            return (!self.filling).then(|| "the pool fill making it did not finish".into());
        }
        if read.observed.pid.is_none() {
            return Some("a pool VM that no longer runs".into());
        }
        if vm.created_at + pool.max_age as i64 <= now() {
            return Some(format!(
                "a pool VM older than its pool's max age ({})",
                format_duration(Duration::from_secs(pool.max_age))
            ));
        }
        if self
            .images
            .get(&vm.image)
            .is_some_and(|built| *built > vm.created_at)
        {
            return Some(format!(
                "a pool VM of image {} as it was before a rebuild",
                vm.image
            ));
        }
        if shape.is_some_and(|shape| shape != VmShape::of(vm)) {
            return Some("a pool VM made with its pool's former spec".into());
        }
        None
    }
}

/// Pools with fewer VMs than their size, as `(image, have, size)`.
pub fn short(ctx: &Ctx) -> Result<Vec<(String, usize, u32)>> {
    Ok(status(ctx)?
        .into_iter()
        .filter(|s| s.ready + s.filling < s.pool.size as usize)
        .map(|s| (s.pool.image, s.ready + s.filling, s.pool.size))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::handles::Handles;
    use crate::state::model::{VmState, VmmKind};
    use crate::vm::Observed;

    const HOUR: i64 = 3600;

    fn vm(id: &str, created_at: i64) -> Vm {
        Vm {
            id: VmId::parse(id).unwrap(),
            name: VmName::parse("pool-1").unwrap(),
            image: "base".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_size: 1 << 30,
            work_size: 8 << 30,
            ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
            mac: String::new(),
            vsock_cid: 3,
            nat: true,
            published: Vec::new(),
            cow_strategy: None,
            vmm: VmmKind::Qemu,
            vmm_choice: None,
            pending: None,
            desired: VmState::Running,
            expires_at: None,
            last_error: None,
            created_at,
        }
    }

    fn read(vm: Vm, running: bool) -> VmRead {
        VmRead {
            vm,
            observed: Observed {
                pid: running.then_some(42),
                handles: Handles::default(),
            },
        }
    }

    /// A view of one pool `base` (max age 1h, VMs of `shape`) whose image
    /// was built at `built`, with `members` (id, ready).
    fn view(members: &[(&str, bool)], built: i64, filling: bool) -> GcView {
        let pool = Pool {
            image: "base".into(),
            size: 1,
            spec: PoolSpec {
                vcpus: 1,
                memory_mib: 512,
                disk_size: None,
                work_size: 8 << 30,
                nat: true,
            },
            max_age: HOUR as u64,
            created_at: 0,
        };
        GcView {
            members: members
                .iter()
                .map(|(id, ready)| {
                    (
                        VmId::parse(id).unwrap(),
                        PoolMember {
                            image: "base".into(),
                            ready: *ready,
                        },
                    )
                })
                .collect(),
            pools: [(
                "base".to_owned(),
                (pool, Some(VmShape::of(&vm("0000000000", 0)))),
            )]
            .into_iter()
            .collect(),
            images: [("base".to_owned(), built)].into_iter().collect(),
            filling,
        }
    }

    #[test]
    fn gc_replaces_pool_vms_that_are_stale_and_leaves_the_rest() {
        let now = now();
        let fresh = vm("00000000aa", now - 60);
        let gc = view(&[("00000000aa", true)], now - HOUR / 2, false);
        assert_eq!(gc.why_replace(&read(fresh.clone(), true)), None);
        // Not a pool VM: none of gc's pool business.
        let other = vm("00000000bb", 0);
        assert_eq!(gc.why_replace(&read(other, false)), None);
        assert_eq!(
            gc.why_replace(&read(fresh.clone(), false)).as_deref(),
            Some("a pool VM that no longer runs")
        );
        let old = vm("00000000aa", now - 2 * HOUR);
        assert_eq!(
            gc.why_replace(&read(old, true)).as_deref(),
            Some("a pool VM older than its pool's max age (1h)")
        );
        let rebuilt = view(&[("00000000aa", true)], now, false);
        assert_eq!(
            rebuilt.why_replace(&read(fresh.clone(), true)).as_deref(),
            Some("a pool VM of image base as it was before a rebuild")
        );
        let bigger = Vm {
            memory_mib: 1024,
            ..fresh.clone()
        };
        assert_eq!(
            gc.why_replace(&read(bigger, true)).as_deref(),
            Some("a pool VM made with its pool's former spec")
        );
        // Being made: left to the fill at work, replaced once none is.
        let making = view(&[("00000000aa", false)], now - HOUR, true);
        assert_eq!(making.why_replace(&read(fresh.clone(), true)), None);
        let orphan = view(&[("00000000aa", false)], now - HOUR, false);
        assert_eq!(
            orphan.why_replace(&read(fresh.clone(), true)).as_deref(),
            Some("the pool fill making it did not finish")
        );
        let mut removed = view(&[("00000000aa", true)], now - HOUR, false);
        removed.pools.clear();
        assert_eq!(
            removed.why_replace(&read(fresh, true)).as_deref(),
            Some("its warm pool was removed")
        );
    }

    #[test]
    fn a_spec_reads_as_its_values() {
        let shape = VmShape::of(&vm("00000000aa", 0));
        assert_eq!(
            shape.describe(),
            "vcpus 1, memory 512M, disk 1G, work 8G, nat"
        );
    }
}
