//! The durable records: a VM row and an image row, and the enums they store.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use super::ids::{VmId, VmName};

/// What a VM is, as stored. Never holds a PID, TAP, loop or dm name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: VmId,
    pub name: VmName,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Root disk size in bytes (at least the image's rootfs size).
    pub disk_size: u64,
    /// Work disk size in bytes.
    pub work_size: u64,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vsock_cid: u32,
    pub nat: bool,
    /// Host ports forwarded to the guest while it runs.
    pub published: Vec<PublishedPort>,
    /// How the root disk is kept copy-on-write; fixed when its files are made.
    pub cow_strategy: Option<CowStrategy>,
    /// The VMM it runs under, or ran under last (picked at each start).
    pub vmm: VmmKind,
    /// `--vmm` at create; `None` follows the config's `vmm` at each start.
    pub vmm_choice: Option<VmmChoice>,
    /// The operation a command recorded before touching the host and clears
    /// when it finishes. Found set while nobody holds the VM's lock, it names
    /// a command that died midway (see `vm::status`).
    pub pending: Option<Pending>,
    /// What the user last asked for: running or stopped.
    pub desired: VmState,
    pub expires_at: Option<i64>,
    /// Why the last operation on this VM failed, if it did.
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// A VM row that cannot be used as it is (a value in it is not one banger
/// writes): reported with its name, never joined into a path or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVm {
    /// The row's SQLite rowid, by which it can be removed.
    pub rowid: i64,
    /// The row's `id` as stored (it may not be a [`VmId`]).
    pub id: String,
    /// The row's `name` as stored (it may not be a [`VmName`]).
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

impl BadVm {
    /// The row's id, when it is a real VM id (so its files and host
    /// objects can be named).
    pub fn vm_id(&self) -> Option<VmId> {
        VmId::parse(&self.id)
    }

    /// How the row is named in messages: its name, else its id.
    pub fn label(&self) -> String {
        if VmName::parse(&self.name).is_ok() {
            self.name.clone()
        } else {
            format!("{:?} (id {:?})", self.name, self.id)
        }
    }
}

/// A file as the kernel names it: its device and inode number, which stay
/// the same whatever path reaches it (and while a deleted file is held open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A host port forwarded to a guest port while the VM runs
/// (`--publish [ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The host address it listens on: `127.0.0.1` unless given; `0.0.0.0`
    /// is every host address.
    pub addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    pub proto: Proto,
}

impl PublishedPort {
    /// Parses `[ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{spec}: {why} (expected [ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp])");
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Proto::Tcp),
            Some((ports, "udp")) => (ports, Proto::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (addr, host, guest) = match parts.as_slice() {
            [host, guest] => (Ipv4Addr::LOCALHOST, *host, *guest),
            [addr, host, guest] => (
                addr.parse()
                    .map_err(|_| bad(&format!("{addr} is not an IPv4 address")))?,
                *host,
                *guest,
            ),
            _ => return Err(bad("malformed")),
        };
        let port = |text: &str| match text.parse::<u32>() {
            Ok(0) => Err(bad("port 0 cannot be published")),
            Ok(n) => u16::try_from(n).map_err(|_| bad(&format!("port {n} is above 65535"))),
            Err(_) => Err(bad(&format!("{text:?} is not a port number"))),
        };
        Ok(Self {
            addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
            proto,
        })
    }

    /// Whether the two would take the same host socket (`0.0.0.0` overlaps
    /// every address).
    pub fn clashes_with(&self, other: &Self) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.addr == other.addr
                || self.addr.is_unspecified()
                || other.addr.is_unspecified())
    }
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.addr,
            self.host_port,
            self.guest_port,
            self.proto.as_str()
        )
    }
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

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Stopped]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An operation under way on a VM, recorded before its first side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pending {
    /// Allocating the row and making the disks; the VM is not usable yet.
    Create,
    Start,
    Stop,
    Delete,
    /// Taking a running VM out of a warm pool and giving it its name; the
    /// user has not been handed it yet.
    Claim,
}

impl Pending {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Delete => "delete",
            Self::Claim => "claim",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Create,
            Self::Start,
            Self::Stop,
            Self::Delete,
            Self::Claim,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }
}

/// How a VM's root disk shares blocks with its image, best first.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum CowStrategy {
    /// A device-mapper snapshot over a read-only loop device of the image.
    DmSnapshot,
    /// A `FICLONE` clone sharing extents with the image (XFS, btrfs).
    Reflink,
    /// The image's rootfs attached read-only under a per-VM upper disk, the
    /// two joined as an overlay by banger's initramfs (images that boot it).
    Overlay,
    /// A sparse copy of the image's data extents.
    Copy,
}

