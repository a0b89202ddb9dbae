//! The seed drive: a small read-only disk per VM that banger's initramfs
//! reads at every boot, instead of banger writing into the VM's disks on
//! the host. It is a newc cpio (what busybox's `cpio -i` unpacks) padded to
//! whole sectors, holding banger's public key, the VM's SSH host key pair and
//! how the root is put together. It lives in the VM's private directory,
//! readable by root only: the host key's private half never reaches the
//! kernel command line or a world-readable file.

use std::io;

use super::cpio::CpioWriter;

/// Sector size of a virtio block device; the drive's length is a multiple.
const SECTOR: usize = 512;

/// How the initramfs makes `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootLayout {
    /// `/dev/vda` is the VM's own writable root disk.
    Disk,
    /// `/dev/vda` is the image's rootfs, read-only, under the upper disk
    /// `/dev/vdd` (formatted by the guest on its first boot).
    Overlay,
}

impl RootLayout {
    fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Overlay => "overlay",
        }
    }
}

/// What one VM's seed drive holds.
#[derive(Debug, Clone)]
pub struct Seed<'a> {
    /// `/etc/ssh/banger/authorized_keys` in the guest.
    pub authorized_keys: &'a str,
    /// The VM's Ed25519 host key, OpenSSH private key format.
    pub host_key: &'a str,
    /// Its public half, one `ssh-ed25519 AAAA…` line.
    pub host_key_pub: &'a str,
    pub root: RootLayout,
}

impl Seed<'_> {
    /// The drive's bytes: the archive, zero-padded to whole sectors.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut w = CpioWriter::new(Vec::new());
        w.file(
            "root",
            0o644,
            format!("{}\n", self.root.as_str()).as_bytes(),
        )?;
        w.file(
            "authorized_keys",
            0o644,
            line(self.authorized_keys).as_bytes(),
        )?;
        w.file("ssh_host_ed25519_key", 0o600, self.host_key.as_bytes())?;
        w.file(
            "ssh_host_ed25519_key.pub",
            0o644,
            line(self.host_key_pub).as_bytes(),
        )?;
        let mut bytes = w.finish()?;
        bytes.resize(bytes.len().div_ceil(SECTOR) * SECTOR, 0);
        Ok(bytes)
    }
}

fn line(text: &str) -> String {
    format!("{}\n", text.trim_end())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn busybox_style_cpio_unpacks_every_file_with_its_mode() {
        let seed = Seed {
            authorized_keys: "ssh-ed25519 AAAA banger",
            host_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
            host_key_pub: "ssh-ed25519 BBBB\n",
            root: RootLayout::Overlay,
        };
        let bytes = seed.to_bytes().unwrap();
        assert_eq!(bytes.len() % SECTOR, 0);
        let dir = tempfile::tempdir().unwrap();
        let drive = dir.path().join("seed");
        std::fs::write(&drive, &bytes).unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        // The padding after the trailer must not upset cpio, as on the
        // guest's block device.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && cpio -i --quiet < {}",
                out_dir.display(),
                drive.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
        assert_eq!(read("root"), "overlay\n");
        assert_eq!(read("authorized_keys"), "ssh-ed25519 AAAA banger\n");
        assert_eq!(read("ssh_host_ed25519_key.pub"), "ssh-ed25519 BBBB\n");
        assert!(read("ssh_host_ed25519_key").starts_with("-----BEGIN OPENSSH"));
        let mode = std::fs::metadata(out_dir.join("ssh_host_ed25519_key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
