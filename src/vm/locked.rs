//! [`LockedVm`]: a VM under its lock, reconciled with the host, and the only
//! value through which a VM changes (prepare disks, start, stop, delete).
//! [`VmRead`]: a VM as observed, for commands that only look.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::host::{StopOutcome, VmmConfig};
use super::resources::{self, Journal};
use super::status::{self, Next, VmStatus};
use super::{Ctx, ImageFiles, Timings, VmFiles};
use crate::host::image::seed::{RootLayout, Seed};
use crate::host::ssh;
use crate::state::StateError;
use crate::state::atomic;
use crate::state::handles::{Handles, Loaded};
use crate::state::lock::{self, LockGuard};
use crate::state::model::{BadVm, CowStrategy, Pending, Vm, VmId, VmState};

/// A VM as observed on the host right now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The live VMM, if one serves this VM.
    pub pid: Option<u32>,
    pub handles: Handles,
}

impl Observed {
    pub fn state(&self) -> VmState {
        if self.pid.is_some() {
            VmState::Running
        } else {
            VmState::Stopped
        }
    }
}

/// A VM as it is, for commands that do not change it.
#[derive(Debug, Clone)]
pub struct VmRead {
    pub vm: Vm,
    pub observed: Observed,
}

impl VmRead {
    /// Looks at the host without changing anything.
    pub fn observe(ctx: &Ctx, vm: Vm) -> Self {
        let handles = Handles::load_or_default(&ctx.paths.vm_dir(&vm.id));
        let pid = resources::find_vmm(ctx, &vm.id, &handles);
        Self {
            vm,
            observed: Observed { pid, handles },
        }
    }

    /// The named VM, observed without reconciling.
    pub fn observe_named(ctx: &Ctx, name: &str) -> Result<Self> {
        Ok(Self::observe(ctx, ctx.store.vm(name)?))
    }

    /// Reconciles the VM if no other command holds it, else only observes
    /// it. `None` when it was deleted since `vm` was read.
    pub fn reconciled(ctx: &Ctx, vm: Vm) -> Result<Option<Self>> {
        match lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? {
            Some(guard) => match LockedVm::with_guard(ctx, vm, guard) {
                Ok(locked) => Ok(Some(locked.read())),
                Err(e) if is_no_such_vm(&e) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(Some(Self::observe(ctx, vm))),
        }
    }

    /// Every VM, each reconciled if free, in the order of their rows; an
    /// unusable row is there as its [`BadVm`], and a VM whose reconcile
    /// fails is shown as observed, with a warning: neither hides the
    /// others. A VM that cannot be running (no operation under way, not
    /// wanted running, no journal and no socket directory) costs one
    /// `stat` and no lock (the socket directories are listed once): `vm ls`
    /// stays flat with many stopped VMs.
    pub fn list(ctx: &Ctx) -> Result<Vec<Result<Self, BadVm>>> {
        let mut views = Vec::new();
        let rows = ctx.store.scan_vms()?;
        let run_dirs = RunDirs::list(ctx);
        for row in rows {
            let vm = match row {
                Ok(vm) => vm,
                Err(bad) => {
                    views.push(Err(bad));
                    continue;
                }
            };
            if Self::cannot_be_running(ctx, &vm, &run_dirs) {
                views.push(Ok(Self {
                    vm,
                    observed: Observed::default(),
                }));
                continue;
            }
            match Self::reconciled(ctx, vm.clone()) {
                Ok(read) => views.extend(read.map(Ok)),
                Err(err) => {
                    eprintln!("warning: VM {}: {err:#}", vm.name);
                    views.push(Ok(Self::observe(ctx, vm)));
                }
            }
        }
        Ok(views)
    }

    fn cannot_be_running(ctx: &Ctx, vm: &Vm, run_dirs: &RunDirs) -> bool {
        vm.pending.is_none()
            && vm.desired == VmState::Stopped
            && !Handles::path(&ctx.paths.vm_dir(&vm.id)).exists()
            && !run_dirs.has(ctx, vm)
    }

    pub fn status(&self) -> VmStatus {
        VmStatus::of(&self.vm, self.observed.pid.is_some())
    }

    /// The error users see: the operation found under way, else the last
    /// failure.
    pub fn last_error(&self) -> Option<String> {
        self.status()
            .pending_message(self.vm.name.as_str())
            .or_else(|| self.vm.last_error.clone())
    }
}

/// The VMs' socket directories, listed once for a whole `vm ls`; when
/// the listing fails, each VM's is looked up on its own.
enum RunDirs {
    Listed(std::collections::HashSet<std::ffi::OsString>),
    Unlisted,
}

impl RunDirs {
    fn list(ctx: &Ctx) -> Self {
        match std::fs::read_dir(ctx.paths.vm_run_dirs()) {
            Ok(entries) => Self::Listed(entries.flatten().map(|e| e.file_name()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::Listed(std::collections::HashSet::new())
            }
            Err(_) => Self::Unlisted,
        }
    }

    /// Whether `vm` has a socket directory.
    fn has(&self, ctx: &Ctx, vm: &Vm) -> bool {
        match self {
            Self::Listed(names) => names.contains(std::ffi::OsStr::new(vm.id.as_str())),
            Self::Unlisted => ctx.paths.vm_run_dir(&vm.id).exists(),
        }
    }
}

pub(crate) fn is_no_such_vm(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<StateError>(),
        Some(StateError::NoSuchVm(_))
    )
}

/// A VM whose lock this value holds, reconciled when it was opened.
pub struct LockedVm<'c> {
    ctx: &'c Ctx,
    vm: Vm,
    observed: Observed,
    lock: LockGuard,
}

