//! `banger image import`: register an existing kernel and rootfs as an image.

use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use super::{Global, UsageError};
use crate::cli::ImageImportArgs;
use crate::ops::images;

pub fn run(args: ImageImportArgs, global: &Global) -> Result<()> {
    check_file("--kernel", &args.kernel, Kind::Elf)?;
    check_file("--rootfs", &args.rootfs, Kind::Ext4)?;
    if let Some(initrd) = &args.initrd {
        check_file("--initrd", initrd, Kind::Any)?;
    }
    if let Some(seed) = &args.work_seed {
        check_file("--work-seed", seed, Kind::Ext4)?;
    }
    let ctx = global.ctx()?;
    let files = images::ImportFiles {
        kernel: args.kernel.clone(),
        rootfs: args.rootfs.clone(),
        initrd: args.initrd.clone(),
        work_seed: args.work_seed.clone(),
    };
    images::import(&ctx, &args.name, &files, args.default)?;
    eprintln!("imported image {}", args.name);
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Elf,
    Ext4,
    Any,
}

/// Refuses directories, devices, missing files and wrong formats, naming the flag and path.
fn check_file(flag: &str, path: &Path, kind: Kind) -> Result<()> {
    let usage = |why: &str| -> anyhow::Error {
        UsageError(format!("{flag} {}: {why}", path.display())).into()
    };
    let meta = fs::metadata(path).map_err(|e| usage(&e.to_string()))?;
    if !meta.is_file() {
        return Err(usage("not a regular file"));
    }
    if meta.len() == 0 {
        return Err(usage("the file is empty"));
    }
    let mut head = vec![0u8; 0x440];
    let mut file = fs::File::open(path).map_err(|e| usage(&e.to_string()))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| usage(&e.to_string()))?;
    head.truncate(n);
    match kind {
        Kind::Elf if !head.starts_with(b"\x7fELF") => Err(usage(
            "not an ELF kernel (Firecracker needs an uncompressed vmlinux, not a bzImage)",
        )),
        Kind::Ext4 if head.get(0x438..0x43a) != Some(&[0x53, 0xef]) => {
            Err(usage("not an ext2/3/4 filesystem image"))
        }
        _ => Ok(()),
    }
}

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
