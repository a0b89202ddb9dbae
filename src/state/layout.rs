//! Every name banger derives for the host objects it makes, formatted and
//! parsed in one place: `gc` deletes only what [`parse`]s here as banger's,
//! so a name can never drift between the code that makes an object and the
//! code that sweeps it.

use super::ids::VmId;

/// A VM's own TAP: `bg-<id>` (13 bytes; interface names allow 15).
const TAP_PREFIX: &str = "bg-";
/// Idle TAPs kept warm by the sidecar: `bgpool<n>`.
pub const POOL_PREFIX: &str = "bgpool";
/// A VM's device-mapper devices: `banger-<id>` and `banger-<id>-base`.
pub const DM_PREFIX: &str = "banger-";
const DM_BASE_SUFFIX: &str = "-base";
/// The comment on a VM's nftables rules: `banger:<id>`.
const NAT_COMMENT_PREFIX: &str = "banger:";
/// Per-VM lock files under the run dir's `locks/`: `vm-<id>.lock`.
const VM_LOCK_PREFIX: &str = "vm-";
const LOCK_SUFFIX: &str = ".lock";
/// Image staging directories under `images/`: `.tmp-<name>-<pid>`.
const STAGING_PREFIX: &str = ".tmp-";

/// A host object banger named, recognised from its name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// `bg-<id>`
    Tap(VmId),
    /// `bgpool<n>`
    PoolTap(usize),
    /// `banger-<id>`
    Dm(VmId),
    /// `banger-<id>-base`
    DmBase(VmId),
    /// `banger:<id>`
    NatComment(VmId),
    /// `vm-<id>.lock`
    VmLock(VmId),
    /// `.tmp-<image>-<pid>`
    Staging { image: String, pid: u32 },
}

impl Name {
    /// The name as it appears on the host.
    pub fn format(&self) -> String {
        match self {
            Self::Tap(id) => format!("{TAP_PREFIX}{id}"),
            Self::PoolTap(n) => pool_tap(POOL_PREFIX, *n),
            Self::Dm(id) => format!("{DM_PREFIX}{id}"),
            Self::DmBase(id) => dm_base_of(&format!("{DM_PREFIX}{id}")),
            Self::NatComment(id) => nat_comment_for(id.as_str()),
            Self::VmLock(id) => format!("{VM_LOCK_PREFIX}{id}{LOCK_SUFFIX}"),
            Self::Staging { image, pid } => format!("{STAGING_PREFIX}{image}-{pid}"),
        }
    }

    /// The object `text` names, if banger could have made that exact name.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(id) = text.strip_prefix(TAP_PREFIX) {
            return VmId::parse(id).map(Self::Tap);
        }
        if text.starts_with(POOL_PREFIX) {
            return pool_slot(POOL_PREFIX, text).map(Self::PoolTap);
        }
        if let Some(rest) = text.strip_prefix(DM_PREFIX) {
            return match rest.strip_suffix(DM_BASE_SUFFIX) {
                Some(id) => VmId::parse(id).map(Self::DmBase),
                None => VmId::parse(rest).map(Self::Dm),
            };
        }
        if let Some(id) = vm_of_nat_comment(text) {
            return VmId::parse(id).map(Self::NatComment);
        }
        if let Some(rest) = text.strip_prefix(VM_LOCK_PREFIX) {
            return VmId::parse(rest.strip_suffix(LOCK_SUFFIX)?).map(Self::VmLock);
        }
        if let Some(rest) = text.strip_prefix(STAGING_PREFIX) {
            let (image, pid) = rest.rsplit_once('-')?;
            super::parse::image_name(image).ok()?;
            return Some(Self::Staging {
                image: image.to_owned(),
                pid: decimal(pid)?.try_into().ok()?,
            });
        }
        None
    }

    /// The VM this object belongs to, if it belongs to one.
    pub fn vm(&self) -> Option<&VmId> {
        match self {
            Self::Tap(id)
            | Self::Dm(id)
            | Self::DmBase(id)
            | Self::NatComment(id)
            | Self::VmLock(id) => Some(id),
            Self::PoolTap(_) | Self::Staging { .. } => None,
        }
    }
}

