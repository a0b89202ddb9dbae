//! TAP devices: persistent creation through `/dev/net/tun`, and the pool of
//! idle `<prefix><n>` TAPs that VMs claim by renaming.

use std::ffi::c_char;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::netlink;
use super::{MAX_IFNAME_LEN, NetError, validate_ifname};
use crate::state::layout::{pool_slot as pool_index, pool_tap as pool_name};

const TUN_DEVICE: &str = "/dev/net/tun";

/// The flags Firecracker opens its TAP with; the TAP is created with the same.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

mod ioctl {
    nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int_bad!(tunsetpersist, libc::TUNSETPERSIST);
    nix::ioctl_readwrite_bad!(siocsifname, libc::SIOCSIFNAME, libc::ifreq);
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (a name array and a union of
    // integers, arrays and pointers) for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    copy_name(&mut req.ifr_name, name);
    req
}

/// Copies `name` (already validated to fit) into a NUL-terminated name field.
fn copy_name(field: &mut [c_char; libc::IFNAMSIZ], name: &str) {
    for (slot, byte) in field.iter_mut().zip(name.bytes().take(MAX_IFNAME_LEN)) {
        *slot = byte as c_char;
    }
}

/// Attaches the `/dev/net/tun` file `fd` to TAP `name`, creating the TAP if absent.
fn tun_set_iff(fd: RawFd, name: &str, flags: libc::c_int) -> nix::Result<()> {
    let mut req = ifreq(name);
    // ifr_flags is a short in the kernel ABI; every TAP flag fits in it.
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: fd is an open /dev/net/tun file and req a valid, initialised
    // ifreq that outlives the call; the kernel writes back only into it.
    unsafe { ioctl::tunsetiff(fd, &mut req) }.map(drop)
}

/// Marks the TAP attached to `fd` persistent (or not).
fn tun_set_persist(fd: RawFd, persist: bool) -> nix::Result<()> {
    // SAFETY: fd is a /dev/net/tun file attached to a TAP; the argument is
    // passed by value and no memory is shared with the kernel.
    unsafe { ioctl::tunsetpersist(fd, libc::c_int::from(persist)) }.map(drop)
}

/// Renames link `from` to `to`. The kernel looks `from` up by name and fails
/// with ENODEV if it no longer exists and EEXIST if `to` is taken, which makes
/// the rename an exclusive claim.
fn rename_link(from: &str, to: &str) -> nix::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut req = ifreq(from);
    // SAFETY: every byte pattern is a valid `[c_char; IFNAMSIZ]`, so borrowing
    // this member of the zeroed union cannot observe an invalid value.
    copy_name(unsafe { &mut req.ifr_ifru.ifru_newname }, to);
    // SAFETY: sock is an open socket, req a valid ifreq that outlives the call.
    unsafe { ioctl::siocsifname(sock.as_raw_fd(), &mut req) }.map(drop)
}

fn tap_error(op: &'static str, name: &str) -> impl FnOnce(nix::Error) -> NetError {
    let name = name.to_string();
    move |source| NetError::Tap { op, name, source }
}

