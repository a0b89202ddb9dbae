//! Bridges, TAP devices and NAT rules: the kernel networking a VM needs.
//!
//! Links and addresses go through rtnetlink, TAP devices through
//! `/dev/net/tun` ioctls, NAT through nftables JSON applied by `nft`.

pub mod bridge;
pub mod nat;
mod netlink;
pub mod tap;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Why a host networking operation failed; every variant names what it was acting on.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid prefix length /{prefix_len} for bridge {bridge} (must be 1-32)")]
    InvalidPrefix { bridge: String, prefix_len: u8 },
    #[error("cannot start the netlink runtime")]
    Runtime(#[source] io::Error),
    #[error("cannot open a netlink socket")]
    NetlinkSocket(#[source] io::Error),
    #[error("cannot {op} {name}")]
    Netlink {
        op: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("network interface {name} does not exist")]
    LinkNotFound { name: String },
    #[error("network interface {name} already exists")]
    LinkExists { name: String },
    #[error("network interface {name} exists but is not a bridge")]
    NotABridge { name: String },
    #[error("cannot write {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} TAP device {name}")]
    Tap {
        op: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("nft: cannot {op} in table inet banger: {detail}")]
    Nft { op: &'static str, detail: String },
    #[error(transparent)]
    Run(#[from] crate::host::run::RunError),
    #[error("cannot bind the DNS server on {addr}")]
    DnsBind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Checks that `name` is a usable interface name: 1-15 bytes, no `/`, `:`,
/// whitespace, or `%`, and not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let invalid = |reason| NetError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid("longer than 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "contains '/', ':', '%', whitespace or a control character",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["banger0", "bgpool12", "tap-0123456789a", "a"] {
            assert!(validate_ifname(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_the_kernel_refuses() {
        for name in [
            "",
            "0123456789abcdef",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "tap%d",
        ] {
            let err = validate_ifname(name).expect_err(name);
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
    }
}
