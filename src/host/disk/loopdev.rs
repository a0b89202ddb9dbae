//! Loop devices: attach a file as `/dev/loopN`, detach it, find devices by backing file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::{DiskError, io_err};

const LOOP_CONTROL: &str = "/dev/loop-control";
const SYS_BLOCK: &str = "/sys/block";
/// Attempts before giving up when concurrent attachers keep taking the free device.
const ATTACH_ATTEMPTS: u32 = 32;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`, the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

mod sys {
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, super::LoopConfig);
}

/// `LOOP_CTL_GET_FREE`: the number of a free loop device, created if needed.
fn get_free(control: &File) -> Result<u32, Errno> {
    // SAFETY: `control` is an open /dev/loop-control descriptor and this
    // request takes no argument.
    let n = unsafe { sys::loop_ctl_get_free(control.as_raw_fd()) }?;
    u32::try_from(n).map_err(|_| Errno::EINVAL)
}

/// `LOOP_CONFIGURE`: binds the backing descriptor in `config` to `dev`.
fn configure(dev: &File, config: &LoopConfig) -> Result<(), Errno> {
    // SAFETY: `dev` is an open loop device, `config` is a live, fully
    // initialised `struct loop_config` that the kernel only reads.
    unsafe { sys::loop_configure(dev.as_raw_fd(), config) }.map(drop)
}

/// `LOOP_CLR_FD`: unbinds `dev` from its backing file (deferred while others hold it open).
fn clear_fd(dev: &File) -> Result<(), Errno> {
    // SAFETY: `dev` is an open loop device and this request takes no argument.
    unsafe { sys::loop_clr_fd(dev.as_raw_fd()) }.map(drop)
}

fn loop_config(backing: &File, file: &Path, read_only: bool) -> Result<LoopConfig, DiskError> {
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| DiskError::Ioctl {
        op: "LOOP_CONFIGURE",
        path: file.to_path_buf(),
        source: Errno::EBADF,
    })?;
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = file.as_os_str().as_encoded_bytes();
    let len = bytes.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&bytes[..len]);
    Ok(LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: if read_only { LO_FLAGS_READ_ONLY } else { 0 },
            lo_file_name: name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    })
}

/// Attaches `file` to a free loop device and returns its path (`/dev/loopN`).
///
/// The device does not detach itself when closed (no autoclear): callers
/// record it and release it with [`detach`]. With `read_only`, writes to the
/// device fail with `EPERM`/`EROFS` and the file is opened read-only.
pub fn attach(file: &Path, read_only: bool) -> Result<PathBuf, DiskError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(io_err("open backing file", file))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
        .map_err(io_err("open", Path::new(LOOP_CONTROL)))?;
    let config = loop_config(&backing, file, read_only)?;
    for _ in 0..ATTACH_ATTEMPTS {
        let n = get_free(&control).map_err(|source| DiskError::Ioctl {
            op: "LOOP_CTL_GET_FREE",
            path: PathBuf::from(LOOP_CONTROL),
            source,
        })?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let dev_file = match OpenOptions::new().read(true).write(!read_only).open(&dev) {
            Ok(f) => f,
            // The node appears a moment after the control device creates it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("open", &dev)(e)),
        };
        match configure(&dev_file, &config) {
            Ok(()) => return Ok(dev),
            // Another process bound this device between GET_FREE and CONFIGURE.
            Err(Errno::EBUSY) => continue,
            Err(source) => {
                return Err(DiskError::Ioctl {
                    op: "LOOP_CONFIGURE",
                    path: dev,
                    source,
                });
            }
        }
    }
    Err(DiskError::LoopBusy {
        file: file.to_path_buf(),
        attempts: ATTACH_ATTEMPTS,
    })
}

/// Detaches loop device `dev`. Succeeds if the device node is gone or no
/// longer bound; if something still holds it open, the kernel detaches it
/// when the last holder closes it.
pub fn detach(dev: &Path) -> Result<(), DiskError> {
    let file = match File::open(dev) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
        Err(e) => return Err(io_err("open", dev)(e)),
    };
    match clear_fd(&file) {
        Ok(()) | Err(Errno::ENXIO) => Ok(()),
        Err(source) => Err(DiskError::Ioctl {
            op: "LOOP_CLR_FD",
            path: dev.to_path_buf(),
            source,
        }),
    }
}

/// The loop devices currently backed by `file`, in device order.
pub fn find_by_backing(file: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let wanted = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Ok(list()?
        .into_iter()
        .filter(|(_, backing)| *backing == wanted)
        .map(|(dev, _)| dev)
        .collect())
}

/// Every bound loop device with its backing file, in device order. A backing
/// file deleted since attaching is reported by its former path.
pub fn list() -> Result<Vec<(PathBuf, PathBuf)>, DiskError> {
    let sys_block = Path::new(SYS_BLOCK);
    let mut devices = Vec::new();
    for entry in fs::read_dir(sys_block).map_err(io_err("list", sys_block))? {
        let entry = entry.map_err(io_err("list", sys_block))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let backing_path = entry.path().join("loop/backing_file");
        let backing = match fs::read_to_string(&backing_path) {
            Ok(b) => b,
            // No `loop/` directory (or no file) means the device is unbound.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &backing_path)(e)),
        };
        let Some(backing) = parse_backing_file(&backing) else {
            continue;
        };
        devices.push((number, PathBuf::from(format!("/dev/loop{number}")), backing));
    }
    devices.sort_by_key(|(number, _, _)| *number);
    Ok(devices
        .into_iter()
        .map(|(_, dev, backing)| (dev, backing))
        .collect())
}

/// Parses the content of `/sys/block/loopN/loop/backing_file`.
fn parse_backing_file(content: &str) -> Option<PathBuf> {
    let line = content.strip_suffix('\n').unwrap_or(content);
    let path = line.strip_suffix(" (deleted)").unwrap_or(line);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn backing_file_parsing_strips_newline_and_deleted_marker() {
        assert_eq!(
            parse_backing_file("/var/lib/banger/images/a/rootfs.ext4\n"),
            Some(PathBuf::from("/var/lib/banger/images/a/rootfs.ext4"))
        );
        assert_eq!(
            parse_backing_file("/tmp/cow (deleted)\n"),
            Some(PathBuf::from("/tmp/cow"))
        );
        assert_eq!(parse_backing_file("\n"), None);
    }

    #[test]
    fn loop_config_carries_read_only_flag_and_truncated_name() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let long = PathBuf::from(format!("/{}", "x".repeat(100)));
        let config = loop_config(file.as_file(), &long, true).expect("config");
        assert_eq!(config.info.lo_flags, LO_FLAGS_READ_ONLY);
        assert_eq!(config.info.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(config.info.lo_file_name[0], b'/');
        let config = loop_config(file.as_file(), Path::new("/a"), false).expect("config");
        assert_eq!(config.info.lo_flags, 0);
    }
}
