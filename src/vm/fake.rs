//! A recording fake of the host for the lifecycle's unit tests: a small
//! model of the machine (links, rules, loop and dm devices, VMM processes,
//! the sidecar) that every call is logged against, with one operation that
//! can be made to fail. Disk files are real files in the test's temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Result, anyhow};

use super::Ctx;
use super::host::{Disks, Fence, Host, Network, Sidecar, Spawned, StopOutcome, Vmm, VmmConfig};
use crate::state::config::Config;
use crate::state::model::{CowStrategy, FileId, Image, PublishedPort, VmmKind};
use crate::state::paths::Paths;
use crate::state::store::Store;

/// The executable every fake VMM runs; a VMM recorded as running another
/// one is not found.
pub const FAKE_VMM_EXE: FileId = FileId { dev: 0, ino: 1 };

/// The fake machine's state.
#[derive(Debug, Default)]
pub struct World {
    /// Every call, in order, as `name` or `name arg`.
    pub calls: Vec<String>,
    /// The operation that fails (its name as logged, without arguments).
    pub fail: Option<&'static str>,
    pub dm: bool,
    /// Strategy `clone_file` reports when dm is off.
    pub clone_strategy: Option<CowStrategy>,
    /// Whether the filesystem shares extents (`reflink` clones).
    pub reflink: bool,
    /// Loop device → backing file.
    pub loops: BTreeMap<PathBuf, PathBuf>,
    pub snapshots: BTreeSet<String>,
    /// Files attached read-only and snapshots made read-only.
    pub read_only: BTreeSet<PathBuf>,
    pub bridges: BTreeSet<String>,
    pub links: BTreeSet<String>,
    /// VM ids with rules.
    pub rules: BTreeSet<String>,
    pub fence: bool,
    /// VM id → the ports its rules publish.
    pub ports: BTreeMap<String, Vec<PublishedPort>>,
    /// Sockets other programs hold on the host.
    pub in_use: Vec<PublishedPort>,
    /// VMM pid → its API socket.
    pub vmms: BTreeMap<u32, PathBuf>,
    /// VMMs that were configured and started.
    pub configured: BTreeSet<u32>,
    /// The configuration of the last VMM started.
    pub last_config: Option<VmmConfig>,
    pub sidecar_alive: bool,
    /// VMM kinds whose binary is missing.
    pub missing_vmms: BTreeSet<VmmKind>,
    /// Why `/dev/kvm` cannot be used, if it cannot.
    pub kvm_broken: Option<String>,
    /// The host kernel the fake reports.
    pub kernel: String,
    next: u32,
}

impl World {
    /// True when the machine holds nothing of any VM.
    pub fn is_clean(&self) -> bool {
        self.loops.is_empty()
            && self.snapshots.is_empty()
            && self.links.iter().all(|l| l.starts_with("bgpool"))
            && self.rules.is_empty()
            && self.ports.is_empty()
            && self.vmms.is_empty()
    }

    fn next_id(&mut self) -> u32 {
        self.next += 1;
        self.next + 1000
    }
}

/// The world shared by the fake's parts and the test.
#[derive(Debug, Clone, Default)]
pub struct Fake(Arc<Mutex<World>>);

impl Fake {
    pub fn world(&self) -> MutexGuard<'_, World> {
        match self.0.lock() {
            Ok(world) => world,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Logs a call and fails it if it is the one set to fail.
    fn call(
        &self,
        name: &'static str,
        arg: impl std::fmt::Display,
    ) -> Result<MutexGuard<'_, World>> {
        let mut world = self.world();
        let arg = arg.to_string();
        world.calls.push(if arg.is_empty() {
            name.to_owned()
        } else {
            format!("{name} {arg}")
        });
        if world.fail == Some(name) {
            return Err(anyhow!("injected failure in {name}"));
        }
        Ok(world)
    }

    pub fn host(&self) -> Host {
        Host {
            disks: Box::new(self.clone()),
            net: Box::new(self.clone()),
            vmm: Box::new(self.clone()),
            sidecar: Box::new(self.clone()),
        }
    }
}

