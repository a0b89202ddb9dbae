//! The seam between the VM lifecycle and the machine: three narrow traits
//! (disks, network, VMM processes) with the real implementation over
//! `crate::host`, picked once in [`Host::real`]. Unit tests swap in the
//! recording fake of `vm::fake`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::host::disk::{cow, dm, ext4, loopdev, overlay};
use crate::host::firecracker::{api, process};
use crate::host::{net, procs};
use crate::state::model::{CowStrategy, FileId, PublishedPort, VmmKind};

pub use crate::host::firecracker::api::VmmConfig;
pub use crate::host::firecracker::process::StopOutcome;
pub use crate::host::net::nat::Fence;

/// Disk images, loop devices and device-mapper.
pub trait Disks: Send + Sync {
    /// Whether device-mapper snapshots can be made on this host.
    fn dm_available(&self) -> bool;
    /// A copy-on-write clone of `src` at `dst` (reflink, else sparse copy),
    /// `size` bytes long; says which it did.
    fn clone_file(&self, src: &Path, dst: &Path, size: u64) -> Result<CowStrategy>;
    /// A reflink clone of `src` at `dst`, `size` bytes long; `false` (and
    /// nothing made) when the filesystem cannot share extents.
    fn reflink(&self, src: &Path, dst: &Path, size: u64) -> Result<bool>;
    /// Grows an ext4 image file and its filesystem to `size` bytes.
    fn grow_ext4(&self, image: &Path, size: u64) -> Result<()>;
    /// Writes one file into an ext4 image without mounting it.
    fn write_ext4_file(&self, image: &Path, guest_path: &str, data: &[u8], mode: u32)
    -> Result<()>;
    fn attach_loop(&self, file: &Path, read_only: bool) -> Result<PathBuf>;
    /// Detaches a loop device; already gone is fine.
    fn detach_loop(&self, dev: &Path) -> Result<()>;
    fn loops_backed_by(&self, file: &Path) -> Result<Vec<PathBuf>>;
    /// A snapshot `name` of `base` with `cow` as its store, `size` bytes;
    /// `read_only`: its tables loaded read-only, for reading it only.
    fn create_snapshot(
        &self,
        name: &str,
        base: &Path,
        cow: &Path,
        size: u64,
        read_only: bool,
    ) -> Result<PathBuf>;
    /// Removes a snapshot and its base device; already gone is fine.
    fn remove_snapshot(&self, name: &str) -> Result<()>;
    /// Names of device-mapper devices that may be banger's.
    fn list_snapshots(&self) -> Result<Vec<String>>;
    /// Every loop device with its backing file.
    fn list_loops(&self) -> Result<Vec<(PathBuf, PathBuf)>>;
    /// A sparse copy of the first `size` bytes of block device `dev` at `dst`.
    fn copy_device(&self, dev: &Path, dst: &Path, size: u64) -> Result<()>;
    /// The merged view of an overlay root (`upper`'s layer over the root
    /// filesystem `lower`) as a new ext4 image `out`, at least `at_least`
    /// bytes and more if its content needs it; neither input is written.
    fn merge_overlay(&self, lower: &Path, upper: &Path, out: &Path, at_least: u64) -> Result<()>;
    /// Checks an ext4 image and fixes it unattended, replaying its journal.
    fn check_ext4(&self, image: &Path) -> Result<()>;
    /// Makes the root filesystem `image` fit to be copied into other VMs
    /// (see [`ext4::scrub_for_image`]).
    fn scrub_for_image(&self, image: &Path) -> Result<()>;
    /// Shrinks an ext4 image and its filesystem to its content; the new size.
    fn shrink_ext4(&self, image: &Path) -> Result<u64>;
    /// Removes the lines carrying public key `key` from a file in an ext4 image.
    fn remove_authorized_key(&self, image: &Path, guest_path: &str, key: &str) -> Result<()>;
}

