//! Every name banger derives for the host objects it makes, formatted and
//! parsed in one place: `gc` deletes only what [`parse`]s here as banger's,
//! so a name can never drift between the code that makes an object and the
//! code that sweeps it.

use std::path::Path;

use super::ids::VmId;

/// A VM's own TAP: `bg-<id>` (13 bytes; interface names allow 15).
const TAP_PREFIX: &str = "bg-";
/// Idle TAPs kept warm by the sidecar: `bgpool<n>`.
pub const POOL_PREFIX: &str = "bgpool";
/// A VM's device-mapper devices: `banger-<home>-<id>` and
/// `banger-<home>-<id>-base` (`banger-<id>` before homes were named).
pub const DM_PREFIX: &str = "banger-";
const DM_BASE_SUFFIX: &str = "-base";
/// The comment on a VM's nftables rules: `banger:<home>:<id>`
/// (`banger:<id>` before homes were named).
const NAT_COMMENT_PREFIX: &str = "banger:";
/// Per-VM lock files under the run dir's `locks/`: `vm-<id>.lock`.
const VM_LOCK_PREFIX: &str = "vm-";
const LOCK_SUFFIX: &str = ".lock";
/// Image staging directories under `images/`: `.tmp-<name>-<pid>`.
const STAGING_PREFIX: &str = ".tmp-";

/// Which `BANGER_HOME` made a host object that all homes on a host share
/// (device-mapper devices, nftables rules): 8 hex digits of a hash of the
/// home's canonical path, so that one home never takes another's objects
/// for its own leftovers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HomeTag(String);

const HOME_TAG_LEN: usize = 8;

impl HomeTag {
    /// The tag of the home at `home` (however it is spelled).
    pub fn of(home: &Path) -> Self {
        let canonical = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_owned());
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = canonical
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0x811c_9dc5_u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
        Self(format!("{hash:08x}"))
    }

    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == HOME_TAG_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The interface alias that marks a home's TAPs (`banger:<home tag>`):
/// TAP names have no room for the tag, so ownership lives in the alias.
pub fn tap_owner(tag: &HomeTag) -> String {
    format!("banger:{tag}")
}

impl std::fmt::Display for HomeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The VM a shared host object belongs to, and the home that made it
/// (`None`: a name from before homes were named).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub home: Option<HomeTag>,
    pub id: VmId,
}

impl Owner {
    pub fn new(home: &HomeTag, id: &VmId) -> Self {
        Self {
            home: Some(home.clone()),
            id: id.clone(),
        }
    }

    /// The same VM's name from before homes were named.
    pub fn legacy(id: &VmId) -> Self {
        Self {
            home: None,
            id: id.clone(),
        }
    }

    /// `<home>-<id>` (or `<id>`), joined by `sep`.
    fn format(&self, sep: char) -> String {
        match &self.home {
            Some(home) => format!("{home}{sep}{}", self.id),
            None => self.id.to_string(),
        }
    }

    fn parse(text: &str, sep: char) -> Option<Self> {
        match text.split_once(sep) {
            Some((home, id)) => Some(Self {
                home: Some(HomeTag::parse(home)?),
                id: VmId::parse(id)?,
            }),
            None => VmId::parse(text).map(|id| Self::legacy(&id)),
        }
    }

    /// Whether the home `home` may take this object for its own: its tag
    /// says so, or it predates tags (and so cannot say which home made it;
    /// such names are swept as they always were).
    pub fn is_of(&self, home: &HomeTag) -> bool {
        self.home.as_ref().is_none_or(|tag| tag == home)
    }
}