impl Disks for Fake {
    fn dm_available(&self) -> bool {
        self.world().dm
    }
    fn clone_file(&self, src: &Path, dst: &Path, size: u64) -> Result<CowStrategy> {
        let world = self.call("clone_file", dst.display())?;
        std::fs::copy(src, dst)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dst)?
            .set_len(size)?;
        Ok(world.clone_strategy.unwrap_or(CowStrategy::Copy))
    }
    fn reflink(&self, src: &Path, dst: &Path, size: u64) -> Result<bool> {
        let world = self.call("reflink", dst.display())?;
        if !world.reflink {
            return Ok(false);
        }
        std::fs::copy(src, dst)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dst)?
            .set_len(size)?;
        Ok(true)
    }
    fn grow_ext4(&self, image: &Path, size: u64) -> Result<()> {
        drop(self.call("grow_ext4", image.display())?);
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)?
            .set_len(size)?;
        Ok(())
    }
    fn write_ext4_file(&self, image: &Path, guest_path: &str, _: &[u8], _: u32) -> Result<()> {
        drop(self.call(
            "write_ext4_file",
            format!("{} {guest_path}", image.display()),
        )?);
        Ok(())
    }
    fn attach_loop(&self, file: &Path, read_only: bool) -> Result<PathBuf> {
        let mut world = self.call("attach_loop", file.display())?;
        let dev = PathBuf::from(format!("/dev/loop{}", world.next_id()));
        if read_only {
            world.read_only.insert(file.to_owned());
        }
        world.loops.insert(dev.clone(), file.to_owned());
        Ok(dev)
    }
    fn detach_loop(&self, dev: &Path) -> Result<()> {
        let mut world = self.call("detach_loop", dev.display())?;
        world.loops.remove(dev);
        Ok(())
    }
    fn loops_backed_by(&self, file: &Path) -> Result<Vec<PathBuf>> {
        let world = self.call("loops_backed_by", file.display())?;
        Ok(world
            .loops
            .iter()
            .filter(|(_, backing)| backing.as_path() == file)
            .map(|(dev, _)| dev.clone())
            .collect())
    }
    fn create_snapshot(
        &self,
        name: &str,
        _: &Path,
        _: &Path,
        _: u64,
        read_only: bool,
    ) -> Result<PathBuf> {
        let mut world = self.call("create_snapshot", name)?;
        if read_only {
            world.read_only.insert(PathBuf::from(name));
        }
        world.snapshots.insert(name.to_owned());
        world.snapshots.insert(format!("{name}-base"));
        Ok(PathBuf::from(format!("/dev/mapper/{name}")))
    }
    fn remove_snapshot(&self, name: &str) -> Result<()> {
        let mut world = self.call("remove_snapshot", name)?;
        world.snapshots.remove(name);
        world.snapshots.remove(&format!("{name}-base"));
        Ok(())
    }
    fn list_snapshots(&self) -> Result<Vec<String>> {
        Ok(self
            .call("list_snapshots", "")?
            .snapshots
            .iter()
            .cloned()
            .collect())
    }
    fn list_loops(&self) -> Result<Vec<(PathBuf, PathBuf)>> {
        Ok(self
            .call("list_loops", "")?
            .loops
            .iter()
            .map(|(d, b)| (d.clone(), b.clone()))
            .collect())
    }
    /// Writes `size` bytes of the device's fill byte: a device the fake
    /// made holds nothing, so what the copy read is plain to see.
    fn copy_device(&self, dev: &Path, dst: &Path, size: u64) -> Result<()> {
        let world = self.call("copy_device", dev.display())?;
        if !world.snapshots.iter().any(|s| dev.ends_with(s)) {
            return Err(anyhow!("no device {}", dev.display()));
        }
        std::fs::write(dst, b"snapshot")?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dst)?
            .set_len(size)?;
        Ok(())
    }
    fn merge_overlay(&self, lower: &Path, _: &Path, out: &Path, at_least: u64) -> Result<()> {
        drop(self.call("merge_overlay", out.display())?);
        std::fs::copy(lower, out)?;
        let file = std::fs::OpenOptions::new().write(true).open(out)?;
        if file.metadata()?.len() < at_least {
            file.set_len(at_least)?;
        }
        Ok(())
    }
    fn check_ext4(&self, image: &Path) -> Result<()> {
        drop(self.call("check_ext4", image.display())?);
        Ok(())
    }
    fn scrub_for_image(&self, image: &Path) -> Result<()> {
        drop(self.call("scrub_for_image", image.display())?);
        Ok(())
    }
    fn shrink_ext4(&self, image: &Path) -> Result<u64> {
        drop(self.call("shrink_ext4", image.display())?);
        let file = std::fs::OpenOptions::new().write(true).open(image)?;
        file.set_len(1 << 16)?;
        Ok(1 << 16)
    }
    fn remove_authorized_key(&self, image: &Path, guest_path: &str, _: &str) -> Result<()> {
        drop(self.call(
            "remove_authorized_key",
            format!("{} {guest_path}", image.display()),
        )?);
        Ok(())
    }
}

