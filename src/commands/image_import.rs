//! `banger image import`: register an existing kernel and rootfs as an image.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;
use crate::cli::ImageImportArgs;
use crate::host::disk::{cow, ext4};
use crate::host::image::{self, Manifest, ManifestFile};
use crate::lifecycle::{Ctx, remove_dir_if_present};
use crate::state::model::{Image, now, rfc3339};

pub fn run(args: ImageImportArgs) -> Result<()> {
    check_file("--kernel", &args.kernel, Kind::Elf)?;
    check_file("--rootfs", &args.rootfs, Kind::Ext4)?;
    if let Some(initrd) = &args.initrd {
        check_file("--initrd", initrd, Kind::Any)?;
    }
    if let Some(seed) = &args.work_seed {
        check_file("--work-seed", seed, Kind::Ext4)?;
    }
    let ctx = Ctx::open()?;
    let _lock = ctx.lock_image(&args.name)?;
    if ctx.store.find_image(&args.name)?.is_some() {
        return Err(UsageError(format!(
            "an image named {:?} already exists (delete it first)",
            args.name
        ))
        .into());
    }
    let staging = staging_dir(&ctx, &args.name);
    let result = copy_in(&args, &staging);
    if let Err(err) = result {
        remove_dir_if_present(&staging)?;
        return Err(err);
    }
    let final_dir = ctx.paths.image_dir(&args.name);
    remove_dir_if_present(&final_dir)?;
    fs::rename(&staging, &final_dir)
        .with_context(|| format!("cannot move the image into {}", final_dir.display()))?;
    let image = Image {
        name: args.name.clone(),
        source: "import".into(),
        has_initrd: args.initrd.is_some(),
        is_default: args.default,
        created_at: now(),
    };
    if let Err(err) = ctx.store.insert_image(&image) {
        remove_dir_if_present(&final_dir)?;
        return Err(err.into());
    }
    eprintln!("imported image {}", args.name);
    Ok(())
}

/// A temp directory beside the final one; `gc` removes leftovers.
pub fn staging_dir(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.paths
        .images_dir()
        .join(format!(".tmp-{name}-{}", std::process::id()))
}

fn copy_in(args: &ImageImportArgs, dir: &Path) -> Result<()> {
    crate::state::paths::ensure_private_dir(dir)?;
    let copy = |src: &Path, name: &str| -> Result<()> {
        let size = fs::metadata(src)
            .with_context(|| format!("cannot read {}", src.display()))?
            .len();
        cow::clone_file(src, &dir.join(name), size)
            .with_context(|| format!("cannot copy {}", src.display()))?;
        Ok(())
    };
    copy(&args.kernel, "vmlinux")?;
    copy(&args.rootfs, "rootfs.ext4")?;
    if let Some(initrd) = &args.initrd {
        copy(initrd, "initrd.img")?;
    }
    match &args.work_seed {
        Some(seed) => copy(seed, "work-seed.ext4")?,
        None => ext4::make_work_seed(&dir.join("work-seed.ext4"))?,
    }
    write_manifest(dir)
}

/// `image.json` for an imported image: sizes and checksums of its files.
fn write_manifest(dir: &Path) -> Result<()> {
    let mut files = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, ManifestFile::of(&entry.path())?);
    }
    let kernel = fs::read(dir.join("vmlinux")).context("cannot read the imported kernel")?;
    let manifest = Manifest {
        kernel_version: image::kernel_release(&kernel).unwrap_or_else(|| "unknown".into()),
        suite: String::new(),
        packages: Vec::new(),
        files,
        agent_version: String::new(),
        agent_sha256: String::new(),
        created_at: rfc3339(now()),
    };
    manifest.write(&dir.join(image::MANIFEST))?;
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
