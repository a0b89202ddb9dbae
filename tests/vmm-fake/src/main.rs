//! vmm-fake: a test VMM that serves Firecracker's API (banger-vmm-qemu's
//! API layer) but boots no guest, for tests that need no QEMU or KVM. It
//! reports itself as Firecracker. `VMM_FAKE_FAULT` picks what it does on
//! `InstanceStart`:
//!
//! - unset: holds every configured drive and TAP open (so the TAP has a
//!   carrier, as under a real VMM), prints a kernel banner on its console,
//!   and exits 0 on Ctrl-Alt-Del, like a guest that reboots;
//! - `configure`: refuses the machine configuration;
//! - `exit-after-start`: prints nothing, logs the KVM failure a host that
//!   cannot run the guest shows, and exits 1 a second later;
//! - `no-guest`: prints the kernel banner, then nothing (no agent answers);
//! - `silent`: prints nothing at all and runs until stopped, as Firecracker
//!   does on a KVM that cannot run the guest.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use banger_vmm_qemu::backend::{Backend, Guest, StartContext};
use banger_vmm_qemu::config::{BootSource, MachineConfig, VmConfig};
use banger_vmm_qemu::{FIRECRACKER_API_VERSION, args, server};

const NAME: &str = "vmm-fake";
/// The variable that picks a fault.
const VAR: &str = "VMM_FAKE_FAULT";
/// How long `exit-after-start` runs before it exits.
const EXIT_AFTER: Duration = Duration::from_secs(1);
/// The API error `configure` answers `PUT /machine-config` with.
const CONFIGURE_REFUSAL: &str =
    "Invalid machine configuration: the vCPU count is not supported (VMM_FAKE_FAULT=configure)";
/// What the console shows of a guest that starts.
const BANNER: &str = "[    0.000000] Linux version 6.1.0-fake (vmm-fake)\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hold,
    Configure,
    ExitAfterStart,
    NoGuest,
    Silent,
}

impl Mode {
    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") => Ok(Self::Hold),
            Some("configure") => Ok(Self::Configure),
            Some("exit-after-start") => Ok(Self::ExitAfterStart),
            Some("no-guest") => Ok(Self::NoGuest),
            Some("silent") => Ok(Self::Silent),
            Some(other) => Err(format!("unknown {VAR}={other}")),
        }
    }
}

struct Fake {
    mode: Mode,
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_machine(&self, _machine: &MachineConfig) -> Result<(), String> {
        match self.mode {
            Mode::Configure => Err(CONFIGURE_REFUSAL.to_owned()),
            _ => Ok(()),
        }
    }

    fn start(
        &mut self,
        config: &VmConfig,
        _boot: &BootSource,
        start: &StartContext<'_>,
    ) -> Result<Box<dyn Guest>, String> {
        let mut drives = Vec::new();
        for drive in &config.drives {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(!drive.is_read_only)
                .open(&drive.path_on_host)
                .map_err(|err| format!("cannot open {}: {err}", drive.path_on_host.display()))?;
            drives.push(file);
        }
        let taps = config
            .nets
            .iter()
            .map(|net| {
                attach_tap(&net.host_dev_name)
                    .map_err(|err| format!("cannot open TAP {}: {err}", net.host_dev_name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let exit_at = match self.mode {
            Mode::ExitAfterStart => {
                log_kvm_failure(start.id, start.log_path);
                Some(Instant::now() + EXIT_AFTER)
            }
            _ => None,
        };
        if matches!(self.mode, Mode::Hold | Mode::NoGuest) {
            print!("{BANNER}");
            io::stdout().flush().map_err(|err| err.to_string())?;
        }
        Ok(Box::new(FakeGuest {
            mode: self.mode,
            _drives: drives,
            _taps: taps,
            exit_at,
            rebooted: false,
        }))
    }
}

/// Opens `/dev/net/tun` attached to the existing TAP `name`, with the
/// flags Firecracker opens it with.
fn attach_tap(name: &str) -> io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // ifr_flags is a short in the kernel ABI; these flags fit in it.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: tun is an open /dev/net/tun file and req a valid ifreq that
    // outlives the call; the kernel writes back only into it.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// Appends Firecracker's lines for a vCPU that failed to the configured log.
fn log_kvm_failure(id: &str, log_path: Option<&Path>) {
    let lines = format!(
        "[{id}:fc_vcpu 0:ERROR] Received KVM_EXIT_INTERNAL_ERROR signal\n\
         [{id}:main:INFO] Vmm is stopping.\n\
         [{id}:main:ERROR] Firecracker exiting with error. exit_code=1\n"
    );
    if let Some(path) = log_path {
        let logged = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(lines.as_bytes()));
        if let Err(err) = logged {
            eprintln!("{NAME}: cannot write {}: {err}", path.display());
        }
    }
}

struct FakeGuest {
    mode: Mode,
    /// Held open while the guest "runs", as a VMM holds its disks.
    _drives: Vec<File>,
    /// Held open as a VMM holds its TAPs: the TAP (and so the bridge) has a
    /// carrier while the guest "runs".
    _taps: Vec<File>,
    exit_at: Option<Instant>,
    rebooted: bool,
}

impl Guest for FakeGuest {
    fn send_ctrl_alt_del(&mut self) -> io::Result<()> {
        // Only a guest that "booted" reacts, as a real one would.
        self.rebooted = self.mode == Mode::Hold;
        Ok(())
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.rebooted {
            return Ok(Some(ExitStatus::from_raw(0)));
        }
        if self.exit_at.is_some_and(|at| Instant::now() >= at) {
            // Firecracker's last words when its vCPU failed; exit code 1.
            eprintln!("Error: RunWithApi(MicroVMStoppedWithError(GenericError))");
            return Ok(Some(ExitStatus::from_raw(1 << 8)));
        }
        Ok(None)
    }

    fn stop(&mut self) {}
}

fn main() -> ExitCode {
    let mode = match Mode::parse(std::env::var(VAR).ok().as_deref()) {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return ExitCode::from(2);
        }
    };
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args::Command::Run(args)) => args,
        Ok(args::Command::Version) => {
            println!("Firecracker v{FIRECRACKER_API_VERSION}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return ExitCode::from(2);
        }
    };
    match server::run(&args, &mut Fake { mode }) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{NAME}: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(None), Ok(Mode::Hold));
        assert_eq!(Mode::parse(Some("configure")), Ok(Mode::Configure));
        assert_eq!(
            Mode::parse(Some("exit-after-start")),
            Ok(Mode::ExitAfterStart)
        );
        assert_eq!(Mode::parse(Some("no-guest")), Ok(Mode::NoGuest));
        assert_eq!(Mode::parse(Some("silent")), Ok(Mode::Silent));
        assert!(Mode::parse(Some("boom")).unwrap_err().contains(VAR));
    }

    #[test]
    fn exit_after_start_logs_the_kvm_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("firecracker.log");
        std::fs::write(&log, "").unwrap();
        log_kvm_failure("vm1", Some(&log));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("[vm1:fc_vcpu 0:ERROR]") && text.contains("KVM_EXIT_INTERNAL_ERROR"));
    }
}
