//! The guest under QEMU: `qemu-system-x86_64 -M microvm` and the vsock
//! backend as children tied to the VMM, and their teardown.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::{Backend, Guest, StartContext};
use crate::config::{BootSource, VmConfig};
use crate::qmp::Qmp;

const QEMU: &str = "qemu-system-x86_64";
const VSOCK_BACKEND: &str = "vhost-device-vsock";
/// How long QEMU and the backend get to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: io::Error,
    },
    #[error("{program} exited before it was ready ({status})")]
    ExitedEarly {
        program: &'static str,
        status: ExitStatus,
    },
    #[error("{program} was not ready within {}s", READY_TIMEOUT.as_secs())]
    NotReady { program: &'static str },
    #[error("cannot check on {program}: {source}")]
    Wait {
        program: &'static str,
        source: io::Error,
    },
    #[error("QMP on {}: {source}", path.display())]
    Qmp { path: PathBuf, source: io::Error },
}

/// The sockets made next to the API socket.
#[derive(Debug, Clone)]
pub struct Sockets {
    pub qmp: PathBuf,
    pub vsock_backend: PathBuf,
}

impl Sockets {
    pub fn beside(api_sock: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut path = api_sock.as_os_str().to_owned();
            path.push(suffix);
            PathBuf::from(path)
        };
        Self {
            qmp: with_suffix(".qmp"),
            vsock_backend: with_suffix(".vsock-backend"),
        }
    }
}

/// A running guest.
pub struct Vm {
    qemu: Option<Child>,
    backend: Option<Child>,
    qmp: Option<Qmp>,
    /// Sockets created for this guest, removed by [`Vm::stop`].
    made: Vec<PathBuf>,
}

impl Vm {
    /// Starts the vsock backend (if a vsock is configured) and QEMU, and waits
    /// until QEMU answers on QMP, i.e. its devices are built. Must be called
    /// from a thread that lives as long as the VMM: the children die with it.
    pub fn start(config: &VmConfig, boot: &BootSource, sockets: &Sockets) -> Result<Self, VmError> {
        let mut vm = Self {
            qemu: None,
            backend: None,
            qmp: None,
            made: vec![sockets.qmp.clone()],
        };
        match vm.launch(config, boot, sockets) {
            Ok(()) => Ok(vm),
            Err(err) => {
                vm.stop();
                Err(err)
            }
        }
    }

    fn launch(
        &mut self,
        config: &VmConfig,
        boot: &BootSource,
        sockets: &Sockets,
    ) -> Result<(), VmError> {
        if let Some(vsock) = &config.vsock {
            self.made.push(sockets.vsock_backend.clone());
            self.made.push(vsock.uds_path.clone());
            // A stale socket from an earlier run would pass for the backend being ready.
            remove_socket(&sockets.vsock_backend);
            let mut cmd = Command::new(VSOCK_BACKEND);
            // Separate flags rather than `--vm key=value,...`, so paths may hold commas.
            cmd.arg("--guest-cid")
                .arg(vsock.guest_cid.to_string())
                .arg("--uds-path")
                .arg(&vsock.uds_path)
                .arg("--socket")
                .arg(&sockets.vsock_backend)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let backend = self.backend.insert(spawn_tied(&mut cmd, VSOCK_BACKEND)?);
            wait_until(backend, VSOCK_BACKEND, || {
                sockets.vsock_backend.exists().then_some(())
            })?;
        }
        let mut cmd = Command::new(QEMU);
        cmd.args(qemu_args(config, boot, sockets, host_tsc_khz()))
            .stdin(Stdio::null());
        let qemu = self.qemu.insert(spawn_tied(&mut cmd, QEMU)?);
        let stream = wait_until(qemu, QEMU, || UnixStream::connect(&sockets.qmp).ok())?;
        let qmp_error = |source| VmError::Qmp {
            path: sockets.qmp.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(READY_TIMEOUT))
            .map_err(qmp_error)?;
        self.qmp = Some(Qmp::connect(stream).map_err(qmp_error)?);
        Ok(())
    }

    /// Presses Ctrl-Alt-Del on the guest's i8042 keyboard, as Firecracker does.
    pub fn send_ctrl_alt_del(&mut self) -> io::Result<()> {
        let qmp = self
            .qmp
            .as_mut()
            .ok_or_else(|| io::Error::other("QMP is not connected"))?;
        let keys = ["ctrl", "alt", "delete"].map(|key| json!({ "type": "qcode", "data": key }));
        qmp.execute("send-key", json!({ "keys": keys }))?;
        Ok(())
    }

    /// QEMU's exit status once it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.qemu {
            Some(qemu) => qemu.try_wait(),
            None => Ok(None),
        }
    }

    /// Kills QEMU and the backend and removes the sockets made for them;
    /// whatever is already gone is skipped.
    pub fn stop(&mut self) {
        self.qmp = None;
        for mut child in [self.qemu.take(), self.backend.take()]
            .into_iter()
            .flatten()
        {
            // Killing a child that already exited fails harmlessly; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
        for path in self.made.drain(..) {
            remove_socket(&path);
        }
    }
}

