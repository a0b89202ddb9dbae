//! The optional config file (`/etc/banger/config.toml`, `BANGER_CONFIG`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::StateError;
use super::model::VmmChoice;
use super::parse;

/// Default config file location.
pub const DEFAULT_CONFIG: &str = "/etc/banger/config.toml";

/// Settings, with defaults for everything.
#[derive(Debug, Clone)]
pub struct Config {
    pub bridge: String,
    pub subnet: Subnet,
    pub domain: String,
    pub firecracker: Option<PathBuf>,
    /// Which VMM starts VMs (`BANGER_VMM` overrides it).
    pub vmm: VmmChoice,
    /// The `banger-vmm-qemu` binary, over `BANGER_VMM_QEMU`, the one beside
    /// `banger` and `PATH`.
    pub qemu_vmm: Option<PathBuf>,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub work_size: u64,
    pub stop_timeout: Duration,
    pub wait_timeout: Duration,
    pub sidecar_grace: Duration,
    pub tap_pool_size: usize,
    pub dns_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bridge: "banger0".into(),
            subnet: Subnet {
                network: Ipv4Addr::new(172, 30, 0, 0),
                prefix_len: 24,
            },
            domain: "vm".into(),
            firecracker: None,
            vmm: VmmChoice::Auto,
            qemu_vmm: None,
            vcpus: 2,
            memory_mib: 1024,
            work_size: 8 << 30,
            stop_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(300),
            sidecar_grace: Duration::from_secs(30),
            tap_pool_size: 4,
            dns_port: 53,
        }
    }
}

/// The file's shape: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    bridge: Option<String>,
    subnet: Option<String>,
    domain: Option<String>,
    firecracker: Option<PathBuf>,
    vmm: Option<String>,
    qemu_vmm: Option<PathBuf>,
    vcpus: Option<u8>,
    memory: Option<String>,
    work_size: Option<String>,
    stop_timeout: Option<String>,
    wait_timeout: Option<String>,
    sidecar_grace: Option<String>,
    tap_pool_size: Option<usize>,
    dns_port: Option<u16>,
}

/// Config files larger than this are refused rather than read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config file, refusing what is not a small regular file (a
/// device such as `/dev/zero` would otherwise be read forever).
fn read_config(path: &Path) -> std::io::Result<String> {
    super::files::read_text_bounded(path, MAX_CONFIG_BYTES).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData && e.to_string().starts_with("larger") {
            std::io::Error::other(format!("{e}; not a config file"))
        } else {
            e
        }
    })
}

impl Config {
    /// Loads `BANGER_CONFIG` or the default path; a missing file means defaults.
    /// `BANGER_SIDECAR_GRACE` overrides the sidecar grace period.
    pub fn load() -> Result<Self, StateError> {
        let env = crate::env::Env::get();
        let explicit = env.config.clone();
        let path = explicit.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
        let mut config = match read_config(&path) {
            Ok(text) => Self::parse(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Self::default()
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        if let Some(grace) = env.sidecar_grace()? {
            config.sidecar_grace = grace;
        }
        if let Some(vmm) = env.vmm()? {
            config.vmm = vmm;
        }
        Ok(config)
    }

    /// Parses a config file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, StateError> {
        let bad = |message: String| StateError::Config {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut config = Self::default();
        if let Some(bridge) = file.bridge {
            if bridge.is_empty()
                || bridge.len() > 15
                || !bridge
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(bad(format!(
                    "bridge {bridge:?} is not a valid interface name (1-15 of [A-Za-z0-9-])"
                )));
            }
            config.bridge = bridge;
        }
        if let Some(subnet) = file.subnet {
            config.subnet = Subnet::parse(&subnet).map_err(bad)?;
        }
        if let Some(domain) = file.domain {
            config.domain = parse::name("domain", &domain).map_err(|e| bad(e.to_string()))?;
        }
        config.firecracker = file.firecracker;
        if let Some(vmm) = file.vmm {
            config.vmm = VmmChoice::parse(&vmm).map_err(|e| bad(format!("vmm: {e}")))?;
        }
        config.qemu_vmm = file.qemu_vmm;
        if let Some(vcpus) = file.vcpus {
            config.vcpus = parse::vcpus(&vcpus.to_string()).map_err(|e| bad(e.to_string()))?;
        }
        if let Some(memory) = file.memory {
            config.memory_mib = parse::memory_mib(&memory).map_err(|e| bad(e.to_string()))?;
        }
        if let Some(size) = file.work_size {
            config.work_size = parse::size(&size).map_err(|e| bad(e.to_string()))?;
        }
        for (value, slot) in [
            (file.stop_timeout, &mut config.stop_timeout),
            (file.wait_timeout, &mut config.wait_timeout),
            (file.sidecar_grace, &mut config.sidecar_grace),
        ] {
            if let Some(value) = value {
                *slot = parse::duration(&value).map_err(|e| bad(e.to_string()))?;
            }
        }
        if let Some(n) = file.tap_pool_size {
            config.tap_pool_size = n.min(64);
        }
        if let Some(port) = file.dns_port {
            config.dns_port = port;
        }
        Ok(config)
    }
}

/// An IPv4 subnet for guests: the first address is the bridge's (gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n` with 16 ≤ n ≤ 29 and no host bits set.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("subnet {text:?} must look like 172.30.0.0/24"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet {text:?} has an invalid address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("subnet {text:?} has an invalid prefix length"))?;
        if !(16..=29).contains(&prefix_len) {
            return Err(format!(
                "subnet {text:?}: the prefix length must be between 16 and 29"
            ));
        }
        let subnet = Self {
            network,
            prefix_len,
        };
        if u32::from(network) & !subnet.mask_bits() != 0 {
            return Err(format!("subnet {text:?} has host bits set"));
        }
        Ok(subnet)
    }

    fn mask_bits(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The bridge address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Guest addresses in allocation order: after the gateway, before broadcast.
    pub fn guest_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !self.mask_bits();
        (first..broadcast).map(Ipv4Addr::from)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_contents() {
        let config = Config::parse(Path::new("c.toml"), "").unwrap();
        assert_eq!(config.bridge, "banger0");
        assert_eq!(config.subnet.to_string(), "172.30.0.0/24");
        assert_eq!(config.subnet.gateway(), Ipv4Addr::new(172, 30, 0, 1));
    }

    #[test]
    fn reads_values() {
        let text = "bridge = \"br-dev\"\nsubnet = \"10.9.0.0/16\"\ndomain = \"dev\"\nmemory = \"2G\"\nsidecar_grace = \"5s\"\n";
        let config = Config::parse(Path::new("c.toml"), text).unwrap();
        assert_eq!(config.bridge, "br-dev");
        assert_eq!(config.subnet.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(config.memory_mib, 2048);
        assert_eq!(config.sidecar_grace, Duration::from_secs(5));
    }

    #[test]
    fn malformed_files_name_the_path_and_problem() {
        for text in [
            "bridge = ",
            "colour = \"red\"",
            "subnet = \"10.0.0.1/24\"",
            "memory = \"12\"",
            "domain = \"A.B\"",
        ] {
            let err = Config::parse(Path::new("/etc/x.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("/etc/x.toml"), "{err}");
        }
    }

    #[test]
    fn guest_addresses_skip_gateway_and_broadcast() {
        let subnet = Subnet::parse("10.0.0.0/29").unwrap();
        let all: Vec<_> = subnet.guest_addresses().collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 0, 0, 6)));
        assert!(subnet.contains(Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!subnet.contains(Ipv4Addr::new(10, 0, 0, 8)));
    }
}
