//! The pre-boot configuration Firecracker's API builds, checked the way Firecracker checks it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Deserialize;

/// `PUT /logger`. The VMM logs to its stderr, so only `log_path` matters:
/// Firecracker opens it (without creating it) when configured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    pub log_path: Option<PathBuf>,
    #[serde(rename = "level")]
    _level: Option<String>,
    #[serde(rename = "show_level")]
    _show_level: Option<bool>,
    #[serde(rename = "show_log_origin")]
    _show_log_origin: Option<bool>,
}

/// `PUT /metrics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// `PUT /machine-config`. SMT has no meaning under QEMU's software CPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
    #[serde(rename = "smt")]
    _smt: Option<bool>,
}

impl Default for MachineConfig {
    /// Firecracker's defaults when machine-config is never set.
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
            _smt: None,
        }
    }
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    pub boot_args: Option<String>,
    pub initrd_path: Option<PathBuf>,
}

/// `PUT /drives/<id>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/<id>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: Option<String>,
}

/// `PUT /vsock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// `PUT /actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// Everything configured so far.
#[derive(Debug, Clone, Default)]
pub struct VmConfig {
    pub machine: MachineConfig,
    pub boot: Option<BootSource>,
    /// In attach order; the root device is kept first so the guest sees it as /dev/vda.
    pub drives: Vec<Drive>,
    pub nets: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
}

/// Parses a request body, with Firecracker's message for a bad one.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| {
        format!("An error occurred when deserializing the json body of a request: {err}.")
    })
}

/// Checks the logger target as Firecracker would; the VMM itself logs to stderr.
pub fn check_logger(logger: &Logger) -> Result<(), String> {
    if let Some(path) = &logger.log_path {
        open_for_writing(path)
            .map_err(|err| format!("Logger error: Failed to open target file: {err}"))?;
    }
    Ok(())
}

/// Checks the metrics target as Firecracker would; the VMM writes no metrics.
pub fn check_metrics(metrics: &Metrics) -> Result<(), String> {
    open_for_writing(&metrics.metrics_path).map_err(|err| {
        format!("Metrics error: Cannot initialize the metrics system due to bad user input: {err}")
    })?;
    Ok(())
}

impl VmConfig {
    pub fn set_machine(&mut self, machine: MachineConfig) -> Result<(), String> {
        if machine.vcpu_count == 0 || machine.vcpu_count > 32 {
            return Err(
                "Machine config error: The vCPU number is invalid: it should be between 1 and 32."
                    .to_owned(),
            );
        }
        if machine.mem_size_mib == 0 {
            return Err("Machine config error: The memory size (MiB) is invalid.".to_owned());
        }
        self.machine = machine;
        Ok(())
    }

    pub fn set_boot(&mut self, boot: BootSource) -> Result<(), String> {
        File::open(&boot.kernel_image_path)
            .map_err(|err| format!("Boot source error: The kernel file cannot be opened: {err}"))?;
        if let Some(initrd) = &boot.initrd_path {
            File::open(initrd).map_err(|err| {
                format!("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. {err}")
            })?;
        }
        self.boot = Some(boot);
        Ok(())
    }

    pub fn set_drive(&mut self, path_id: &str, drive: Drive) -> Result<(), String> {
        check_id(path_id, &drive.drive_id)?;
        if drive.is_root_device
            && self
                .drives
                .iter()
                .any(|d| d.is_root_device && d.drive_id != drive.drive_id)
        {
            return Err("Drive config error: A root block device already exists!".to_owned());
        }
        OpenOptions::new()
            .read(true)
            .write(!drive.is_read_only)
            .open(&drive.path_on_host)
            .map_err(|err| {
                format!(
                    "Drive config error: Unable to create the virtio block device: Virtio backend error: \
                     Error manipulating the backing file: {err} {}",
                    drive.path_on_host.display()
                )
            })?;
        self.drives.retain(|d| d.drive_id != drive.drive_id);
        if drive.is_root_device {
            self.drives.insert(0, drive);
        } else {
            self.drives.push(drive);
        }
        Ok(())
    }

    pub fn set_net(&mut self, path_id: &str, net: NetworkInterface) -> Result<(), String> {
        check_id(path_id, &net.iface_id)?;
        match self.nets.iter_mut().find(|n| n.iface_id == net.iface_id) {
            Some(existing) => *existing = net,
            None => self.nets.push(net),
        }
        Ok(())
    }

    pub fn set_vsock(&mut self, vsock: Vsock) {
        self.vsock = Some(vsock);
    }
}

fn check_id(path_id: &str, body_id: &str) -> Result<(), String> {
    if path_id == body_id {
        Ok(())
    } else {
        Err("The id from the path does not match the id from the body!".to_owned())
    }
}

/// Opens like Firecracker opens its log and metrics targets: existing files or FIFOs only.
fn open_for_writing(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(id: &str, root: bool) -> Drive {
        Drive {
            drive_id: id.to_owned(),
            path_on_host: "/dev/null".into(),
            is_root_device: root,
            is_read_only: false,
        }
    }

    #[test]
    fn root_drive_goes_first_and_a_second_root_is_refused() -> Result<(), String> {
        let mut config = VmConfig::default();
        config.set_drive("work", drive("work", false))?;
        config.set_drive("rootfs", drive("rootfs", true))?;
        let order: Vec<&str> = config.drives.iter().map(|d| d.drive_id.as_str()).collect();
        assert_eq!(order, ["rootfs", "work"]);
        assert_eq!(
            config.set_drive("other", drive("other", true)),
            Err("Drive config error: A root block device already exists!".to_owned())
        );
        Ok(())
    }

    #[test]
    fn replacing_a_drive_keeps_one_entry() -> Result<(), String> {
        let mut config = VmConfig::default();
        config.set_drive("work", drive("work", false))?;
        config.set_drive("work", drive("work", false))?;
        assert_eq!(config.drives.len(), 1);
        Ok(())
    }

    #[test]
    fn body_errors_read_like_firecrackers() {
        let err = parse_body::<MachineConfig>(br#"{"vcpu_count":1}"#).err();
        assert_eq!(
            err.as_deref(),
            Some(
                "An error occurred when deserializing the json body of a request: missing field `mem_size_mib` at line 1 column 16."
            )
        );
    }
}