/// The QEMU backend.
pub struct Qemu {
    name: &'static str,
}

impl Qemu {
    /// A backend whose messages start with `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        self.name
    }

    fn start(
        &mut self,
        config: &VmConfig,
        boot: &BootSource,
        start: &StartContext<'_>,
    ) -> Result<Box<dyn Guest>, String> {
        let vm = Vm::start(config, boot, &Sockets::beside(start.api_sock))
            .map_err(|err| err.to_string())?;
        Ok(Box::new(vm))
    }
}

impl Guest for Vm {
    fn send_ctrl_alt_del(&mut self) -> io::Result<()> {
        Vm::send_ctrl_alt_del(self)
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        Vm::try_wait(self)
    }
    fn stop(&mut self) {
        Vm::stop(self);
    }
}

/// Removes a socket file, tolerating its absence.
pub fn remove_socket(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        crate::log("WARN", &format!("cannot remove {}: {err}", path.display()));
    }
}

/// Spawns `cmd` so that it is SIGKILLed when the spawning thread dies.
fn spawn_tied(cmd: &mut Command, program: &'static str) -> Result<Child, VmError> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, sigemptyset, sigprocmask);
    // it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The VMM may have died between fork and prctl.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // The VMM blocks SIGTERM and SIGINT to wait for them; the child must not inherit that.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|source| VmError::Spawn { program, source })
}

/// Polls `ready` until it yields, failing if `child` exits first or time runs out.
fn wait_until<T>(
    child: &mut Child,
    program: &'static str,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, VmError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|source| VmError::Wait { program, source })?
        {
            return Err(VmError::ExitedEarly { program, status });
        }
        if Instant::now() > deadline {
            return Err(VmError::NotReady { program });
        }
        thread::sleep(POLL);
    }
}

/// The host TSC rate, which QEMU's software CPU counts at. Passing it to the
/// guest spares the kernel its PIT calibration, which fails under load on
/// `microvm` and leaves the guest without a working clock.
fn host_tsc_khz() -> Option<u64> {
    tsc_khz_from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The first `cpu MHz` of a /proc/cpuinfo text, in kHz (`2100.000` → 2100000).
fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let mhz = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("cpu MHz")?.split(':').nth(1))?
        .trim();
    let (whole, fraction) = mhz.split_once('.').unwrap_or((mhz, ""));
    let fraction: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(3)
        .collect();
    let khz = whole.parse::<u64>().ok()? * 1000 + fraction.parse::<u64>().ok()?;
    (khz > 0).then_some(khz)
}

