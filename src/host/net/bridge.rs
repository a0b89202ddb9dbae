//! The VM bridge and generic link queries: create, address, bring up, delete, list.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use super::netlink;
use super::{NetError, validate_ifname};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Makes sure bridge `name` exists, carries `gateway/prefix_len`, is up, and
/// that IPv4 forwarding is on. Safe to call any number of times, concurrently.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    validate_ifname(name)?;
    if !(1..=32).contains(&prefix_len) {
        return Err(NetError::InvalidPrefix {
            bridge: name.to_string(),
            prefix_len,
        });
    }
    netlink::run(|handle| async move {
        let index = bridge_index(&handle, name).await?;
        if !has_address(&handle, name, index, gateway, prefix_len).await? {
            let added = handle
                .address()
                .add(index, IpAddr::V4(gateway), prefix_len)
                .execute()
                .await;
            netlink::done_or_exists(added, "add the gateway address to", name)?;
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| NetError::Netlink {
                op: "bring up",
                name: name.to_string(),
                source,
            })
    })?;
    enable_ip_forwarding()
}

/// Index of bridge `name`, creating it when absent.
async fn bridge_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    if let Some(link) = netlink::link_by_name(handle, name).await? {
        return if netlink::is_bridge(&link) {
            Ok(link.header.index)
        } else {
            Err(NetError::NotABridge {
                name: name.to_string(),
            })
        };
    }
    let created = handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await;
    netlink::done_or_exists(created, "create bridge", name)?;
    match netlink::link_by_name(handle, name).await? {
        Some(link) if netlink::is_bridge(&link) => Ok(link.header.index),
        Some(_) => Err(NetError::NotABridge {
            name: name.to_string(),
        }),
        None => Err(NetError::LinkNotFound {
            name: name.to_string(),
        }),
    }
}

async fn has_address(
    handle: &Handle,
    name: &str,
    index: u32,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<bool, NetError> {
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(address) = addresses
        .try_next()
        .await
        .map_err(|source| NetError::Netlink {
            op: "list addresses of",
            name: name.to_string(),
            source,
        })?
    {
        let matches = address.header.index == index
            && address.header.prefix_len == prefix_len
            && address.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == gateway)
            });
        if matches {
            return Ok(true);
        }
    }
    Ok(false)
}

fn enable_ip_forwarding() -> Result<(), NetError> {
    enable_sysctl(Path::new(IP_FORWARD))
}

/// Lets connections from the host's loopback addresses be routed out of
/// `bridge` (`net.ipv4.conf.<bridge>.route_localnet`), which a published
/// port on `127.0.0.1` needs once its traffic is translated to the guest.
pub fn enable_route_localnet(bridge: &str) -> Result<(), NetError> {
    validate_ifname(bridge)?;
    enable_sysctl(
        &Path::new("/proc/sys/net/ipv4/conf")
            .join(bridge)
            .join("route_localnet"),
    )
}

fn enable_sysctl(path: &Path) -> Result<(), NetError> {
    if std::fs::read_to_string(path).is_ok_and(|value| value.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|source| NetError::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

/// Deletes link `name` (bridge, TAP, anything); `Ok` when it is already gone.
pub fn delete_link(name: &str) -> Result<(), NetError> {
    validate_ifname(name)?;
    netlink::run(|handle| async move { netlink::delete_by_name(&handle, name).await.map(drop) })
}

/// Whether a link called `name` exists in this network namespace.
pub fn link_exists(name: &str) -> Result<bool, NetError> {
    validate_ifname(name)?;
    netlink::run(|handle| async move { Ok(netlink::link_by_name(&handle, name).await?.is_some()) })
}

/// Every IP address assigned to an interface in this network namespace.
pub fn interface_addresses() -> Result<Vec<IpAddr>, NetError> {
    netlink::run(|handle| async move {
        let mut addresses = handle.address().get().execute();
        let mut found = Vec::new();
        while let Some(address) =
            addresses
                .try_next()
                .await
                .map_err(|source| NetError::Netlink {
                    op: "list",
                    name: "interface addresses".to_string(),
                    source,
                })?
        {
            found.extend(address.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            }));
            found.extend(address.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }));
        }
        found.sort();
        found.dedup();
        Ok(found)
    })
}

/// Names of the links starting with `prefix`, sorted.
pub fn list_links(prefix: &str) -> Result<Vec<String>, NetError> {
    let mut names = netlink::run(|handle| async move { netlink::link_names(&handle).await })?;
    names.retain(|name| name.starts_with(prefix));
    names.sort();
    Ok(names)
}
