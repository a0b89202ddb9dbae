//! The VM lifecycle shared by commands: open state, lock, reconcile a VM
//! against the host, prepare its disks, start its runtime, stop it and tear
//! its runtime down. Every runtime resource is recorded in `handles.json`
//! before it is created, and every release tolerates it being already gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::host::disk::{cow, dm, ext4, loopdev};
use crate::host::firecracker::{api, process};
use crate::host::{net, procs, ssh};
use crate::state::StateError;
use crate::state::config::Config;
use crate::state::handles::{Handles, Loaded};
use crate::state::lock::{self, LockGuard};
use crate::state::model::{Image, Vm, VmState};
use crate::state::paths::Paths;
use crate::state::store::Store;

/// Names of pool TAPs kept warm by the sidecar.
pub const POOL_PREFIX: &str = "bgpool";
/// Prefix of a VM's own TAP: `bg-<id>`.
pub const TAP_PREFIX: &str = "bg-";
/// Prefix of a VM's device-mapper devices: `banger-<id>`.
pub const DM_PREFIX: &str = "banger-";

/// Everything a command needs: paths, config and the open database.
pub struct Ctx {
    pub paths: Paths,
    pub config: Config,
    pub store: Store,
}

impl Ctx {
    /// Creates the state directories if needed, loads config, opens the database.
    pub fn open() -> Result<Self> {
        let paths = Paths::from_env();
        let config = Config::load()?;
        paths
            .ensure()
            .context("cannot prepare banger's state directories (are you root?)")?;
        let store = Store::open(&paths.db())?;
        Ok(Self {
            paths,
            config,
            store,
        })
    }

    /// Locks one VM for the rest of the command and re-reads its row, which
    /// another command may have changed or deleted before the lock was ours.
    pub fn lock_vm(&self, vm: &mut Vm) -> Result<LockGuard> {
        let guard = lock::acquire(
            &self.paths.vm_lock(&vm.id),
            &format!("VM {}", vm.name),
            lock::DEFAULT_TIMEOUT,
            &say_waiting,
        )?;
        if !refresh(self, vm)? {
            return Err(StateError::NoSuchVm(vm.name.clone()).into());
        }
        Ok(guard)
    }

    /// Locks an image while its files are replaced or deleted.
    pub fn lock_image(&self, name: &str) -> Result<LockGuard> {
        Ok(lock::acquire(
            &self.paths.image_lock(name),
            &format!("image {name}"),
            lock::DEFAULT_TIMEOUT,
            &say_waiting,
        )?)
    }

    /// Locks an image against replacement while its files are read; any
    /// number of readers at once.
    pub fn lock_image_shared(&self, name: &str) -> Result<LockGuard> {
        Ok(lock::acquire_shared(
            &self.paths.image_lock(name),
            &format!("image {name}"),
            lock::DEFAULT_TIMEOUT,
            &say_waiting,
        )?)
    }

    /// Locks bridge and NAT table setup.
    pub fn lock_net(&self) -> Result<LockGuard> {
        lock_net(&self.paths)
    }

    pub fn dns_name(&self, vm: &Vm) -> String {
        format!("{}.{}", vm.name, self.config.domain)
    }
}

fn lock_net(paths: &Paths) -> Result<LockGuard> {
    Ok(lock::acquire(
        &paths.net_lock(),
        "network setup",
        lock::DEFAULT_TIMEOUT,
        &say_waiting,
    )?)
}

fn say_waiting(resource: &str, path: &Path) {
    eprintln!("waiting for lock on {resource} ({})", path.display());
}

/// Stage durations for `--timings`. `overlapped` stages ran beside others
/// and do not count towards the total.
#[derive(Debug, Default, Clone)]
pub struct Timings(
    pub Vec<(&'static str, Duration)>,
    pub Vec<(&'static str, Duration)>,
);

impl Timings {
    pub fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let result = f();
        self.0.push((stage, start.elapsed()));
        crate::fault::point(stage);
        result
    }

    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }
}

/// A VM as observed on the host right now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
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

/// Looks at the host without changing anything: is this VM's VMM alive?
pub fn observe(paths: &Paths, vm: &Vm) -> Observed {
    let handles = Handles::load_or_default(&paths.vm_dir(&vm.id));
    let pid = find_vmm(paths, vm, handles.pid);
    Observed { pid, handles }
}

