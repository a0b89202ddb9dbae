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
    #[error("host port {port} is already in use on this host")]
    PortInUse {
        port: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the DNS server on {addr}")]
    DnsBind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Checks that nothing on the host holds the socket `port` would publish,
/// by binding it for a moment (in banger's own network namespace).
pub fn check_port_free(port: &crate::state::model::PublishedPort) -> Result<(), NetError> {
    use crate::state::model::Proto;
    let addr = SocketAddr::from((port.addr, port.host_port));
    let bound = match port.proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
    };
    bound.map_err(|source| NetError::PortInUse {
        port: format!("{addr}/{}", port.proto.as_str()),
        source,
    })
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

    #[test]
    fn a_port_held_on_the_host_is_not_free() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = held.local_addr().expect("has an address").port();
        let spec = |s: String| crate::state::model::PublishedPort::parse(&s).expect("parses");
        let err = check_port_free(&spec(format!("{port}:22"))).expect_err("held");
        assert_eq!(
            err.to_string(),
            format!("host port 127.0.0.1:{port}/tcp is already in use on this host")
        );
        // The same number over UDP is another socket.
        check_port_free(&spec(format!("{port}:22/udp"))).expect("free");
    }
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