/// QEMU's `key=value` options separate on commas; a literal comma is doubled.
fn escape_commas(path: &Path) -> OsString {
    let mut out = Vec::new();
    for &byte in path.as_os_str().as_bytes() {
        out.push(byte);
        if byte == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn option(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut out = OsString::from(prefix);
    out.push(escape_commas(path));
    out.push(suffix);
    out
}

/// The guest's kernel command line: the configured one plus what Firecracker
/// itself appends for a root drive, plus the TSC rate (see [`host_tsc_khz`]).
fn kernel_cmdline(config: &VmConfig, boot: &BootSource, tsc_khz: Option<u64>) -> String {
    let mut cmdline = boot
        .boot_args
        .clone()
        .unwrap_or_else(|| "reboot=k panic=1".to_owned());
    if let Some(root) = config.drives.iter().find(|d| d.is_root_device) {
        cmdline.push_str(if root.is_read_only {
            " root=/dev/vda ro"
        } else {
            " root=/dev/vda rw"
        });
    }
    if let Some(khz) = tsc_khz {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    cmdline
}

/// QEMU's command line for `config`: a `microvm` with Firecracker's device
/// model (serial console, i8042, virtio-mmio block, net and vsock).
fn qemu_args(
    config: &VmConfig,
    boot: &BootSource,
    sockets: &Sockets,
    tsc_khz: Option<u64>,
) -> Vec<OsString> {
    let mem = config.machine.mem_size_mib;
    let mut args: Vec<OsString> = [
        "-M",
        "microvm,acpi=on,pit=on,pic=on,rtc=on,memory-backend=mem",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut push = |parts: &[&OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    let mem_size = OsString::from(format!("{mem}M"));
    let smp = OsString::from(config.machine.vcpu_count.to_string());
    let memfd = OsString::from(format!("memory-backend-memfd,id=mem,size={mem}M,share=on"));
    push(&[
        "-m".as_ref(),
        &mem_size,
        "-smp".as_ref(),
        &smp,
        "-object".as_ref(),
        &memfd,
    ]);
    push(&["-kernel".as_ref(), boot.kernel_image_path.as_os_str()]);
    if let Some(initrd) = &boot.initrd_path {
        push(&["-initrd".as_ref(), initrd.as_os_str()]);
    }
    let cmdline = OsString::from(kernel_cmdline(config, boot, tsc_khz));
    push(&["-append".as_ref(), &cmdline]);
    push(&[
        "-chardev".as_ref(),
        "stdio,id=console,signal=off".as_ref(),
        "-serial".as_ref(),
        "chardev:console".as_ref(),
        "-device".as_ref(),
        "i8042".as_ref(),
    ]);
    let qmp = option("unix:", &sockets.qmp, ",server=on,wait=off");
    push(&["-qmp".as_ref(), &qmp]);
    for (i, drive) in config.drives.iter().enumerate() {
        let readonly = if drive.is_read_only {
            ",readonly=on"
        } else {
            ""
        };
        let spec = option(
            &format!("id=drive{i},format=raw,if=none,file="),
            &drive.path_on_host,
            readonly,
        );
        let device = OsString::from(format!("virtio-blk-device,drive=drive{i}"));
        push(&["-drive".as_ref(), &spec, "-device".as_ref(), &device]);
    }
    for (i, net) in config.nets.iter().enumerate() {
        let netdev = OsString::from(format!(
            "tap,id=net{i},ifname={},script=no,downscript=no",
            net.host_dev_name
        ));
        let mut device = format!("virtio-net-device,netdev=net{i}");
        if let Some(mac) = &net.guest_mac {
            device.push_str(&format!(",mac={mac}"));
        }
        push(&[
            "-netdev".as_ref(),
            &netdev,
            "-device".as_ref(),
            device.as_ref(),
        ]);
    }
    if config.vsock.is_some() {
        let chardev = option("socket,id=vsock,path=", &sockets.vsock_backend, "");
        push(&[
            "-chardev".as_ref(),
            &chardev,
            "-device".as_ref(),
            "vhost-user-vsock-device,chardev=vsock".as_ref(),
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Drive, NetworkInterface, Vsock};

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn boot() -> BootSource {
        BootSource {
            kernel_image_path: "/k/vmlinux".into(),
            boot_args: Some("console=ttyS0 reboot=k".to_owned()),
            initrd_path: Some("/k/initrd".into()),
        }
    }

    #[test]
    fn full_config_maps_to_qemu_devices_in_firecracker_order() {
        let config = VmConfig {
            drives: vec![
                Drive {
                    drive_id: "rootfs".into(),
                    path_on_host: "/d/root,1.ext4".into(),
                    is_root_device: true,
                    is_read_only: true,
                },
                Drive {
                    drive_id: "work".into(),
                    path_on_host: "/d/work.ext4".into(),
                    is_root_device: false,
                    is_read_only: false,
                },
            ],
            nets: vec![NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap7".into(),
                guest_mac: Some("06:00:0a:00:00:02".into()),
            }],
            vsock: Some(Vsock {
                guest_cid: 3,
                uds_path: "/r/v.sock".into(),
            }),
            ..VmConfig::default()
        };
        let args = strings(&qemu_args(
            &config,
            &boot(),
            &Sockets::beside(Path::new("/r/api.sock")),
            Some(2_100_000),
        ));
        let joined = args.join(" ");
        for expected in [
            "-m 128M -smp 1 -object memory-backend-memfd,id=mem,size=128M,share=on",
            "-kernel /k/vmlinux -initrd /k/initrd -append console=ttyS0 reboot=k root=/dev/vda ro tsc_early_khz=2100000",
            "-qmp unix:/r/api.sock.qmp,server=on,wait=off",
            "-drive id=drive0,format=raw,if=none,file=/d/root,,1.ext4,readonly=on -device virtio-blk-device,drive=drive0",
            "-drive id=drive1,format=raw,if=none,file=/d/work.ext4 -device virtio-blk-device,drive=drive1",
            "-netdev tap,id=net0,ifname=tap7,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=06:00:0a:00:00:02",
            "-chardev socket,id=vsock,path=/r/api.sock.vsock-backend -device vhost-user-vsock-device,chardev=vsock",
        ] {
            assert!(
                joined.contains(expected),
                "missing {expected:?} in {joined}"
            );
        }
    }

    #[test]
    fn minimal_config_has_no_devices_beyond_console_and_keyboard() {
        let mut boot = boot();
        boot.boot_args = None;
        boot.initrd_path = None;
        let args = strings(&qemu_args(
            &VmConfig::default(),
            &boot,
            &Sockets::beside(Path::new("/r/a")),
            None,
        ));
        assert!(
            !args
                .iter()
                .any(|a| a == "-drive" || a == "-netdev" || a == "-initrd")
        );
        let append = args
            .iter()
            .position(|a| a == "-append")
            .map(|i| args[i + 1].as_str());
        assert_eq!(append, Some("reboot=k panic=1"));
    }

    #[test]
    fn tsc_rate_comes_from_the_first_cpu_mhz() {
        let cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2100.5\nprocessor\t: 1\ncpu MHz\t\t: 800.000\n";
        assert_eq!(tsc_khz_from_cpuinfo(cpuinfo), Some(2_100_500));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 3000\n"), Some(3_000_000));
        assert_eq!(tsc_khz_from_cpuinfo("processor : 0\n"), None);
    }
}
