//! The initramfs: busybox, the virtio/vsock/overlay modules the kernel
//! builds as modules, and `/init`, which reads the VM's seed drive (see
//! [`super::seed`]). Its first entry marks it as banger's, so an image
//! imported with an initrd from `image build` is recognised too.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::Path;
use std::process::Command;

use super::ImageError;
use super::cpio::CpioWriter;
use crate::host::run::run;

/// The script the kernel runs as PID 1 from the initramfs.
const INIT_SCRIPT: &str = include_str!("../../../scripts/guest/init");

/// Drivers the guest needs before it can mount its root disk and reach the host.
pub(crate) const GUEST_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "overlay",
];

/// The name of the initramfs's first entry: an initrd starting with it
/// runs banger's `/init`, which reads the seed drive and can mount an
/// overlay root. The number is the seed protocol's version.
pub(crate) const MARKER: &str = "banger-initramfs-seed-1";

/// Busybox applets `/init` calls, linked in `/bin`.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "sleep",
    "switch_root",
    "cpio",
    "mkdir",
    "cat",
    "cp",
    "chmod",
    "chroot",
    "dd",
    "od",
    "tr",
];

/// Whether the initrd at `path` is banger's initramfs (its first cpio entry
/// is [`MARKER`]): one header read, whatever the initrd's size.
pub fn is_banger_initramfs(path: &Path) -> bool {
    let mut head = [0u8; 110 + MARKER.len() + 1];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut head));
    read.is_ok()
        && head.starts_with(b"070701")
        && &head[110..110 + MARKER.len()] == MARKER.as_bytes()
        && head[110 + MARKER.len()] == 0
}

/// The module name of a `modules.dep` path: file name before `.ko`, `-` read as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The `modules.dep` paths to load, dependencies first, so that every module in
/// `wanted` is present; built-in ones are skipped. `Err` names a missing module.
pub(crate) fn load_order(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> Result<Vec<String>, String> {
    let builtin: HashSet<String> = modules_builtin.lines().map(module_name).collect();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let dep_paths = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(module_name(path), (path.to_string(), dep_paths));
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in wanted {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            continue;
        }
        visit(&name, &deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) -> Result<(), String> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let (path, dep_paths) = deps.get(name).ok_or_else(|| name.to_string())?;
    for dep in dep_paths {
        visit(&module_name(dep), deps, seen, order)?;
    }
    order.push(path.clone());
    Ok(())
}

/// A module's bytes, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz`.
fn read_module(path: &Path) -> Result<Vec<u8>, ImageError> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return fs::read(path).map_err(ImageError::io("read module", path)),
    };
    Ok(run(Command::new(tool).arg("-dc").arg(path))?.stdout)
}

/// Writes the initramfs to `out` as an uncompressed newc cpio.
///
/// `modules_dir` is the kernel's `lib/modules/<release>` after `depmod`;
/// `busybox` a static busybox binary. Returns the module names it loads, in order.
pub(crate) fn write_initramfs(
    out: &Path,
    modules_dir: &Path,
    busybox: &Path,
) -> Result<Vec<String>, ImageError> {
    let read_text = |name: &str| {
        let path = modules_dir.join(name);
        fs::read_to_string(&path).map_err(ImageError::io("read", path))
    };
    let order = load_order(
        &read_text("modules.dep")?,
        &read_text("modules.builtin")?,
        GUEST_MODULES,
    )
    .map_err(|module| ImageError::ModuleMissing {
        module,
        kernel_version: modules_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })?;
    let busybox_bytes = fs::read(busybox).map_err(ImageError::io("read", busybox))?;

    let file = File::create(out).map_err(ImageError::io("create", out))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    let names = add_entries(&mut cpio, out, &order, modules_dir, &busybox_bytes)?;
    cpio.finish().map_err(ImageError::io("write", out))?;
    Ok(names)
}

fn add_entries(
    w: &mut CpioWriter<BufWriter<File>>,
    out: &Path,
    order: &[String],
    modules_dir: &Path,
    busybox: &[u8],
) -> Result<Vec<String>, ImageError> {
    let write_err = || ImageError::io("write", out);
    w.file(MARKER, 0o644, b"").map_err(write_err())?;
    for dir in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/newroot",
        "/lib",
        "/lib/modules",
    ] {
        w.dir(dir, 0o755).map_err(write_err())?;
    }
    w.char_device("/dev/console", 0o600, 5, 1)
        .map_err(write_err())?;
    w.file("/bin/busybox", 0o755, busybox)
        .map_err(write_err())?;
    for applet in BUSYBOX_APPLETS {
        w.symlink(&format!("/bin/{applet}"), "busybox")
            .map_err(write_err())?;
    }
    w.file("/init", 0o755, INIT_SCRIPT.as_bytes())
        .map_err(write_err())?;
    let mut names = Vec::new();
    let mut load_list = String::new();
    for rel in order {
        let name = module_name(rel);
        let bytes = read_module(&modules_dir.join(rel))?;
        w.file(&format!("/lib/modules/{name}.ko"), 0o644, &bytes)
            .map_err(write_err())?;
        load_list.push_str(&format!("{name}.ko\n"));
        names.push(name);
    }
    w.file("/lib/modules/load-order", 0o644, load_list.as_bytes())
        .map_err(write_err())?;
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    #[test]
    fn dependencies_load_first_and_once() {
        let order = load_order(DEP, "", &["virtio_net", "virtio_mmio", "virtio_blk"]).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "virtio_mmio",
                "virtio_blk"
            ]
        );
        assert_eq!(order[6], "kernel/drivers/block/virtio_blk.ko.xz");
    }

    #[test]
    fn built_in_modules_are_skipped() {
        let builtin = "kernel/drivers/virtio/virtio_mmio.ko\n";
        let order = load_order(DEP, builtin, &["virtio_mmio"]).unwrap();
        assert!(order.is_empty(), "{order:?}");
    }

    #[test]
    fn a_missing_module_is_named() {
        assert_eq!(load_order(DEP, "", &["vsock"]).unwrap_err(), "vsock");
    }

    #[test]
    fn module_names_normalise_dashes_and_compression() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.zst"),
            "virtio_rng"
        );
    }

    #[test]
    fn the_marker_is_recognised_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let mut w = CpioWriter::new(Vec::new());
        w.file(MARKER, 0o644, b"").unwrap();
        w.dir("/bin", 0o755).unwrap();
        fs::write(&ours, w.finish().unwrap()).unwrap();
        assert!(is_banger_initramfs(&ours));
        let theirs = dir.path().join("theirs");
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file(&format!("{MARKER}x"), 0o644, b"").unwrap();
        fs::write(&theirs, w.finish().unwrap()).unwrap();
        assert!(!is_banger_initramfs(&theirs));
        fs::write(dir.path().join("short"), b"0707").unwrap();
        assert!(!is_banger_initramfs(&dir.path().join("short")));
        assert!(!is_banger_initramfs(&dir.path().join("missing")));
    }

    #[test]
    fn init_script_parses() {
        let out = Command::new("sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