impl<'c> LockedVm<'c> {
    /// Locks the named VM, re-reads its row and reconciles it.
    pub fn open(ctx: &'c Ctx, name: &str) -> Result<Self> {
        Self::lock(ctx, ctx.store.vm(name)?)
    }

    /// Locks `vm` (waiting, with a message, up to the lock timeout), then
    /// re-reads its row, which another command may have changed or deleted
    /// meanwhile, and reconciles it.
    pub fn lock(ctx: &'c Ctx, vm: Vm) -> Result<Self> {
        let guard = lock::acquire(
            &ctx.paths.vm_lock(&vm.id),
            &format!("VM {}", vm.name),
            lock::DEFAULT_TIMEOUT,
            &super::ctx::say_waiting,
        )?;
        Self::with_guard(ctx, vm, guard)
    }

    /// Locks `vm` only if no other command holds it.
    pub fn try_lock(ctx: &'c Ctx, vm: Vm) -> Result<Option<Self>> {
        match lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? {
            Some(guard) => match Self::with_guard(ctx, vm, guard) {
                Ok(locked) => Ok(Some(locked)),
                Err(e) if is_no_such_vm(&e) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Like [`LockedVm::lock`] with the lock already taken.
    pub(crate) fn with_guard(ctx: &'c Ctx, vm: Vm, guard: LockGuard) -> Result<Self> {
        let Some(mut vm) = ctx.store.vm_by_id(&vm.id)? else {
            // Deleted while we waited: the lock file we hold is no one's.
            guard.remove()?;
            return Err(StateError::NoSuchVm(vm.name.to_string()).into());
        };
        let observed = reconcile(ctx, &mut vm)?;
        Ok(Self {
            ctx,
            vm,
            observed,
            lock: guard,
        })
    }

    /// A VM whose row this command just inserted under a lock it took
    /// first: nothing to reconcile yet.
    pub(crate) fn new_row(ctx: &'c Ctx, vm: Vm, guard: LockGuard) -> Self {
        Self {
            ctx,
            vm,
            observed: Observed::default(),
            lock: guard,
        }
    }

    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    pub(super) fn ctx(&self) -> &'c Ctx {
        self.ctx
    }

    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    pub fn status(&self) -> VmStatus {
        VmStatus::of(&self.vm, self.observed.pid.is_some())
    }

    /// The VM as a read-only view (the lock is kept by `self`).
    pub fn read(&self) -> VmRead {
        VmRead {
            vm: self.vm.clone(),
            observed: self.observed.clone(),
        }
    }

    /// Records the desired state, the operation under way and the last error.
    fn set_state(
        &mut self,
        desired: VmState,
        pending: Option<Pending>,
        last_error: Option<String>,
    ) -> Result<()> {
        self.ctx
            .store
            .set_state(&self.vm.id, desired, pending, last_error.as_deref())?;
        self.vm.desired = desired;
        self.vm.pending = pending;
        self.vm.last_error = last_error;
        Ok(())
    }

    /// Makes the VM's root and work disks, once, while it is being created.
    /// The image's files are only read. `then_start` records the start to
    /// come in the same write that finishes the creation, so a crash in
    /// between reads as an interrupted start.
    pub fn prepare_disks(&mut self, image: &ImageFiles, then_start: bool) -> Result<CowStrategy> {
        if self.status() != VmStatus::Creating {
            bail!("VM {} already has its disks", self.vm.name);
        }
        let strategy = make_disks(self.ctx, &self.vm, image)?;
        crate::fault::point("disks:files");
        let pending = then_start.then_some(Pending::Start);
        let desired = if then_start {
            VmState::Running
        } else {
            VmState::Stopped
        };
        self.ctx
            .store
            .finish_creating(&self.vm.id, strategy, pending, desired)?;
        self.vm.cow_strategy = Some(strategy);
        self.vm.pending = pending;
        self.vm.desired = desired;
        Ok(strategy)
    }

    /// Starts a stopped VM's runtime: root device, TAP, VMM, firewall and
    /// published ports, sidecar. On failure everything made is released, the VM stays
    /// stopped with `last_error` set, and the error is returned.
    pub fn start(&mut self, timings: &mut Timings) -> Result<u32> {
        let name = self.vm.name.to_string();
        match self.status() {
            // Only `prepare_disks(.., then_start)` leaves a start pending here.
            VmStatus::Starting if self.observed.pid.is_none() => {}
            status => match status.can_start(&name)? {
                Next::Go => {}
                Next::AlreadyThere => bail!("VM {name} is already running"),
            },
        }
        let pick = match super::vmm_choice::pick(self.ctx, self.vm.vmm_choice) {
            Ok(pick) => pick,
            Err(err) => {
                self.set_state(VmState::Stopped, None, Some(format!("{err:#}")))?;
                return Err(err);
            }
        };
        if let Some(why) = &pick.fallback {
            eprintln!(
                "warning: VM {name} runs under QEMU's software CPU, whose boots take tens of \
                 seconds: {why}"
            );
        }
        if pick.kind != self.vm.vmm {
            self.ctx.store.set_vmm(&self.vm.id, pick.kind)?;
            self.vm.vmm = pick.kind;
        }
        timings.vmm = Some(pick.kind);
        // Intent first: if banger dies midway, reconcile kills the VMM it
        // may have left, releases what the journal names and says so.
        self.set_state(VmState::Running, Some(Pending::Start), None)?;
        let files = VmFiles::of(&self.ctx.paths, &self.vm);
        let len = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut journal = Journal::new(
            &self.ctx.paths.vm_dir(&self.vm.id),
            Handles {
                cow_strategy: self.vm.cow_strategy,
                vmm: Some(pick.kind),
                probe: pick.probe,
                console_from: len(&files.console_log),
                vmm_log_from: len(&files.vmm_log),
                ..Handles::default()
            },
        );
        match start_runtime(self.ctx, &self.vm, &pick.binary, &mut journal, timings) {
            Ok(pid) => {
                self.set_state(VmState::Running, None, None)?;
                self.observed = Observed {
                    pid: Some(pid),
                    handles: journal.handles().clone(),
                };
                Ok(pid)
            }
            Err(err) => {
                let released = resources::teardown(self.ctx, &self.vm, journal.handles());
                self.set_state(VmState::Stopped, None, Some(format!("{err:#}")))?;
                self.observed = Observed::default();
                released.context("cleaning up after a failed start")?;
                Err(err)
            }
        }
    }

    /// Stops the VM's VMM (Ctrl-Alt-Del, up to `timeout`, then SIGTERM,
    /// then SIGKILL; `force`: SIGKILL at once) and releases its runtime.
    pub fn stop(&mut self, timeout: Duration, force: bool) -> Result<StopOutcome> {
        if self.status().can_stop() == Next::AlreadyThere {
            return Ok(StopOutcome::AlreadyGone);
        }
        self.set_state(VmState::Stopped, Some(Pending::Stop), None)?;
        let outcome = match self.observed.pid {
            Some(pid) => {
                let sock = self.ctx.paths.api_sock(&self.vm.id);
                self.ctx.host.vmm.stop(&sock, pid, timeout, force)?
            }
            None => StopOutcome::AlreadyGone,
        };
        crate::fault::point("stop:vmm");
        resources::teardown(self.ctx, &self.vm, &self.observed.handles)?;
        self.observed = Observed::default();
        crate::fault::point("stop:teardown");
        self.set_state(VmState::Stopped, None, None)?;
        Ok(outcome)
    }

    /// Stops the VM if it runs, then removes its files, pinned host keys,
    /// row and, still holding it, its lock file. Works on a VM in any state,
    /// including a half-made one.
    pub fn delete(mut self, force: bool) -> Result<()> {
        if self.status().can_delete() != Next::Go {
            bail!("VM {} cannot be deleted now", self.vm.name);
        }
        if self.observed.pid.is_some() {
            self.stop(self.ctx.config.stop_timeout, force)?;
        } else {
            resources::teardown(self.ctx, &self.vm, &self.observed.handles)?;
        }
        // Shown if this deletion is interrupted; the row is gone otherwise.
        // A half-made VM already says it is only to be deleted (and when its
        // disk filled up, the files must go before the database can grow).
        if self.vm.pending != Some(Pending::Create) {
            let (desired, last_error) = (self.vm.desired, self.vm.last_error.clone());
            self.set_state(desired, Some(Pending::Delete), last_error)?;
        }
        crate::fault::point("delete:stop");
        let ctx = self.ctx;
        resources::remove_dir_if_present(&ctx.paths.vm_dir(&self.vm.id))?;
        resources::remove_dir_if_present(&ctx.paths.vm_run_dir(&self.vm.id))?;
        crate::fault::point("delete:files");
        ssh::forget_hosts(
            &ctx.paths.known_hosts(),
            &[self.vm.ip.to_string(), ctx.dns_name(&self.vm)],
        )?;
        ctx.store.delete_vm(&self.vm.id)?;
        self.lock.remove()?;
        Ok(())
    }
}

/// Reconciles one VM (its lock is held): if its VMM is gone, releases
/// whatever its journal (or the host) shows and records it as stopped.
///
/// Holding the lock means no command is midway through this VM, so an
/// operation still recorded as pending names a command that died. A start
/// that died may have left a VMM it never configured: that VMM is killed,
/// the runtime released, and the VM shows the interrupted start. A stop
/// that died leaves a VMM still alive to the next `vm stop` (its guest may
/// be shutting down). A create or delete that died stays pending: only a
/// delete (or `gc`) finishes it.
fn reconcile(ctx: &Ctx, vm: &mut Vm) -> Result<Observed> {
    let vm_dir = ctx.paths.vm_dir(&vm.id);
    let (mut handles, trustworthy) = match Handles::load(&vm_dir) {
        Loaded::Found(handles) => (handles, true),
        Loaded::Missing | Loaded::Corrupt(_) => (Handles::default(), false),
    };
    let pid = resources::find_vmm(ctx, &vm.id, &handles);
    let start_interrupted = vm.pending == Some(Pending::Start);
    match pid {
        Some(pid) if !start_interrupted => {
            if handles.pid != Some(pid) || !trustworthy {
                handles.pid = Some(pid);
                handles
                    .tap
                    .get_or_insert_with(|| crate::state::layout::tap(&vm.id));
                handles.nat |= vm.nat;
                handles.ports |= !vm.published.is_empty();
                handles.save(&vm_dir)?;
            }
            return Ok(Observed {
                pid: Some(pid),
                handles,
            });
        }
        Some(pid) => ctx.host.vmm.kill(pid),
        None => {}
    }
    let leftovers = pid.is_some()
        || !handles.is_empty()
        || !trustworthy && ctx.paths.vm_run_dir(&vm.id).exists();
    if leftovers {
        resources::teardown(ctx, vm, &handles)?;
    }
    let message = match vm.pending {
        Some(Pending::Start) => Some(status::start_interrupted(vm.name.as_str())),
        Some(Pending::Stop) => Some(format!(
            "stopping VM {} was interrupted; it is stopped now",
            vm.name
        )),
        None if vm.desired == VmState::Running => Some(format!(
            "the VMM exited unexpectedly; see `banger vm logs {} --vmm`",
            vm.name
        )),
        // An unfinished create or delete stays as it is.
        // An unfinished claim is gc's to delete.
        Some(Pending::Create | Pending::Delete | Pending::Claim) | None => None,
    };
    if let Some(message) = message {
        ctx.store
            .set_state(&vm.id, VmState::Stopped, None, Some(&message))?;
        vm.desired = VmState::Stopped;
        vm.pending = None;
        vm.last_error = Some(message);
    }
    Ok(Observed::default())
}

/// The VM's disks, in the first of these the host and image allow: a
/// sparse COW store for a dm-snapshot; a reflink clone of the image's
/// rootfs; for an image that boots banger's initramfs, an empty sparse
/// upper disk over the image's read-only rootfs (an overlay); else a sparse
/// copy. The work disk is a clone of the image's seed.
///
/// For an image that boots banger's initramfs, nothing is written inside a
/// disk: the disks are only sized (the guest grows their filesystems and
/// formats the upper disk on its first boot), and banger's public key and
/// the VM's SSH host key, made here, go on the seed drive the initramfs
/// reads; the host key is pinned in `known_hosts` before the first boot.
/// Other images get banger's key written into the work disk and keep
/// learning the host key on their first boot.
fn make_disks(ctx: &Ctx, vm: &Vm, image: &ImageFiles) -> Result<CowStrategy> {
    let disks = &ctx.host.disks;
    let files = VmFiles::of(&ctx.paths, vm);
    crate::state::paths::ensure_private_dir(&files.dir)?;
    let seeded = image
        .initrd
        .as_deref()
        .is_some_and(crate::host::image::is_banger_initramfs);
    let rootfs_size = file_size(&image.rootfs)?;
    let grow = |path: &Path, size: u64, from: u64| -> Result<()> {
        match (size > from, seeded) {
            (false, _) => Ok(()),
            (true, true) => sparse_file(path, size, false),
            (true, false) => disks.grow_ext4(path, size),
        }
    };
    let strategy = if disks.dm_available() {
        sparse_file(&files.cow, vm.disk_size, true)?;
        CowStrategy::DmSnapshot
    } else if disks.reflink(&image.rootfs, &files.root_disk, rootfs_size)? {
        grow(&files.root_disk, vm.disk_size, rootfs_size)?;
        CowStrategy::Reflink
    } else if seeded {
        sparse_file(&files.upper, vm.disk_size, true)?;
        CowStrategy::Overlay
    } else {
        disks.clone_file(&image.rootfs, &files.root_disk, rootfs_size)?;
        grow(&files.root_disk, vm.disk_size, rootfs_size)?;
        CowStrategy::Copy
    };
    let seed_size = file_size(&image.work_seed)?;
    disks.clone_file(&image.work_seed, &files.work, seed_size)?;
    grow(&files.work, vm.work_size.max(seed_size), seed_size)?;
    let public_key = ssh::ensure_key(&ctx.paths.ssh_key())?;
    if !seeded {
        disks.write_ext4_file(
            &files.work,
            "/.ssh/authorized_keys",
            format!("{public_key}\n").as_bytes(),
            0o600,
        )?;
        return Ok(strategy);
    }
    write_seed(ctx, vm, &files, strategy, &public_key)?;
    Ok(strategy)
}

/// Makes the VM's SSH host key, writes its seed drive (banger's public
/// key, the host key pair, the root's layout) and pins the host key's
/// public half in `known_hosts` under the VM's IP and DNS name.
fn write_seed(
    ctx: &Ctx,
    vm: &Vm,
    files: &VmFiles,
    strategy: CowStrategy,
    public_key: &str,
) -> Result<()> {
    let (host_key, host_key_pub) = ssh::new_host_key(vm.name.as_ref())
        .map_err(|e| anyhow!("cannot make VM {}'s SSH host key: {e}", vm.name))?;
    let root = if strategy == CowStrategy::Overlay {
        RootLayout::Overlay
    } else {
        RootLayout::Disk
    };
    let seed = Seed {
        authorized_keys: public_key,
        host_key: &host_key,
        host_key_pub: &host_key_pub,
        root,
    };
    let bytes = seed
        .to_bytes()
        .with_context(|| format!("cannot write VM {}'s seed drive", vm.name))?;
    atomic::write(&files.seed, &bytes, 0o600)?;
    atomic::write(
        &files.host_key_pub,
        format!("{host_key_pub}\n").as_bytes(),
        0o644,
    )?;
    let hosts = [vm.ip.to_string(), ctx.dns_name(vm)];
    Ok(ssh::pin_host_key(
        &ctx.paths.known_hosts(),
        &hosts,
        &host_key_pub,
    )?)
}

/// Makes `path` a sparse file of `size` bytes, only root can read it;
/// `fresh`: created (or emptied) here, else an existing file grown.
fn sparse_file(path: &Path, size: u64, fresh: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if fresh {
        std::os::unix::fs::OpenOptionsExt::mode(options.create(true).truncate(true), 0o600);
    }
    options
        .open(path)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("cannot size {}", path.display()))
}

pub fn file_size(path: &std::path::Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len())
}

