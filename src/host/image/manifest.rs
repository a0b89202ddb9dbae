//! `image.json`: what an image was built from, and the size and SHA-256 of each file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use crate::state::atomic;

/// The contents of an image's `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`; `unknown` for a user kernel without a banner.
    pub kernel_version: String,
    /// Debian suite of the rootfs (absent for an imported image).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suite: String,
    /// Packages passed to debootstrap's `--include` (the base set and the user's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Every other file of the image directory by name.
    pub files: BTreeMap<String, ManifestFile>,
    /// Version of the banger that built the image and its agent (absent
    /// for an imported image, which brings its own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// SHA-256 of the installed `banger-agent` binary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_sha256: String,
    /// When the build finished, RFC 3339 in UTC.
    pub created_at: String,
}

/// Size and checksum of one image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub size: u64,
    pub sha256: String,
}

impl ManifestFile {
    /// Measures the file at `path`.
    pub fn of(path: &Path) -> Result<Self, ImageError> {
        let mut file = File::open(path).map_err(ImageError::io("open", path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io("read", path)(e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Self {
            size,
            sha256: hex(&hasher.finalize()),
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest `image.json` read; a real one is well under a kilobyte.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

impl Manifest {
    /// Reads `image.json` at `path` (a small regular file, or an error).
    pub fn read(path: &Path) -> Result<Self, ImageError> {
        let text = crate::state::files::read_bounded(path, MAX_MANIFEST_BYTES)
            .map_err(ImageError::io("read", path))?;
        serde_json::from_slice(&text).map_err(|source| ImageError::Manifest {
            op: "parse",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the manifest to `path` as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<(), ImageError> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| ImageError::Manifest {
            op: "serialize",
            path: path.to_path_buf(),
            source,
        })?;
        text.push(b'\n');
        Ok(atomic::write(path, &text, 0o644)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn measures_a_file() {
        let path = std::env::temp_dir().join(format!("banger-manifest-{}", std::process::id()));
        fs::write(&path, b"abc").unwrap();
        let file = ManifestFile::of(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(file.size, 3);
        assert_eq!(
            file.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_corrupt_manifest_is_named_in_the_error() {
        let path = std::env::temp_dir().join(format!("banger-manifest-bad-{}", std::process::id()));
        fs::write(&path, b"{not json").unwrap();
        let err = Manifest::read(&path).unwrap_err();
        fs::remove_file(&path).unwrap();
        assert_eq!(
            err.to_string(),
            format!("parse image manifest {}", path.display())
        );
    }

    #[test]
    fn round_trips_through_json() {
        let manifest = Manifest {
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            suite: "bookworm".into(),
            packages: vec!["systemd-sysv".into()],
            files: BTreeMap::from([(
                "vmlinux".to_string(),
                ManifestFile {
                    size: 1,
                    sha256: "00".into(),
                },
            )]),
            agent_version: "0.1.0".into(),
            agent_sha256: "11".into(),
            created_at: "2026-11-26T15:00:00Z".into(),
        };
        let path =
            std::env::temp_dir().join(format!("banger-manifest-json-{}", std::process::id()));
        manifest.write(&path).unwrap();
        let back = Manifest::read(&path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(json["files"]["vmlinux"]["sha256"], "00");
    }
}
