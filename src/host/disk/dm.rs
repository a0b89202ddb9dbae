//! Device-mapper snapshots of a root disk, driven through `dmsetup`.
//!
//! A VM's root disk is `/dev/mapper/<name>`, a persistent snapshot
//! (`snapshot <origin> <cow> P 8`, 4 KiB chunks) whose writes land in a COW
//! device and whose reads fall through to a read-only origin. When the VM asks
//! for a disk larger than the base image, the origin is a second device,
//! `<name>-base`, that maps the base image linearly and pads it with zeros:
//!
//! ```text
//! <name>-base: 0 <base> linear <base_dev> 0
//!              <base> <total-base> zero
//! <name>:      0 <total> snapshot /dev/mapper/<name>-base <cow_dev> P 8
//! ```
//!
//! Both names derive from `<name>` alone, so a caller records `<name>` before
//! [`create_snapshot`] and [`remove`] later releases whichever of the two exist.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{DiskError, io_err};
use crate::host::run::{self, RunError};

const DMSETUP: &str = "dmsetup";
const CONTROL: &str = "/dev/mapper/control";
const SECTOR: u64 = 512;
/// Snapshot chunk size in sectors (4 KiB), the page size guests write in.
const CHUNK_SECTORS: u64 = 8;

mod sys {
    nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
}

/// Whether this host can create device-mapper devices: the control node
/// exists and `dmsetup` talks to the kernel driver.
pub fn available() -> bool {
    Path::new(CONTROL).exists() && run::run(Command::new(DMSETUP).arg("version")).is_ok()
}

/// The name of the zero-padded origin device that goes with snapshot `name`.
pub use crate::state::layout::dm_base_of as base_name;

/// The device node of device-mapper device `name`.
pub fn device_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// The table of `<name>-base`: `base_dev` mapped linearly for its
/// `base_sectors`, then zeros up to `total_sectors`.
pub fn padded_base_table(base_dev: &Path, base_sectors: u64, total_sectors: u64) -> String {
    format!(
        "0 {base_sectors} linear {} 0\n{base_sectors} {} zero\n",
        base_dev.display(),
        total_sectors - base_sectors
    )
}

/// The table of snapshot `<name>`: `total_sectors` of `origin` with writes going to `cow_dev`.
pub fn snapshot_table(origin: &Path, cow_dev: &Path, total_sectors: u64) -> String {
    format!(
        "0 {total_sectors} snapshot {} {} P {CHUNK_SECTORS}\n",
        origin.display(),
        cow_dev.display()
    )
}

/// Creates `/dev/mapper/<name>`, a persistent snapshot of `base_dev` with its
/// writes in `cow_dev`, `total_bytes` long (rounded up to whole sectors).
///
/// When `total_bytes` exceeds the base device, `<name>-base` is created first
/// as the zero-padded origin. Fails with [`DiskError::Shrink`] if
/// `total_bytes` is smaller than the base device. On failure, whatever this
/// call created is removed again.
pub fn create_snapshot(
    name: &str,
    base_dev: &Path,
    cow_dev: &Path,
    total_bytes: u64,
) -> Result<PathBuf, DiskError> {
    create(name, base_dev, cow_dev, total_bytes, false)
}

/// Like [`create_snapshot`], with both devices' tables loaded read-only
/// (`dmsetup create --readonly`): for reading a stopped VM's root disk
/// without a write reaching its COW device.
pub fn create_read_only_snapshot(
    name: &str,
    base_dev: &Path,
    cow_dev: &Path,
    total_bytes: u64,
) -> Result<PathBuf, DiskError> {
    create(name, base_dev, cow_dev, total_bytes, true)
}

fn create(
    name: &str,
    base_dev: &Path,
    cow_dev: &Path,
    total_bytes: u64,
    read_only: bool,
) -> Result<PathBuf, DiskError> {
    let base_sectors = device_bytes(base_dev)? / SECTOR;
    let total_sectors = total_bytes.div_ceil(SECTOR);
    if total_sectors < base_sectors {
        return Err(DiskError::Shrink {
            path: base_dev.to_path_buf(),
            current: base_sectors * SECTOR,
            requested: total_bytes,
        });
    }
    let created = if total_sectors > base_sectors {
        let base = base_name(name);
        dmsetup_create(
            &base,
            &padded_base_table(base_dev, base_sectors, total_sectors),
            read_only,
        )
        .and_then(|()| {
            snapshot_with_origin(name, &device_path(&base), cow_dev, total_sectors, read_only)
        })
    } else {
        snapshot_with_origin(name, base_dev, cow_dev, total_sectors, read_only)
    };
    if created.is_err() {
        // Best effort: the creation error is the one worth reporting.
        let _ = remove(name);
    }
    created
}