/// Creates persistent TAP `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), marks
/// it as `owner`'s (its interface alias, see [`owner_of`]), attaches it to
/// `bridge` and brings it up. Fails with [`NetError::LinkExists`] if a link
/// of that name already exists.
pub fn create_tap(name: &str, bridge: &str, owner: &str) -> Result<(), NetError> {
    validate_ifname(name)?;
    validate_ifname(bridge)?;
    let bridge_index = netlink::run(|handle| async move {
        if netlink::link_by_name(&handle, name).await?.is_some() {
            return Err(NetError::LinkExists {
                name: name.to_string(),
            });
        }
        match netlink::link_by_name(&handle, bridge).await? {
            Some(link) if netlink::is_bridge(&link) => Ok(link.header.index),
            Some(_) => Err(NetError::NotABridge {
                name: bridge.to_string(),
            }),
            None => Err(NetError::LinkNotFound {
                name: bridge.to_string(),
            }),
        }
    })?;

    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|err| NetError::Tap {
            op: "open /dev/net/tun for",
            name: name.to_string(),
            source: Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    tun_set_iff(tun.as_raw_fd(), name, TAP_FLAGS).map_err(tap_error("create", name))?;
    if let Err(err) = tun_set_persist(tun.as_raw_fd(), true) {
        drop(tun);
        return Err(tap_error("make persistent", name)(err));
    }
    drop(tun);

    let attached = netlink::run(|handle| async move {
        netlink::set_alias(&handle, name, owner).await?;
        netlink::set_controller(&handle, name, bridge_index).await?;
        netlink::set_up(&handle, name, true).await.map(drop)
    });
    if attached.is_err() {
        // Best effort: a half-configured TAP is worse than none.
        let _ = netlink::run(|handle| async move { netlink::delete_by_name(&handle, name).await });
    }
    attached
}

/// Whose a TAP is: its interface alias (`banger:<home tag>`), `None` for
/// a TAP made before banger marked them, or by hand.
pub fn owner_of(name: &str) -> Result<Option<String>, NetError> {
    validate_ifname(name)?;
    netlink::run(|handle| async move {
        Ok(netlink::link_by_name(&handle, name)
            .await?
            .and_then(|link| netlink::alias(&link)))
    })
}

/// Whether a link whose owner is `found` may be touched by `owner`: its
/// own, or one nobody marked.
fn is_mine(found: Option<&str>, owner: &str) -> bool {
    found.is_none_or(|found| found.is_empty() || found == owner)
}

/// Names of the links starting with `prefix` that are `owner`'s or
/// nobody's (another home's are left out), sorted.
pub fn owned_links(prefix: &str, owner: &str) -> Result<Vec<String>, NetError> {
    let mut names = netlink::run(|handle| async move {
        let links = netlink::links(&handle).await?;
        Ok(links
            .iter()
            .filter_map(|link| {
                let name = netlink::link_name(link)?;
                (name.starts_with(prefix) && is_mine(netlink::alias(link).as_deref(), owner))
                    .then_some(name)
            })
            .collect::<Vec<_>>())
    })?;
    names.sort();
    Ok(names)
}

/// `owner`'s pool TAPs present, by ascending slot.
fn pool_members(pool_prefix: &str, owner: &str) -> Result<Vec<(usize, String)>, NetError> {
    let mut members: Vec<(usize, String)> = owned_links(pool_prefix, owner)?
        .into_iter()
        .filter_map(|name| pool_index(pool_prefix, &name).map(|index| (index, name)))
        .collect();
    members.sort();
    Ok(members)
}

/// Every pool slot taken on the host, whoever's.
fn occupied_slots(pool_prefix: &str) -> Result<Vec<usize>, NetError> {
    Ok(super::bridge::list_links(pool_prefix)?
        .iter()
        .filter_map(|name| pool_index(pool_prefix, name))
        .collect())
}

/// Free slots (lowest first) given the occupied ones, as many as asked.
fn free_slots(occupied: &[usize], count: usize) -> Vec<usize> {
    (0..)
        .filter(|i| !occupied.contains(i))
        .take(count)
        .collect()
}

fn validate_pool_prefix(pool_prefix: &str) -> Result<(), NetError> {
    validate_ifname(pool_prefix)?;
    if pool_prefix.len() >= MAX_IFNAME_LEN {
        return Err(NetError::InvalidName {
            name: pool_prefix.to_string(),
            reason: "pool prefix leaves no room for a slot number",
        });
    }
    Ok(())
}

/// Takes one idle pool TAP and renames it to `new_name` (down, rename, up).
/// Concurrent claimers never get the same TAP: the loser's rename fails and
/// it moves on to the next. `Ok(false)` when the pool is empty.
pub fn claim_pool_tap(pool_prefix: &str, new_name: &str, owner: &str) -> Result<bool, NetError> {
    validate_pool_prefix(pool_prefix)?;
    validate_ifname(new_name)?;
    for (_, candidate) in pool_members(pool_prefix, owner)? {
        let candidate = candidate.as_str();
        let taken_down =
            netlink::run(|handle| async move { netlink::set_up(&handle, candidate, false).await })?;
        if !taken_down {
            continue;
        }
        match rename_link(candidate, new_name) {
            Ok(()) => {
                netlink::run(
                    |handle| async move { netlink::set_up(&handle, new_name, true).await },
                )?;
                return Ok(true);
            }
            // Gone (claimed by someone else) or up again (just returned by
            // someone else and not yet ours to take down): try the next.
            Err(Errno::ENODEV | Errno::EBUSY) => continue,
            Err(Errno::EEXIST) => {
                let _ = netlink::run(|handle| async move {
                    netlink::set_up(&handle, candidate, true).await
                });
                return Err(NetError::LinkExists {
                    name: new_name.to_string(),
                });
            }
            Err(err) => return Err(tap_error("rename", candidate)(err)),
        }
    }
    Ok(false)
}

/// Gives TAP `name` back to the pool under a free `<pool_prefix><n>` name if
/// the pool holds fewer than `pool_size` TAPs, else deletes it. Returns
/// whether it went back to the pool; `Ok(false)` too if it was already gone.
/// Call it only once the VMM holding the TAP has exited: a TAP still open
/// would make the next claimer's VMM fail to attach (EBUSY).
pub fn return_to_pool(
    name: &str,
    pool_prefix: &str,
    pool_size: usize,
    owner: &str,
) -> Result<bool, NetError> {
    validate_ifname(name)?;
    validate_pool_prefix(pool_prefix)?;
    if pool_index(pool_prefix, name).is_some() {
        return super::bridge::link_exists(name);
    }
    let mine = pool_members(pool_prefix, owner)?.len();
    let occupied = occupied_slots(pool_prefix)?;
    if mine >= pool_size {
        super::bridge::delete_link(name)?;
        return Ok(false);
    }
    if !netlink::run(|handle| async move { netlink::set_up(&handle, name, false).await })? {
        return Ok(false);
    }
    // A concurrent return may take a slot we saw free; try a few more.
    for slot in free_slots(&occupied, pool_size + occupied.len() + 8) {
        let target = pool_name(pool_prefix, slot);
        validate_ifname(&target)?;
        match rename_link(name, &target) {
            Ok(()) => {
                let target = target.as_str();
                netlink::run(|handle| async move { netlink::set_up(&handle, target, true).await })?;
                return Ok(true);
            }
            Err(Errno::EEXIST) => continue,
            Err(Errno::ENODEV) => return Ok(false),
            Err(err) => return Err(tap_error("rename", name)(err)),
        }
    }
    super::bridge::delete_link(name)?;
    Ok(false)
}

/// Creates `owner`'s pool TAPs on `bridge` until it has `pool_size`;
/// returns how many it created.
pub fn fill_pool(
    pool_prefix: &str,
    bridge: &str,
    pool_size: usize,
    owner: &str,
) -> Result<usize, NetError> {
    validate_pool_prefix(pool_prefix)?;
    let missing = pool_size.saturating_sub(pool_members(pool_prefix, owner)?.len());
    let occupied = occupied_slots(pool_prefix)?;
    let mut created = 0;
    for slot in free_slots(&occupied, missing) {
        match create_tap(&pool_name(pool_prefix, slot), bridge, owner) {
            Ok(()) => created += 1,
            Err(NetError::LinkExists { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(created)
}

/// Deletes `owner`'s pool TAPs (and unmarked ones); returns how many it deleted.
pub fn drain_pool(pool_prefix: &str, owner: &str) -> Result<usize, NetError> {
    validate_pool_prefix(pool_prefix)?;
    let mut deleted = 0;
    for (_, name) in pool_members(pool_prefix, owner)? {
        let name = name.as_str();
        if netlink::run(|handle| async move { netlink::delete_by_name(&handle, name).await })? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The bridge link `name` is attached to: `Ok(None)` when it exists but is
/// attached to none, [`NetError::LinkNotFound`] when it does not exist.
pub fn bridge_of(name: &str) -> Result<Option<String>, NetError> {
    validate_ifname(name)?;
    netlink::run(|handle| async move {
        let link =
            netlink::link_by_name(&handle, name)
                .await?
                .ok_or_else(|| NetError::LinkNotFound {
                    name: name.to_string(),
                })?;
        let Some(index) = netlink::controller_index(&link) else {
            return Ok(None);
        };
        Ok(netlink::link_by_index(&handle, index)
            .await?
            .and_then(|bridge| netlink::link_name(&bridge)))
    })
}

/// Attaches each of `taps` that exists but is on no bridge (its bridge was
/// deleted and made again) to `bridge` and brings it up; returns those it
/// attached. TAPs that are gone or attached elsewhere are left alone.
pub fn reattach(taps: &[String], bridge: &str) -> Result<Vec<String>, NetError> {
    validate_ifname(bridge)?;
    let mut attached = Vec::new();
    for tap in taps {
        validate_ifname(tap)?;
        let loose = match bridge_of(tap) {
            Ok(None) => true,
            Ok(Some(_)) | Err(NetError::LinkNotFound { .. }) => false,
            Err(err) => return Err(err),
        };
        if !loose {
            continue;
        }
        netlink::run(|handle| async move {
            let index = match netlink::link_by_name(&handle, bridge).await? {
                Some(link) if netlink::is_bridge(&link) => link.header.index,
                _ => {
                    return Err(NetError::LinkNotFound {
                        name: bridge.to_string(),
                    });
                }
            };
            netlink::set_controller(&handle, tap, index).await?;
            netlink::set_up(&handle, tap, true).await.map(drop)
        })?;
        attached.push(tap.clone());
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_round_trip() {
        assert_eq!(pool_name("bgpool", 7), "bgpool7");
        assert_eq!(pool_index("bgpool", "bgpool7"), Some(7));
        assert_eq!(pool_index("bgpool", "bgpool12"), Some(12));
    }

    #[test]
    fn other_links_are_not_pool_members() {
        for name in ["bgpool", "bgpoolx", "bgpool1a", "banger0", "bgpool-1"] {
            assert_eq!(pool_index("bgpool", name), None, "{name}");
        }
    }

    #[test]
    fn free_slots_fill_gaps_first() {
        assert_eq!(free_slots(&[0, 2, 3], 3), vec![1, 4, 5]);
        assert_eq!(free_slots(&[], 2), vec![0, 1]);
        assert!(free_slots(&[0, 1], 0).is_empty());
    }

    #[test]
    fn pool_prefix_must_leave_room_for_a_slot() {
        assert!(validate_pool_prefix("bgpool").is_ok());
        assert!(validate_pool_prefix("0123456789abcde").is_err());
    }

    #[test]
    fn ifreq_name_is_nul_terminated() {
        let req = ifreq("0123456789abcde");
        assert_eq!(req.ifr_name[14], b'e' as c_char);
        assert_eq!(req.ifr_name[15], 0);
    }
}