/// The VM's VMM process: the recorded pid if it still serves this VM's API
/// socket, else one found by scanning /proc for that socket. Without a
/// recorded pid or a socket directory no VMM can be serving it, so the scan
/// (about a millisecond) is skipped: `vm ls` stays fast with many stopped VMs.
fn find_vmm(paths: &Paths, vm: &Vm, hint: Option<u32>) -> Option<u32> {
    if hint.is_none() && !paths.vm_run_dir(&vm.id).exists() {
        return None;
    }
    procs::vmm_pid(hint, &paths.api_sock(&vm.id))
}

/// Reconciles one VM (caller holds its lock): if its VMM is gone, tears down
/// whatever its handles (or the host) show and records it as stopped.
///
/// Holding the lock means no command is midway through this VM, so an
/// intent still recorded ([`record_intent`]) names a command that died. A
/// start that died may have left a VMM it never configured: that VMM is
/// killed, the runtime torn down, and the start's message kept. A stop that
/// died left the desired state `stopped` and its message; a VMM still alive
/// is left running (its guest may be shutting down) for `vm stop` to finish.
pub fn reconcile(ctx: &Ctx, vm: &mut Vm) -> Result<Observed> {
    let vm_dir = ctx.paths.vm_dir(&vm.id);
    let (mut handles, trustworthy) = match Handles::load(&vm_dir) {
        Loaded::Found(handles) => (handles, true),
        Loaded::Missing => (Handles::default(), false),
        Loaded::Corrupt(_) => (Handles::default(), false),
    };
    let api_sock = ctx.paths.api_sock(&vm.id);
    let pid = find_vmm(&ctx.paths, vm, handles.pid);
    let start_interrupted = vm.desired == VmState::Running && vm.last_error.is_some();
    match pid {
        Some(pid) if !start_interrupted => {
            if handles.pid != Some(pid) || !trustworthy {
                handles.pid = Some(pid);
                handles.tap.get_or_insert_with(|| tap_name(vm));
                handles.nat |= vm.nat;
                handles.save(&vm_dir)?;
            }
            return Ok(Observed {
                pid: Some(pid),
                handles,
            });
        }
        Some(pid) => {
            process::stop_vmm(&api::ApiClient::new(&api_sock), pid, Duration::ZERO, true)?;
        }
        None => {}
    }
    let leftovers = pid.is_some()
        || !handles.is_empty()
        || !trustworthy && ctx.paths.vm_run_dir(&vm.id).exists();
    if leftovers {
        teardown(ctx, vm, &handles)?;
    }
    if vm.desired == VmState::Running {
        let message = vm.last_error.clone().unwrap_or_else(|| {
            format!(
                "the VMM exited unexpectedly; see `banger vm logs {} --vmm`",
                vm.name
            )
        });
        set_state(ctx, vm, VmState::Stopped, Some(message))?;
    }
    Ok(Observed::default())
}

/// Records a VM's desired state and last error, in its row and in `vm`.
fn set_state(ctx: &Ctx, vm: &mut Vm, desired: VmState, last_error: Option<String>) -> Result<()> {
    ctx.store
        .set_state(&vm.id, desired, last_error.as_deref())?;
    vm.desired = desired;
    vm.last_error = last_error;
    Ok(())
}

/// Records what a command is about to do to a VM: the state it wants, and
/// as `last_error` what to say should the command die midway. A start or
/// stop that finishes clears the error; [`reconcile`] reads one that remains.
fn record_intent(ctx: &Ctx, vm: &mut Vm, desired: VmState, interrupted: String) -> Result<()> {
    set_state(ctx, vm, desired, Some(interrupted))
}

/// Records the intent to start this VM (see [`record_intent`]).
pub fn record_start_intent(ctx: &Ctx, vm: &mut Vm) -> Result<()> {
    let message = format!(
        "its start was interrupted; `banger vm start {0}` starts it again",
        vm.name
    );
    record_intent(ctx, vm, VmState::Running, message)
}