/// The bridge, TAP devices and nftables rules.
pub trait Network: Send + Sync {
    fn ensure_bridge(&self, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<()>;
    fn link_exists(&self, name: &str) -> Result<bool>;
    /// Renames an idle pool TAP to `tap`; false when the pool is empty.
    fn claim_pool_tap(&self, tap: &str) -> Result<bool>;
    fn create_tap(&self, tap: &str, bridge: &str) -> Result<()>;
    /// Gives a TAP back to the pool (up to `pool_size`), else deletes it.
    fn return_tap(&self, tap: &str, pool_size: usize) -> Result<()>;
    /// The NAT and forward rules of the VM whose rules `key` tags, and
    /// its bridge's fence, in one go.
    fn add_vm_rules(&self, key: &str, ip: Ipv4Addr, fence: &Fence) -> Result<()>;
    fn ensure_host_fence(&self, fence: &Fence) -> Result<()>;
    /// Removes the rules `key` tags; none left is fine.
    fn remove_vm_rules(&self, key: &str) -> Result<()>;
    /// Fails when something on the host already holds `port`'s socket.
    fn check_port_free(&self, port: &PublishedPort) -> Result<()>;
    /// The VM's published ports (replacing any it had), with loopback
    /// routing enabled on `bridge` so that `127.0.0.1` ports work.
    fn add_port_rules(
        &self,
        id: &str,
        ip: Ipv4Addr,
        bridge: &str,
        ports: &[PublishedPort],
    ) -> Result<()>;
    /// Removes the VM's published-port rules only; none left is fine.
    fn remove_port_rules(&self, id: &str) -> Result<()>;
    /// The keys tagging rules in banger's table.
    fn vms_with_rules(&self) -> Result<Vec<String>>;
    /// Network interfaces whose names may be banger's TAPs.
    fn list_links(&self) -> Result<Vec<String>>;
    fn delete_link(&self, name: &str) -> Result<()>;
}

/// VMM processes and their API.
pub trait Vmm: Send + Sync {
    /// The binary of the VMM `kind` (an error says what is missing).
    fn binary(&self, kind: VmmKind) -> Result<PathBuf>;
    /// Whether `/dev/kvm` can be used; the error says why not.
    fn kvm_usable(&self) -> Result<(), String>;
    /// The running host kernel (see [`crate::host::kvm::host_kernel`]).
    fn host_kernel(&self) -> String;
    /// Spawns the VMM detached, serving its API on `api_sock`.
    fn spawn(
        &self,
        binary: &Path,
        api_sock: &Path,
        id: &str,
        console_log: &Path,
    ) -> Result<Spawned>;
    fn wait_for_socket(&self, api_sock: &Path, pid: u32, timeout: Duration) -> Result<()>;
    fn configure_and_start(&self, api_sock: &Path, config: &VmmConfig) -> Result<()>;
    /// Ctrl-Alt-Del, then SIGTERM, then SIGKILL (`force`: SIGKILL at once).
    fn stop(
        &self,
        api_sock: &Path,
        pid: u32,
        timeout: Duration,
        force: bool,
    ) -> Result<StopOutcome>;
    /// The live VMM serving `api_sock`: `hint` if it still does, else one
    /// found among the host's processes. Only a process running `exe` (the
    /// executable recorded at spawn; without one, a configured VMM binary)
    /// as banger's user, holding the socket bound at `api_sock`, counts.
    fn find(&self, hint: Option<u32>, exe: Option<FileId>, api_sock: &Path) -> Option<u32>;
    /// SIGKILLs a process and waits briefly for it to go.
    fn kill(&self, pid: u32);
    /// Every VMM serving an API socket `<run_dirs>/<id>/api.sock`, with that
    /// socket: processes running a configured VMM binary or one of `exes`,
    /// as banger's user.
    fn list(&self, run_dirs: &Path, exes: &[FileId]) -> Vec<(u32, PathBuf)>;
}

/// A VMM just spawned: its pid and the executable the kernel runs it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub exe: Option<FileId>,
}

/// Whether the sidecar runs, and starting it.
pub trait Sidecar: Send + Sync {
    fn is_alive(&self) -> bool;
    fn ensure_running(&self) -> Result<()>;
}

/// The machine as the lifecycle sees it.
pub struct Host {
    pub disks: Box<dyn Disks>,
    pub net: Box<dyn Network>,
    pub vmm: Box<dyn Vmm>,
    pub sidecar: Box<dyn Sidecar>,
}

impl Host {
    /// The real machine. `firecracker` and `qemu_vmm` are the configured
    /// VMM binaries, if any; `tap_owner` marks this home's TAPs (see
    /// `layout::tap_owner`); `sidecar` starts and probes the sidecar.
    pub fn real(
        firecracker: Option<PathBuf>,
        qemu_vmm: Option<PathBuf>,
        tap_owner: String,
        sidecar: Box<dyn Sidecar>,
    ) -> Self {
        Self {
            disks: Box::new(RealDisks),
            net: Box::new(RealNetwork { tap_owner }),
            vmm: Box::new(RealVmm {
                firecracker,
                qemu_vmm,
            }),
            sidecar,
        }
    }
}

struct RealDisks;