impl Network for Fake {
    fn ensure_bridge(&self, bridge: &str, _: Ipv4Addr, _: u8) -> Result<()> {
        self.call("ensure_bridge", bridge)?
            .bridges
            .insert(bridge.to_owned());
        Ok(())
    }
    fn link_exists(&self, name: &str) -> Result<bool> {
        Ok(self.call("link_exists", name)?.links.contains(name))
    }
    fn claim_pool_tap(&self, tap: &str) -> Result<bool> {
        let mut world = self.call("claim_pool_tap", tap)?;
        let Some(pooled) = world
            .links
            .iter()
            .find(|l| l.starts_with("bgpool"))
            .cloned()
        else {
            return Ok(false);
        };
        world.links.remove(&pooled);
        world.links.insert(tap.to_owned());
        Ok(true)
    }
    fn create_tap(&self, tap: &str, _: &str) -> Result<()> {
        self.call("create_tap", tap)?.links.insert(tap.to_owned());
        Ok(())
    }
    fn return_tap(&self, tap: &str, pool_size: usize) -> Result<()> {
        let mut world = self.call("return_tap", tap)?;
        world.links.remove(tap);
        let pooled = world
            .links
            .iter()
            .filter(|l| l.starts_with("bgpool"))
            .count();
        if pooled < pool_size {
            world.links.insert(format!("bgpool{pooled}"));
        }
        Ok(())
    }
    fn add_vm_rules(&self, key: &str, _: Ipv4Addr, _: &Fence) -> Result<()> {
        let mut world = self.call("add_vm_rules", key)?;
        world.rules.insert(key.to_owned());
        world.fence = true;
        Ok(())
    }
    fn ensure_host_fence(&self, fence: &Fence) -> Result<()> {
        self.call("ensure_host_fence", &fence.bridge)?.fence = true;
        Ok(())
    }
    /// Like the real one, removes every rule tagged with the VM's id,
    /// its published ports included.
    fn remove_vm_rules(&self, id: &str) -> Result<()> {
        let mut world = self.call("remove_vm_rules", id)?;
        world.rules.remove(id);
        world.ports.remove(id);
        Ok(())
    }
    fn check_port_free(&self, port: &PublishedPort) -> Result<()> {
        let world = self.call("check_port_free", port)?;
        if world.in_use.iter().any(|held| held.clashes_with(port)) {
            return Err(anyhow!("host port {} is already in use", port.host_port));
        }
        Ok(())
    }
    fn add_port_rules(
        &self,
        id: &str,
        _: Ipv4Addr,
        _: &str,
        ports: &[PublishedPort],
    ) -> Result<()> {
        self.call("add_port_rules", id)?
            .ports
            .insert(id.to_owned(), ports.to_vec());
        Ok(())
    }
    fn remove_port_rules(&self, id: &str) -> Result<()> {
        self.call("remove_port_rules", id)?.ports.remove(id);
        Ok(())
    }
    fn vms_with_rules(&self) -> Result<Vec<String>> {
        let world = self.call("vms_with_rules", "")?;
        let ids: BTreeSet<String> = world
            .rules
            .iter()
            .chain(world.ports.keys())
            .cloned()
            .collect();
        Ok(ids.into_iter().collect())
    }
    fn list_links(&self) -> Result<Vec<String>> {
        Ok(self.call("list_links", "")?.links.iter().cloned().collect())
    }
    fn delete_link(&self, name: &str) -> Result<()> {
        self.call("delete_link", name)?.links.remove(name);
        Ok(())
    }
}