/// Re-reads a VM's row once its lock is held; false when the VM was deleted
/// since it was read.
pub fn refresh(ctx: &Ctx, vm: &mut Vm) -> Result<bool> {
    match ctx.store.vm_by_id(&vm.id)? {
        Some(fresh) => {
            *vm = fresh;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Reconciles a VM if no other command holds it; otherwise only observes.
/// `None` when the VM was deleted since it was read.
pub fn reconcile_if_free(ctx: &Ctx, vm: &mut Vm) -> Result<Option<Observed>> {
    match lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? {
        Some(_guard) if !refresh(ctx, vm)? => Ok(None),
        Some(_guard) => reconcile(ctx, vm).map(Some),
        None => Ok(Some(observe(&ctx.paths, vm))),
    }
}

pub fn tap_name(vm: &Vm) -> String {
    format!("{TAP_PREFIX}{}", vm.id)
}

pub fn dm_name(vm: &Vm) -> String {
    format!("{DM_PREFIX}{}", vm.id)
}

/// The image's files.
pub struct ImageFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub work_seed: PathBuf,
}

impl ImageFiles {
    pub fn of(paths: &Paths, image: &Image) -> Self {
        let dir = paths.image_dir(&image.name);
        Self {
            kernel: dir.join("vmlinux"),
            initrd: image.has_initrd.then(|| dir.join("initrd.img")),
            rootfs: dir.join("rootfs.ext4"),
            work_seed: dir.join("work-seed.ext4"),
        }
    }
}

/// Per-VM durable files.
pub struct VmFiles {
    pub dir: PathBuf,
    /// Sparse COW store (dm-snapshot).
    pub cow: PathBuf,
    /// Full root disk clone (reflink or copy).
    pub root: PathBuf,
    pub work: PathBuf,
    pub console_log: PathBuf,
    pub vmm_log: PathBuf,
    pub metrics: PathBuf,
}

impl VmFiles {
    pub fn of(paths: &Paths, vm: &Vm) -> Self {
        let dir = paths.vm_dir(&vm.id);
        Self {
            cow: dir.join("root.cow"),
            root: dir.join("root.ext4"),
            work: dir.join("work.ext4"),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("firecracker.log"),
            metrics: dir.join("metrics.json"),
            dir,
        }
    }
}

/// Makes the VM's root and work disks (once, at create). The image's files
/// are only read. Returns the COW strategy used.
pub fn prepare_disks(ctx: &Ctx, vm: &Vm, image: &ImageFiles) -> Result<cow::CowStrategy> {
    let files = VmFiles::of(&ctx.paths, vm);
    crate::state::paths::ensure_private_dir(&files.dir)?;
    let strategy = if dm::available() {
        let cow_file = std::fs::File::create(&files.cow)
            .with_context(|| format!("cannot create {}", files.cow.display()))?;
        cow_file
            .set_len(vm.disk_size)
            .with_context(|| format!("cannot size {}", files.cow.display()))?;
        cow::CowStrategy::DmSnapshot
    } else {
        let rootfs_size = file_size(&image.rootfs)?;
        let strategy = cow::clone_file(&image.rootfs, &files.root, rootfs_size)?;
        if vm.disk_size > rootfs_size {
            ext4::grow(&files.root, vm.disk_size)?;
        }
        strategy
    };
    let seed_size = file_size(&image.work_seed)?;
    cow::clone_file(&image.work_seed, &files.work, seed_size)?;
    ext4::grow(&files.work, vm.work_size.max(seed_size))?;
    let public_key = ssh::ensure_key(&ctx.paths.ssh_key())?;
    ext4::write_file(
        &files.work,
        "/.ssh/authorized_keys",
        format!("{public_key}\n").as_bytes(),
        0o600,
    )?;
    ctx.store.finish_creating(&vm.id, strategy.as_str())?;
    Ok(strategy)
}

pub fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len())
}