/// Digits only, no sign or leading zero (so a name has one spelling).
fn decimal(text: &str) -> Option<usize> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The comment on the nftables rules of the VM with id `id` (host tests
/// use ids of their own; banger's are [`VmId`]s).
pub fn nat_comment_for(id: &str) -> String {
    format!("{NAT_COMMENT_PREFIX}{id}")
}

/// The VM id a rule comment names, if it is banger's kind of comment.
pub fn vm_of_nat_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix(NAT_COMMENT_PREFIX)
}

/// The zero-padded origin device that goes with dm snapshot `name`.
pub fn dm_base_of(name: &str) -> String {
    format!("{name}{DM_BASE_SUFFIX}")
}

/// Pool TAP `<prefix><slot>` (the sidecar's prefix is [`POOL_PREFIX`]).
pub fn pool_tap(prefix: &str, slot: usize) -> String {
    format!("{prefix}{slot}")
}

/// The slot of pool TAP `name` under `prefix`, in its one spelling.
pub fn pool_slot(prefix: &str, name: &str) -> Option<usize> {
    decimal(name.strip_prefix(prefix)?)
}

/// `bg-<id>`
pub fn tap(id: &VmId) -> String {
    Name::Tap(id.clone()).format()
}

/// `banger-<id>`
pub fn dm(id: &VmId) -> String {
    Name::Dm(id.clone()).format()
}

/// `banger:<id>`
pub fn nat_comment(id: &VmId) -> String {
    Name::NatComment(id.clone()).format()
}

/// `vm-<id>.lock`
pub fn vm_lock(id: &VmId) -> String {
    Name::VmLock(id.clone()).format()
}

/// `image-<name>.lock`
pub fn image_lock(image: &str) -> String {
    format!("image-{image}{LOCK_SUFFIX}")
}

/// `.tmp-<image>-<pid>`
pub fn staging(image: &str, pid: u32) -> String {
    Name::Staging {
        image: image.to_owned(),
        pid,
    }
    .format()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> VmId {
        VmId::parse("0123456789").unwrap()
    }

    #[test]
    fn every_name_parses_back_to_itself() {
        let names = [
            Name::Tap(id()),
            Name::PoolTap(0),
            Name::PoolTap(12),
            Name::Dm(id()),
            Name::DmBase(id()),
            Name::NatComment(id()),
            Name::VmLock(id()),
            Name::Staging {
                image: "my-image".into(),
                pid: 4242,
            },
        ];
        for name in names {
            let text = name.format();
            assert_eq!(Name::parse(&text), Some(name.clone()), "{text}");
        }
        assert_eq!(tap(&id()), "bg-0123456789");
        assert_eq!(dm(&id()), "banger-0123456789");
        assert_eq!(nat_comment(&id()), "banger:0123456789");
        assert_eq!(vm_lock(&id()), "vm-0123456789.lock");
        assert_eq!(staging("base", 7), ".tmp-base-7");
    }

    #[test]
    fn foreign_names_are_not_banger_s() {
        for text in [
            "eth0",
            "docker0",
            "bg-xyz",
            "bg-0123456789a",
            "bg-012345678",
            "bgpool",
            "bgpool01",
            "bgpool-1",
            "banger0",
            "banger-",
            "banger-0123456789-snap",
            "banger:",
            "banger:..",
            "vm-0123456789",
            "vm-.lock",
            "net.lock",
            ".tmp-base-",
            ".tmp--1",
            ".tmp-Base-1",
            ".tmp-base-x",
            "",
        ] {
            assert_eq!(Name::parse(text), None, "{text:?}");
        }
    }
}
