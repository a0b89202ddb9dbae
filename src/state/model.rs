//! The durable records: a VM row and an image row.

use std::net::Ipv4Addr;

use serde::Serialize;

/// What a VM is, as stored. Never holds a PID, TAP, loop or dm name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Root disk size in bytes (at least the image's rootfs size).
    pub disk_size: u64,
    /// Work disk size in bytes.
    pub work_size: u64,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub cid: u32,
    pub nat: bool,
    /// How the root disk is kept copy-on-write; fixed when its files are made.
    pub cow_strategy: Option<String>,
    /// True until its disks are made; `gc` deletes VMs whose creation died.
    pub creating: bool,
    /// What the user last asked for: running or stopped.
    pub desired: VmState,
    pub expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// A VM's state as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Stopped,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "running" {
            Self::Running
        } else {
            Self::Stopped
        }
    }
}

/// The MAC for a guest address: `06:00:` followed by the four IPv4 bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A registered image; its files live in `images/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub name: String,
    /// `build` or `import`.
    pub source: String,
    pub has_initrd: bool,
    pub is_default: bool,
    pub created_at: i64,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 UTC for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_follows_the_firecracker_convention() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 30, 0, 2)), "06:00:ac:1e:00:02");
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