/// A host object banger named, recognised from its name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// `bg-<id>`
    Tap(VmId),
    /// `bgpool<n>`
    PoolTap(usize),
    /// `banger-<home>-<id>` (or `banger-<id>`)
    Dm(Owner),
    /// `banger-<home>-<id>-base` (or `banger-<id>-base`)
    DmBase(Owner),
    /// `banger:<home>:<id>` (or `banger:<id>`)
    NatComment(Owner),
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
            Self::Dm(owner) => format!("{DM_PREFIX}{}", owner.format('-')),
            Self::DmBase(owner) => dm_base_of(&format!("{DM_PREFIX}{}", owner.format('-'))),
            Self::NatComment(owner) => nat_comment_for(&owner.format(':')),
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
                Some(owner) => Owner::parse(owner, '-').map(Self::DmBase),
                None => Owner::parse(rest, '-').map(Self::Dm),
            };
        }
        if let Some(key) = vm_of_nat_comment(text) {
            return Owner::parse(key, ':').map(Self::NatComment);
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
            Self::Tap(id) | Self::VmLock(id) => Some(id),
            Self::Dm(owner) | Self::DmBase(owner) | Self::NatComment(owner) => Some(&owner.id),
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

/// The comment on the nftables rules of the VM whose rule key is `key`
/// ([`nat_key`]; host tests use keys of their own).
pub fn nat_comment_for(key: &str) -> String {
    format!("{NAT_COMMENT_PREFIX}{key}")
}

/// The rule key a rule comment names, if it is banger's kind of comment.
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

/// `banger-<home>-<id>`
pub fn dm(home: &HomeTag, id: &VmId) -> String {
    Name::Dm(Owner::new(home, id)).format()
}

/// `banger-<id>`: the device of a VM started before homes were named.
pub fn legacy_dm(id: &VmId) -> String {
    Name::Dm(Owner::legacy(id)).format()
}

/// `<home>:<id>`: what tags a VM's nftables rules (`banger:<home>:<id>`).
pub fn nat_key(home: &HomeTag, id: &VmId) -> String {
    Owner::new(home, id).format(':')
}

/// The key of the rules of a VM started before homes were named: `<id>`.
pub fn legacy_nat_key(id: &VmId) -> String {
    Owner::legacy(id).format(':')
}

/// The owner of the rules whose key is `key`, if banger made that key.
pub fn owner_of_nat_key(key: &str) -> Option<Owner> {
    Owner::parse(key, ':')
}

/// `banger:<home>:<id>`
pub fn nat_comment(home: &HomeTag, id: &VmId) -> String {
    nat_comment_for(&nat_key(home, id))
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

    fn home() -> HomeTag {
        HomeTag::parse("00c0ffee").unwrap()
    }

    #[test]
    fn every_name_parses_back_to_itself() {
        let names = [
            Name::Tap(id()),
            Name::PoolTap(0),
            Name::PoolTap(12),
            Name::Dm(Owner::new(&home(), &id())),
            Name::DmBase(Owner::new(&home(), &id())),
            Name::NatComment(Owner::new(&home(), &id())),
            Name::Dm(Owner::legacy(&id())),
            Name::DmBase(Owner::legacy(&id())),
            Name::NatComment(Owner::legacy(&id())),
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
        assert_eq!(dm(&home(), &id()), "banger-00c0ffee-0123456789");
        assert_eq!(legacy_dm(&id()), "banger-0123456789");
        assert_eq!(nat_comment(&home(), &id()), "banger:00c0ffee:0123456789");
        assert_eq!(legacy_nat_key(&id()), "0123456789");
        assert_eq!(vm_lock(&id()), "vm-0123456789.lock");
        assert_eq!(staging("base", 7), ".tmp-base-7");
    }

    #[test]
    fn homes_are_told_apart_and_spellings_of_one_home_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::os::unix::fs::symlink(&a, tmp.path().join("link")).unwrap();
        assert_ne!(HomeTag::of(&a), HomeTag::of(&b));
        assert_eq!(HomeTag::of(&a), HomeTag::of(&tmp.path().join("link")));
        assert_eq!(HomeTag::of(&a), HomeTag::of(&a.join("../a")));
        let mine = Owner::new(&HomeTag::of(&a), &id());
        assert!(mine.is_of(&HomeTag::of(&a)));
        assert!(!mine.is_of(&HomeTag::of(&b)));
        assert!(Owner::legacy(&id()).is_of(&HomeTag::of(&b)));
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
            "banger:00c0ffee:..",
            "banger:00C0FFEE:0123456789",
            "banger-00c0ffe-0123456789",
            "banger-00c0ffee-0123456789-x",
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