impl CowStrategy {
    /// The name used in the database, `handles.json`, JSON output and `vm show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DmSnapshot => "dm-snapshot",
            Self::Reflink => "reflink",
            Self::Overlay => "overlay",
            Self::Copy => "copy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::DmSnapshot, Self::Reflink, Self::Overlay, Self::Copy]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for CowStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The program that runs a VM's guest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    /// Firecracker on KVM.
    Firecracker,
    /// `banger-vmm-qemu`: QEMU's software CPU, for hosts where Firecracker
    /// cannot run guests.
    Qemu,
}

impl VmmKind {
    /// The name used in the database, `handles.json`, JSON output and `vm show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::Qemu => "qemu",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Firecracker, Self::Qemu]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which VMM to use: `auto` picks Firecracker where it can run guests and
/// QEMU elsewhere, at each start.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmmChoice {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl VmmChoice {
    pub const NAMES: &[&str] = &["auto", "firecracker", "qemu"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Firecracker => "firecracker",
            Self::Qemu => "qemu",
        }
    }

    /// Parses `auto`, `firecracker` or `qemu`; the error lists them.
    pub fn parse(text: &str) -> Result<Self, String> {
        [Self::Auto, Self::Firecracker, Self::Qemu]
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| format!("unknown VMM {text:?}: use auto, firecracker or qemu"))
    }
}

impl fmt::Display for VmmChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What banger found out about running guests under Firecracker on this
/// host, for one host kernel: `auto` goes straight to QEMU while a finding
/// that it cannot holds for the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFinding {
    /// The host kernel it was found on (`uname -r` and `-v`).
    pub kernel: String,
    /// Whether a guest printed on its console under Firecracker.
    pub runs: bool,
    /// When (Unix seconds).
    pub found_at: i64,
    /// What was seen, for messages and `doctor`.
    pub detail: String,
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
    /// `build`, `import` or `commit`.
    pub source: String,
    pub has_initrd: bool,
    pub is_default: bool,
    pub created_at: i64,
    /// The VM (and its image) an image committed from a VM came from.
    pub committed_from: Option<CommittedFrom>,
}

impl Image {
    /// Where the image came from, as `image show` says it: `built`,
    /// `imported`, or `committed from VM <vm> of image <image>`.
    pub fn origin(&self) -> String {
        match (&self.committed_from, self.source.as_str()) {
            (Some(from), _) => format!("committed from VM {} of image {}", from.vm, from.image),
            (None, "build") => "built".into(),
            (None, "import") => "imported".into(),
            (None, other) => other.to_owned(),
        }
    }
}

/// The VM an image was committed from, as it was then: its name and id,
/// and the image it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFrom {
    pub vm: String,
    pub vm_id: String,
    pub image: String,
}

/// Seconds since the Unix epoch.
/// A warm pool: how many running, ready VMs of `image` to keep for claims,
/// and the spec they are made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub image: String,
    pub size: u32,
    pub spec: PoolSpec,
    /// Pool VMs older than this many seconds are replaced by `gc`.
    pub max_age: u64,
    pub created_at: i64,
}

/// What a pool's VMs are made with; a create or run claims one only when
/// its own spec resolves to the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolSpec {
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The root disk size; `None`: the image's root filesystem size.
    pub disk_size: Option<u64>,
    pub work_size: u64,
    pub nat: bool,
}

/// A VM's place in a pool: still being made and booted by `pool fill`, or
/// ready to be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    pub image: String,
    pub ready: bool,
}

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
    fn published_ports_parse_with_localhost_and_tcp_by_default() {
        let p = PublishedPort::parse("8080:80").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "127.0.0.1:8080->80/tcp");
        let p = PublishedPort::parse("0.0.0.0:5353:53/udp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "0.0.0.0:5353->53/udp");
        for (spec, why) in [
            ("0:80", "port 0 cannot be published"),
            ("8080:65536", "port 65536 is above 65535"),
            ("8080:80/sctp", "the protocol must be tcp or udp"),
            ("localhost:8080:80", "localhost is not an IPv4 address"),
            ("8080", "malformed"),
            ("a:b:c:d", "malformed"),
            ("http:80", "\"http\" is not a port number"),
        ] {
            let err = PublishedPort::parse(spec).unwrap_err();
            assert!(err.contains(why) && err.starts_with(spec), "{spec}: {err}");
        }
    }

    #[test]
    fn published_ports_clash_on_the_same_socket_or_any_address() {
        let p = |s: &str| PublishedPort::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(p("8080:80").clashes_with(&p("127.0.0.1:8080:22")));
        assert!(p("0.0.0.0:8080:80").clashes_with(&p("8080:22")));
        assert!(!p("8080:80").clashes_with(&p("8080:80/udp")));
        assert!(!p("8080:80").clashes_with(&p("8081:80")));
        assert!(!p("10.0.0.1:8080:80").clashes_with(&p("8080:80")));
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