impl Disks for RealDisks {
    fn dm_available(&self) -> bool {
        dm::available()
    }
    fn clone_file(&self, src: &Path, dst: &Path, size: u64) -> Result<CowStrategy> {
        Ok(cow::clone_file(src, dst, size)?)
    }
    fn reflink(&self, src: &Path, dst: &Path, size: u64) -> Result<bool> {
        Ok(cow::reflink(src, dst, size)?)
    }
    fn grow_ext4(&self, image: &Path, size: u64) -> Result<()> {
        Ok(ext4::grow(image, size)?)
    }
    fn write_ext4_file(
        &self,
        image: &Path,
        guest_path: &str,
        data: &[u8],
        mode: u32,
    ) -> Result<()> {
        Ok(ext4::write_file(image, guest_path, data, mode)?)
    }
    fn attach_loop(&self, file: &Path, read_only: bool) -> Result<PathBuf> {
        Ok(loopdev::attach(file, read_only)?)
    }
    fn detach_loop(&self, dev: &Path) -> Result<()> {
        Ok(loopdev::detach(dev)?)
    }
    fn loops_backed_by(&self, file: &Path) -> Result<Vec<PathBuf>> {
        Ok(loopdev::find_by_backing(file)?)
    }
    fn create_snapshot(
        &self,
        name: &str,
        base: &Path,
        cow: &Path,
        size: u64,
        read_only: bool,
    ) -> Result<PathBuf> {
        Ok(if read_only {
            dm::create_read_only_snapshot(name, base, cow, size)?
        } else {
            dm::create_snapshot(name, base, cow, size)?
        })
    }
    fn remove_snapshot(&self, name: &str) -> Result<()> {
        Ok(dm::remove(name)?)
    }
    fn list_snapshots(&self) -> Result<Vec<String>> {
        Ok(dm::list(crate::state::layout::DM_PREFIX)?)
    }
    fn list_loops(&self) -> Result<Vec<(PathBuf, PathBuf)>> {
        Ok(loopdev::list()?)
    }
    fn copy_device(&self, dev: &Path, dst: &Path, size: u64) -> Result<()> {
        Ok(cow::copy_device(dev, dst, size)?)
    }
    fn merge_overlay(&self, lower: &Path, upper: &Path, out: &Path, at_least: u64) -> Result<()> {
        let content = ext4::content_bytes(lower)? + ext4::content_bytes(upper)?;
        let size = ext4::rootfs_size_for(content, at_least);
        Ok(overlay::merge_to_ext4(
            lower,
            upper,
            out,
            size,
            ROOTFS_LABEL,
        )?)
    }
    fn check_ext4(&self, image: &Path) -> Result<()> {
        Ok(ext4::check(image)?)
    }
    fn scrub_for_image(&self, image: &Path) -> Result<()> {
        Ok(ext4::scrub_for_image(image)?)
    }
    fn shrink_ext4(&self, image: &Path) -> Result<u64> {
        Ok(ext4::shrink_to_fit(image)?)
    }
    fn remove_authorized_key(&self, image: &Path, guest_path: &str, key: &str) -> Result<()> {
        Ok(ext4::remove_authorized_key(image, guest_path, key)?)
    }
}

/// The filesystem label of every image's rootfs, built or merged.
const ROOTFS_LABEL: &str = "rootfs";

/// `tap_owner`: the mark of this home's TAPs; others' are never touched.
struct RealNetwork {
    tap_owner: String,
}

