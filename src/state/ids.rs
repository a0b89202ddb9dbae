//! A VM's identifiers as types: `VmId` (10 lowercase hex digits, part of
//! every derived name) and `VmName` (a DNS label chosen by the user).

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::parse;

/// Length of a VM id: short enough for interface names (`bg-<id>` ≤ 15).
pub const ID_LEN: usize = 10;

/// A VM's id: exactly [`ID_LEN`] lowercase hex digits, so joining it into a
/// path or an interface name can never escape or collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(String);

impl VmId {
    /// Accepts only the 10-hex-digit form.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(text.to_owned()))
    }

    /// A fresh random id.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's randomness for every instance.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self(format!("{:010x}", hasher.finish() & 0xff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for VmId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl ToSql for VmId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.as_str()))
    }
}

impl FromSql for VmId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| {
            FromSqlError::Other(format!("{text:?} is not a banger VM id (10 hex digits)").into())
        })
    }
}

/// A VM's name: a DNS label (`[a-z0-9-]`, at most 63, no leading or
/// trailing hyphen), unique among VMs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmName(String);

impl VmName {
    /// Accepts only a valid name; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, parse::ParseError> {
        parse::vm_name(text).map(Self)
    }

    /// A name banger made up from its own word lists (DNS labels only).
    pub(crate) fn generated(text: String) -> Self {
        debug_assert!(parse::vm_name(&text).is_ok(), "{text}");
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VmName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for VmName {
    type Err = parse::ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl serde::Serialize for VmName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl ToSql for VmName {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.as_str()))
    }
}

impl FromSql for VmName {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).map_err(|e| FromSqlError::Other(format!("VM name {text:?}: {e}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ten_hex_digits_and_nothing_else() {
        let id = VmId::random();
        assert_eq!(VmId::parse(id.as_str()), Some(id.clone()));
        assert!(format!("bg-{id}").len() <= 15);
        for bad in [
            "",
            "..",
            "0123456789a",
            "012345678",
            "ABCDEF0123",
            "01234/6789",
            "012345678g",
        ] {
            assert_eq!(VmId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(VmName::parse("dev-1").unwrap().as_str(), "dev-1");
        assert!(VmName::parse("../x").is_err());
        assert!(VmName::parse("").is_err());
    }
}