impl Vmm for Fake {
    fn binary(&self, kind: VmmKind) -> Result<PathBuf> {
        let world = self.call("binary", kind)?;
        if world.missing_vmms.contains(&kind) {
            return Err(anyhow!("{kind} not found"));
        }
        Ok(PathBuf::from(format!("/usr/bin/fake-{kind}")))
    }
    fn kvm_usable(&self) -> Result<(), String> {
        match &self.world().kvm_broken {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
    fn host_kernel(&self) -> String {
        self.world().kernel.clone()
    }
    fn spawn(&self, _: &Path, api_sock: &Path, id: &str, _: &Path) -> Result<Spawned> {
        let mut world = self.call("spawn", id)?;
        let pid = world.next_id();
        world.vmms.insert(pid, api_sock.to_owned());
        Ok(Spawned {
            pid,
            exe: Some(FAKE_VMM_EXE),
        })
    }
    fn wait_for_socket(&self, _: &Path, pid: u32, _: Duration) -> Result<()> {
        drop(self.call("wait_for_socket", pid)?);
        Ok(())
    }
    fn configure_and_start(&self, api_sock: &Path, config: &VmmConfig) -> Result<()> {
        let mut world = self.call("configure_and_start", api_sock.display())?;
        world.last_config = Some(config.clone());
        let pid = world
            .vmms
            .iter()
            .find(|(_, sock)| sock.as_path() == api_sock)
            .map(|(pid, _)| *pid)
            .ok_or_else(|| anyhow!("no VMM serves {}", api_sock.display()))?;
        world.configured.insert(pid);
        Ok(())
    }
    fn stop(&self, _: &Path, pid: u32, _: Duration, force: bool) -> Result<StopOutcome> {
        let mut world = self.call("stop", pid)?;
        if world.vmms.remove(&pid).is_none() {
            return Ok(StopOutcome::AlreadyGone);
        }
        Ok(if force {
            StopOutcome::Kill
        } else {
            StopOutcome::CtrlAltDel
        })
    }
    fn find(&self, hint: Option<u32>, exe: Option<FileId>, api_sock: &Path) -> Option<u32> {
        if exe.is_some_and(|exe| exe != FAKE_VMM_EXE) {
            return None;
        }
        let world = self.world();
        if let Some(pid) = hint
            && world
                .vmms
                .get(&pid)
                .is_some_and(|s| s.as_path() == api_sock)
        {
            return Some(pid);
        }
        world
            .vmms
            .iter()
            .find(|(_, sock)| sock.as_path() == api_sock)
            .map(|(pid, _)| *pid)
    }
    fn kill(&self, pid: u32) {
        let mut world = self.world();
        world.calls.push(format!("kill {pid}"));
        world.vmms.remove(&pid);
    }
    fn list(&self, run_dirs: &Path, _: &[FileId]) -> Vec<(u32, PathBuf)> {
        self.world()
            .vmms
            .iter()
            .filter(|(_, sock)| sock.starts_with(run_dirs))
            .map(|(pid, sock)| (*pid, sock.clone()))
            .collect()
    }
}

impl Sidecar for Fake {
    fn is_alive(&self) -> bool {
        self.world().sidecar_alive
    }
    fn ensure_running(&self) -> Result<()> {
        self.call("ensure_sidecar", "")?.sidecar_alive = true;
        Ok(())
    }
}

/// A `Ctx` in a temp dir over the fake host, with an image `base` whose
/// files are small plain files.
pub struct TestBed {
    pub ctx: Ctx,
    pub fake: Fake,
    pub dir: tempfile::TempDir,
}

impl TestBed {
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::new(dir.path().join("home"), dir.path().join("run"));
        paths.ensure()?;
        let store = Store::open(&paths.db())?;
        let image_dir = paths.image_dir("base");
        std::fs::create_dir_all(&image_dir)?;
        for (file, size) in [
            ("vmlinux", 64),
            ("rootfs.ext4", 1 << 20),
            ("work-seed.ext4", 1 << 16),
        ] {
            std::fs::File::create(image_dir.join(file))?.set_len(size)?;
        }
        store.insert_image(&Image {
            name: "base".into(),
            source: "import".into(),
            has_initrd: false,
            is_default: true,
            created_at: 0,
            committed_from: None,
        })?;
        let fake = Fake::default();
        let config = Config::default();
        let ctx = Ctx {
            paths,
            store: store.with_subnet(config.subnet),
            config,
            host: fake.host(),
            verbose: false,
        };
        Ok(Self { ctx, fake, dir })
    }

    /// Gives image `base` an initrd that is banger's initramfs (as far as
    /// its first entry says).
    pub fn boot_banger_initramfs(&self) -> Result<()> {
        let mut cpio = crate::host::image::cpio::CpioWriter::new(Vec::new());
        cpio.file(crate::host::image::MARKER, 0o644, b"")?;
        let initrd = self
            .ctx
            .paths
            .image_dir("base")
            .join(crate::host::image::INITRD);
        std::fs::write(initrd, cpio.finish()?)?;
        self.ctx.store.delete_image("base")?;
        self.ctx.store.insert_image(&Image {
            name: "base".into(),
            source: "build".into(),
            has_initrd: true,
            is_default: true,
            created_at: 0,
            committed_from: None,
        })?;
        Ok(())
    }
}