impl Network for RealNetwork {
    fn ensure_bridge(&self, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<()> {
        Ok(net::bridge::ensure_bridge(bridge, gateway, prefix_len)?)
    }
    fn link_exists(&self, name: &str) -> Result<bool> {
        Ok(net::bridge::link_exists(name)?)
    }
    fn claim_pool_tap(&self, tap: &str) -> Result<bool> {
        Ok(net::tap::claim_pool_tap(
            crate::state::layout::POOL_PREFIX,
            tap,
            &self.tap_owner,
        )?)
    }
    fn create_tap(&self, tap: &str, bridge: &str) -> Result<()> {
        Ok(net::tap::create_tap(tap, bridge, &self.tap_owner)?)
    }
    fn return_tap(&self, tap: &str, pool_size: usize) -> Result<()> {
        net::tap::return_to_pool(
            tap,
            crate::state::layout::POOL_PREFIX,
            pool_size,
            &self.tap_owner,
        )?;
        Ok(())
    }
    fn add_vm_rules(&self, key: &str, ip: Ipv4Addr, fence: &Fence) -> Result<()> {
        Ok(net::nat::add_vm_rules(key, ip, fence)?)
    }
    fn ensure_host_fence(&self, fence: &Fence) -> Result<()> {
        Ok(net::nat::ensure_host_fence(fence)?)
    }
    fn remove_vm_rules(&self, key: &str) -> Result<()> {
        Ok(net::nat::remove_vm_rules(key)?)
    }
    fn check_port_free(&self, port: &PublishedPort) -> Result<()> {
        Ok(net::check_port_free(port)?)
    }
    fn add_port_rules(
        &self,
        id: &str,
        ip: Ipv4Addr,
        bridge: &str,
        ports: &[PublishedPort],
    ) -> Result<()> {
        net::bridge::enable_route_localnet(bridge)?;
        Ok(net::nat::add_port_rules(id, ip, bridge, ports)?)
    }
    fn remove_port_rules(&self, id: &str) -> Result<()> {
        Ok(net::nat::remove_port_rules(id)?)
    }
    fn vms_with_rules(&self) -> Result<Vec<String>> {
        Ok(net::nat::vms_with_rules()?)
    }
    fn list_links(&self) -> Result<Vec<String>> {
        Ok(net::tap::owned_links("bg", &self.tap_owner)?)
    }
    fn delete_link(&self, name: &str) -> Result<()> {
        Ok(net::bridge::delete_link(name)?)
    }
}

struct RealVmm {
    firecracker: Option<PathBuf>,
    qemu_vmm: Option<PathBuf>,
}

impl Vmm for RealVmm {
    fn binary(&self, kind: VmmKind) -> Result<PathBuf> {
        Ok(match kind {
            VmmKind::Firecracker => process::find_binary(self.firecracker.as_deref())?,
            VmmKind::Qemu => crate::host::qemu::find_binary(self.qemu_vmm.as_deref())?,
        })
    }
    fn kvm_usable(&self) -> Result<(), String> {
        crate::host::kvm::check().map_err(|e| e.to_string())
    }
    fn host_kernel(&self) -> String {
        crate::host::kvm::host_kernel()
    }
    fn spawn(
        &self,
        binary: &Path,
        api_sock: &Path,
        id: &str,
        console_log: &Path,
    ) -> Result<Spawned> {
        let pid = process::spawn(binary, api_sock, id, console_log)?;
        // The spawn returned after exec: /proc names the file it runs.
        let exe = procs::exe_id(pid).or_else(|| procs::file_id(binary));
        Ok(Spawned { pid, exe })
    }
    fn wait_for_socket(&self, api_sock: &Path, pid: u32, timeout: Duration) -> Result<()> {
        Ok(process::wait_for_socket(api_sock, pid, timeout)?)
    }
    fn configure_and_start(&self, api_sock: &Path, config: &VmmConfig) -> Result<()> {
        api::configure_and_start(&api::ApiClient::new(api_sock), config)?;
        // The VMM binds the vsock socket when configured (a QEMU VMM's
        // helper may do so later, under the same umask 077).
        if config.vsock_uds.exists() {
            process::private_socket(&config.vsock_uds)?;
        }
        Ok(())
    }
    fn stop(
        &self,
        api_sock: &Path,
        pid: u32,
        timeout: Duration,
        force: bool,
    ) -> Result<StopOutcome> {
        Ok(process::stop_vmm(
            &api::ApiClient::new(api_sock),
            pid,
            timeout,
            force,
        )?)
    }
    fn find(&self, hint: Option<u32>, exe: Option<FileId>, api_sock: &Path) -> Option<u32> {
        let exes = match exe {
            Some(exe) => vec![exe],
            None => self.configured_exes(),
        };
        procs::vmm_pid(hint, api_sock, procs::VmmIdentity::ours(&exes))
    }
    fn kill(&self, pid: u32) {
        procs::signal(pid, nix::sys::signal::Signal::SIGKILL).ok();
        procs::wait_exit(pid, Duration::from_secs(5));
    }
    fn list(&self, run_dirs: &Path, exes: &[FileId]) -> Vec<(u32, PathBuf)> {
        let mut all = self.configured_exes();
        all.extend(
            exes.iter()
                .filter(|exe| !all.contains(exe))
                .collect::<Vec<_>>(),
        );
        procs::vmms_under(run_dirs, procs::VmmIdentity::ours(&all))
    }
}

impl RealVmm {
    /// The files the configured Firecracker and banger-vmm-qemu binaries
    /// are, where they are found.
    fn configured_exes(&self) -> Vec<FileId> {
        let mut exes = Vec::new();
        for kind in [VmmKind::Firecracker, VmmKind::Qemu] {
            if let Some(exe) = self.binary(kind).ok().and_then(|b| procs::file_id(&b))
                && !exes.contains(&exe)
            {
                exes.push(exe);
            }
        }
        exes
    }
}