/// Kernel command line for a VM.
pub fn boot_args(vm: &Vm, config: &Config) -> String {
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

/// Starts a stopped VM's runtime: root disk device, TAP, VMM, NAT, sidecar.
/// On failure everything done is torn down, the VM stays stopped with
/// `last_error` set, and the error is returned.
pub fn start(ctx: &Ctx, vm: &mut Vm, timings: &mut Timings) -> Result<u32> {
    // Intent first: if banger dies midway, reconcile stops the VMM it may
    // have left, tears down what the handles name and says so.
    record_start_intent(ctx, vm)?;
    let mut handles = Handles {
        cow_strategy: vm.cow_strategy.clone(),
        ..Handles::default()
    };
    let result = start_inner(ctx, vm, &mut handles, timings);
    match result {
        Ok(pid) => {
            set_state(ctx, vm, VmState::Running, None)?;
            Ok(pid)
        }
        Err(err) => {
            if let Some(pid) = handles.pid {
                procs::signal(pid, nix::sys::signal::Signal::SIGKILL).ok();
                procs::wait_exit(pid, Duration::from_secs(5));
            }
            let teardown_result = teardown(ctx, vm, &handles);
            let message = format!("{err:#}");
            set_state(ctx, vm, VmState::Stopped, Some(message))?;
            teardown_result.context("cleaning up after a failed start")?;
            Err(err)
        }
    }
}

fn start_inner(ctx: &Ctx, vm: &Vm, handles: &mut Handles, timings: &mut Timings) -> Result<u32> {
    let image = ctx.store.image(&vm.image)?;
    let image_files = ImageFiles::of(&ctx.paths, &image);
    let files = VmFiles::of(&ctx.paths, vm);
    let vm_dir = &files.dir;
    let root_disk = timings.time("root disk", || {
        root_device(vm, &image_files, &files, handles)
    })?;

    timings.time("tap", || {
        {
            let _net = ctx.lock_net()?;
            net::bridge::ensure_bridge(
                &ctx.config.bridge,
                ctx.config.subnet.gateway(),
                ctx.config.subnet.prefix_len,
            )?;
        }
        let tap = tap_name(vm);
        handles.tap = Some(tap.clone());
        handles.save(vm_dir)?;
        if !net::tap::claim_pool_tap(POOL_PREFIX, &tap)? {
            net::tap::create_tap(&tap, &ctx.config.bridge)?;
        }
        Ok(())
    })?;

    let binary = process::find_binary(ctx.config.firecracker.as_deref())?;
    let api_sock = ctx.paths.api_sock(&vm.id);
    crate::state::paths::ensure_private_dir(&ctx.paths.vm_run_dir(&vm.id))?;
    let pid = timings.time("spawn", || {
        let pid = process::spawn(&binary, &api_sock, &vm.id, &files.console_log)?;
        handles.pid = Some(pid);
        handles.save(vm_dir)?;
        process::wait_for_socket(&api_sock, pid, Duration::from_secs(5))?;
        Ok(pid)
    })?;

    // Firewall rules do not depend on the VMM: add them while it is
    // configured. A VM with NAT gets its rules and the host fence in one
    // transaction; one without gets the host fence alone.
    if vm.nat {
        handles.nat = true;
        handles.save(vm_dir)?;
    }
    let (configured, nat) = std::thread::scope(|scope| {
        let (paths, bridge) = (&ctx.paths, &ctx.config.bridge);
        let nat = scope.spawn(move || {
            let started = Instant::now();
            let result = lock_net(paths).and_then(|_net| {
                if vm.nat {
                    net::nat::add_vm_rules(&vm.id, vm.ip, bridge)?;
                } else {
                    net::nat::ensure_host_fence(bridge)?;
                }
                Ok(())
            });
            (result, started.elapsed())
        });
        let configured = timings.time("configure", || {
            let config = api::VmmConfig {
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                kernel: image_files.kernel.clone(),
                initrd: image_files.initrd.clone(),
                boot_args: boot_args(vm, &ctx.config),
                rootfs: root_disk.clone(),
                work_disk: files.work.clone(),
                tap: tap_name(vm),
                mac: vm.mac.clone(),
                vsock_cid: vm.cid,
                vsock_uds: ctx.paths.vsock_uds(&vm.id),
                log_path: files.vmm_log.clone(),
                metrics_path: files.metrics.clone(),
            };
            api::configure_and_start(&api::ApiClient::new(&api_sock), &config)
                .with_context(|| format!("the VMM refused the configuration of VM {}", vm.name))
        });
        let nat = nat.join().unwrap_or_else(|_| {
            (
                Err(anyhow::anyhow!("the firewall setup thread panicked")),
                Duration::ZERO,
            )
        });
        (configured, nat)
    });
    configured?;
    let (result, elapsed) = nat;
    timings.1.push(("firewall", elapsed));
    result.context("cannot add the VM's firewall rules")?;
    timings.time("sidecar", || crate::commands::sidecar::ensure_running(ctx))?;
    Ok(pid)
}

/// Brings up the root disk device for this start and returns its path.
fn root_device(
    vm: &Vm,
    image: &ImageFiles,
    files: &VmFiles,
    handles: &mut Handles,
) -> Result<PathBuf> {
    if vm.cow_strategy.as_deref() != Some(cow::CowStrategy::DmSnapshot.as_str()) {
        return Ok(files.root.clone());
    }
    if !dm::available() {
        bail!(
            "VM {} keeps its root disk as a device-mapper snapshot, but device-mapper is not available on this host",
            vm.name
        );
    }
    let base = loopdev::attach(&image.rootfs, true)?;
    handles.base_loop = Some(base.clone());
    handles.save(&files.dir)?;
    let cow_dev = loopdev::attach(&files.cow, false)?;
    handles.cow_loop = Some(cow_dev.clone());
    let name = dm_name(vm);
    handles.dm_name = Some(name.clone());
    handles.save(&files.dir)?;
    let dev = dm::create_snapshot(&name, &base, &cow_dev, vm.disk_size)?;
    handles.dm_dev = Some(dev.clone());
    handles.save(&files.dir)?;
    Ok(dev)
}

/// Releases a stopped VM's runtime: NAT rules, TAP, dm device, loop devices,
/// sockets, then `handles.json`. Tolerates each being already gone, and
/// also looks for resources by their deterministic names when handles are lost.
pub fn teardown(ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
    let mut errors = Vec::new();
    let mut note = |what: &str, result: Result<()>| {
        if let Err(e) = result {
            errors.push(format!("{what}: {e:#}"));
        }
    };
    if handles.nat || vm.nat {
        note(
            "NAT rules",
            net::nat::remove_vm_rules(&vm.id).map_err(Into::into),
        );
    }
    let tap = handles.tap.clone().unwrap_or_else(|| tap_name(vm));
    note("TAP", release_tap(ctx, &tap));
    if handles.dm_name.is_some()
        || vm.cow_strategy.as_deref() == Some(cow::CowStrategy::DmSnapshot.as_str())
    {
        note("dm device", dm::remove(&dm_name(vm)).map_err(Into::into));
    }
    let files = VmFiles::of(&ctx.paths, vm);
    let mut loops: Vec<PathBuf> = handles
        .cow_loop
        .iter()
        .chain(handles.base_loop.iter())
        .cloned()
        .collect();
    if files.cow.exists() {
        loops.extend(loopdev::find_by_backing(&files.cow).unwrap_or_default());
    }
    loops.dedup();
    for dev in loops {
        note("loop device", loopdev::detach(&dev).map_err(Into::into));
    }
    note(
        "sockets",
        remove_dir_if_present(&ctx.paths.vm_run_dir(&vm.id)),
    );
    if !errors.is_empty() {
        bail!(
            "could not release everything of VM {}: {}; `banger gc` retries",
            vm.name,
            errors.join("; ")
        );
    }
    Handles::remove(&files.dir)?;
    Ok(())
}

/// A VM's TAP goes back to the sidecar's pool while it runs, else is deleted.
fn release_tap(ctx: &Ctx, tap: &str) -> Result<()> {
    if !net::bridge::link_exists(tap)? {
        return Ok(());
    }
    let pool_size = if crate::sidecar::is_alive(&ctx.paths.sidecar_lock()) {
        ctx.config.tap_pool_size
    } else {
        0
    };
    net::tap::return_to_pool(tap, POOL_PREFIX, pool_size)?;
    Ok(())
}

pub fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// How a stop ended.
pub use process::StopOutcome;

/// Stops a running VM (caller holds its lock and has reconciled it).
pub fn stop(
    ctx: &Ctx,
    vm: &mut Vm,
    observed: &Observed,
    timeout: Duration,
    force: bool,
) -> Result<StopOutcome> {
    let interrupted = format!(
        "stopping VM {0} did not finish; `banger vm stop {0}` finishes it",
        vm.name
    );
    record_intent(ctx, vm, VmState::Stopped, interrupted)?;
    let outcome = match observed.pid {
        Some(pid) => {
            let client = api::ApiClient::new(&ctx.paths.api_sock(&vm.id));
            process::stop_vmm(&client, pid, timeout, force)?
        }
        None => StopOutcome::AlreadyGone,
    };
    crate::fault::point("stop:vmm");
    teardown(ctx, vm, &observed.handles)?;
    crate::fault::point("stop:teardown");
    set_state(ctx, vm, VmState::Stopped, None)?;
    Ok(outcome)
}

/// Removes a stopped VM's files, pinned host keys and row.
pub fn remove(ctx: &Ctx, vm: &Vm) -> Result<()> {
    remove_dir_if_present(&ctx.paths.vm_dir(&vm.id))?;
    remove_dir_if_present(&ctx.paths.vm_run_dir(&vm.id))?;
    crate::fault::point("delete:files");
    ssh::forget_hosts(
        &ctx.paths.known_hosts(),
        &[vm.ip.to_string(), ctx.dns_name(vm)],
    )?;
    ctx.store.delete_vm(&vm.id)?;
    Ok(())
}
