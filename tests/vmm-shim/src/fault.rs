//! Failing on purpose, for tests of how banger explains a VM that never
//! answers: `VMM_SHIM_FAULT=configure` refuses the machine configuration,
//! `exit-after-start` accepts `InstanceStart`, logs the KVM failure a host
//! that cannot run the guest shows and exits, `no-guest` accepts it and
//! starts nothing (the guest stays silent until the shim is stopped).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The variable that picks a fault.
pub const VAR: &str = "VMM_SHIM_FAULT";

/// How long `exit-after-start` runs before it exits.
const EXIT_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Configure,
    ExitAfterStart,
    NoGuest,
}

impl Fault {
    /// The fault `VMM_SHIM_FAULT` names, if any (an unknown one is reported).
    pub fn from_env() -> Option<Self> {
        let value = std::env::var(VAR).ok()?;
        match Self::parse(&value) {
            Some(fault) => Some(fault),
            None => {
                eprintln!("vmm-shim: ignoring unknown {VAR}={value}");
                None
            }
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "configure" => Some(Self::Configure),
            "exit-after-start" => Some(Self::ExitAfterStart),
            "no-guest" => Some(Self::NoGuest),
            _ => None,
        }
    }
}

/// The API error `configure` answers `PUT /machine-config` with.
pub const CONFIGURE_REFUSAL: &str =
    "Invalid machine configuration: the vCPU count is not supported (VMM_SHIM_FAULT=configure)";

/// A guest that never runs: when the shim is to exit, and what it logged.
#[derive(Debug)]
pub struct FakeStart {
    exit_at: Option<Instant>,
}

impl FakeStart {
    /// Starts no guest; for `exit-after-start`, writes Firecracker's KVM
    /// failure to the configured log and schedules the exit.
    pub fn begin(fault: Fault, id: &str, log_path: Option<&Path>) -> Self {
        if fault != Fault::ExitAfterStart {
            return Self { exit_at: None };
        }
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
                eprintln!("vmm-shim: cannot write {}: {err}", path.display());
            }
        }
        Self {
            exit_at: Some(Instant::now() + EXIT_AFTER),
        }
    }

    /// Whether the shim should exit now; says so on stderr as Firecracker
    /// does when its vCPU failed.
    pub fn exited(&self) -> bool {
        let exited = self.exit_at.is_some_and(|at| Instant::now() >= at);
        if exited {
            eprintln!("Error: RunWithApi(MicroVMStoppedWithError(GenericError))");
        }
        exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(Fault::parse("configure"), Some(Fault::Configure));
        assert_eq!(
            Fault::parse("exit-after-start"),
            Some(Fault::ExitAfterStart)
        );
        assert_eq!(Fault::parse("no-guest"), Some(Fault::NoGuest));
        assert_eq!(Fault::parse("boom"), None);
    }

    #[test]
    fn exit_after_start_logs_the_kvm_failure_then_exits() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("firecracker.log");
        std::fs::write(&log, "").unwrap();
        let start = FakeStart::begin(Fault::ExitAfterStart, "vm1", Some(&log));
        assert!(!start.exited());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("[vm1:fc_vcpu 0:ERROR]") && text.contains("KVM_EXIT_INTERNAL_ERROR"));
        std::thread::sleep(EXIT_AFTER);
        assert!(start.exited());
        assert!(!FakeStart::begin(Fault::NoGuest, "vm1", None).exited());
    }
}