/// Kernel command line for a VM.
pub fn boot_args(vm: &Vm, config: &crate::state::config::Config) -> String {
    let gateway = config.subnet.gateway();
    format!(
        "console=ttyS0 reboot=k panic=1 pci=off ip={}::{}:{}:{}:eth0:off:{}",
        vm.ip,
        gateway,
        config.subnet.netmask(),
        vm.name,
        gateway
    )
}

/// The stages of a start, each recorded in the journal before it acts.
fn start_runtime(
    ctx: &Ctx,
    vm: &Vm,
    vmm_binary: &Path,
    journal: &mut Journal,
    timings: &mut Timings,
) -> Result<u32> {
    let image = ctx.store.image(&vm.image)?;
    let image_files = ImageFiles::of(&ctx.paths, &image);
    let files = VmFiles::of(&ctx.paths, vm);
    let root_disk = timings.time("root disk", || {
        resources::attach_root_device(ctx, vm, &image_files, journal)
    })?;
    let tap = timings.time("tap", || resources::acquire_tap(ctx, vm, journal))?;
    let pid = timings.time("spawn", || {
        resources::spawn_vmm(ctx, vm, vmm_binary, journal)
    })?;

    // Firewall rules do not depend on the VMM: add them while it is
    // configured. A VM with NAT gets its rules and the host fence in one
    // transaction; one without gets the host fence alone.
    if vm.nat {
        journal.record(|h| h.nat = true)?;
    }
    if !vm.published.is_empty() {
        journal.record(|h| h.ports = true)?;
    }
    let api_sock = ctx.paths.api_sock(&vm.id);
    let config = VmmConfig {
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        kernel: image_files.kernel.clone(),
        initrd: image_files.initrd.clone(),
        boot_args: boot_args(vm, &ctx.config),
        rootfs: root_disk,
        root_read_only: vm.cow_strategy == Some(CowStrategy::Overlay),
        work_disk: files.work.clone(),
        seed: files.seed.exists().then(|| files.seed.clone()),
        upper: (vm.cow_strategy == Some(CowStrategy::Overlay)).then(|| files.upper.clone()),
        tap,
        mac: vm.mac.clone(),
        vsock_cid: vm.vsock_cid,
        vsock_uds: ctx.paths.vsock_uds(&vm.id),
        log_path: files.vmm_log.clone(),
        metrics_path: files.metrics.clone(),
    };
    let (paths, net, bridge) = (&ctx.paths, ctx.host.net.as_ref(), &ctx.config.bridge);
    let fence = ctx.fence();
    let fence = &fence;
    let (configured, firewall) = std::thread::scope(|scope| {
        let firewall = scope.spawn(move || {
            let started = Instant::now();
            let result = resources::add_firewall(paths, net, fence, vm)
                .context("cannot add the VM's firewall rules")
                .and_then(|()| resources::publish_ports(paths, net, bridge, vm));
            (result, started.elapsed())
        });
        let configured = timings.time("configure", || {
            ctx.host
                .vmm
                .configure_and_start(&api_sock, &config)
                .with_context(|| format!("the VMM refused the configuration of VM {}", vm.name))
        });
        let firewall = firewall.join().unwrap_or_else(|_| {
            (
                Err(anyhow!("the firewall setup thread panicked")),
                Duration::ZERO,
            )
        });
        (configured, firewall)
    });
    configured?;
    let (result, elapsed) = firewall;
    timings.overlapped("firewall", elapsed);
    result?;
    timings.time("sidecar", || ctx.host.sidecar.ensure_running())?;
    Ok(pid)
}

/// The id of a VM about to be created, with its lock already held (so no
/// one can touch the row between its insert and its first use), and a
/// shared hold of the gc lock: drop it once the row is inserted. Until then
/// the VM exists only as this lock, which `gc` (holding the gc lock
/// exclusively while it sweeps) cannot see; so gc never sweeps while a VM
/// is between its id and its row.
pub(crate) fn lock_new_id(ctx: &Ctx) -> Result<(VmId, LockGuard, LockGuard)> {
    let unregistered = lock::acquire_shared(
        &ctx.paths.gc_lock(),
        "gc",
        lock::DEFAULT_TIMEOUT,
        &|_, _| {},
    )?;
    let id = VmId::random();
    let guard = lock::acquire(
        &ctx.paths.vm_lock(&id),
        "new VM",
        lock::DEFAULT_TIMEOUT,
        &|_, _| {},
    )?;
    Ok((id, guard, unregistered))
}