fn snapshot_with_origin(
    name: &str,
    origin: &Path,
    cow_dev: &Path,
    total_sectors: u64,
    read_only: bool,
) -> Result<PathBuf, DiskError> {
    dmsetup_create(
        name,
        &snapshot_table(origin, cow_dev, total_sectors),
        read_only,
    )?;
    Ok(device_path(name))
}

/// Removes snapshot `name`, then its padded origin `<name>-base`. Either may
/// already be gone; on a host without device-mapper there is nothing to do.
pub fn remove(name: &str) -> Result<(), DiskError> {
    if !Path::new(CONTROL).exists() {
        return Ok(());
    }
    remove_one(name)?;
    remove_one(&base_name(name))
}

/// Names of all device-mapper devices starting with `prefix`, sorted, so
/// that each snapshot comes before its `-base` origin. Empty on a host
/// without device-mapper.
pub fn list(prefix: &str) -> Result<Vec<String>, DiskError> {
    if !Path::new(CONTROL).exists() {
        return Ok(Vec::new());
    }
    let output = run::run(&mut info_names())?;
    Ok(parse_names(
        &String::from_utf8_lossy(&output.stdout),
        prefix,
    ))
}

/// Parses `dmsetup info -c --noheadings -o name` output.
fn parse_names(output: &str, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "No devices found" && l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// `dmsetup info` listing device names only, one a line.
fn info_names() -> Command {
    let mut cmd = Command::new(DMSETUP);
    cmd.args(["info", "-c", "--noheadings", "-o", "name"]);
    cmd
}

fn exists(name: &str) -> Result<bool, DiskError> {
    let output = run::output(info_names().arg(name), None)?;
    Ok(output.status.success())
}

fn remove_one(name: &str) -> Result<(), DiskError> {
    if !exists(name)? {
        return Ok(());
    }
    let mut cmd = Command::new(DMSETUP);
    cmd.args(["remove", "--retry", name]);
    let output = run::output(&mut cmd, None)?;
    // A concurrent remover may have won the race; only a device that is
    // still there is a failure.
    if output.status.success() || !exists(name)? {
        return Ok(());
    }
    Err(RunError::failed(&cmd, &output).into())
}

fn dmsetup_create(name: &str, table: &str, read_only: bool) -> Result<(), DiskError> {
    let mut cmd = Command::new(DMSETUP);
    cmd.args(["create", "--verifyudev"]);
    if read_only {
        cmd.arg("--readonly");
    }
    run::run_with_input(cmd.arg(name), table.as_bytes())?;
    Ok(())
}

/// Size in bytes of block device `dev`.
fn device_bytes(dev: &Path) -> Result<u64, DiskError> {
    let file = File::open(dev).map_err(io_err("open", dev))?;
    let mut size = 0u64;
    // SAFETY: `file` is an open descriptor and `size` is a live u64 the
    // kernel writes the device size into.
    unsafe { sys::blk_get_size64(file.as_raw_fd(), &mut size) }.map_err(|source| {
        DiskError::Ioctl {
            op: "BLKGETSIZE64",
            path: dev.to_path_buf(),
            source,
        }
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_base_maps_the_image_then_zeros() {
        assert_eq!(
            padded_base_table(Path::new("/dev/loop3"), 2048, 8192),
            "0 2048 linear /dev/loop3 0\n2048 6144 zero\n"
        );
    }

    #[test]
    fn snapshot_is_persistent_with_4k_chunks() {
        assert_eq!(
            snapshot_table(
                &device_path(&base_name("banger-abc")),
                Path::new("/dev/loop4"),
                8192
            ),
            "0 8192 snapshot /dev/mapper/banger-abc-base /dev/loop4 P 8\n"
        );
    }

    #[test]
    fn names_are_filtered_by_prefix_and_snapshot_sorts_before_its_base() {
        let out = "banger-b-base\nother\nbanger-b\nbanger-a\n";
        assert_eq!(
            parse_names(out, "banger-"),
            ["banger-a", "banger-b", "banger-b-base"]
        );
        assert!(parse_names("No devices found\n", "").is_empty());
    }
}
