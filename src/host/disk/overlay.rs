//! The merged view of an overlay root — an image's rootfs under a VM's
//! upper disk — written out as a new ext4 image, neither disk written.
//!
//! The mounts live in a mount namespace of their own (`unshare --mount`)
//! whose only process is the shell that makes them: both disks are
//! loop-mounted read-only (loop devices that detach themselves when
//! unmounted), the overlay is mounted read-only with the upper layer as its
//! top lower directory (an overlay of lower directories only is read-only
//! and still honours the upper layer's whiteouts and opaque directories),
//! and `mkfs.ext4 -d` copies the merged tree. However the shell ends, even
//! killed, the kernel unmounts all of it with the namespace; nothing is
//! mounted where other processes can see it. An upper disk whose journal
//! needs replaying is read through a replayed sparse copy.

use std::path::Path;
use std::process::Command;

use super::{DiskError, TempFile, io_err};
use crate::host::run;

/// Mounts the layers on a tmpfs over the scratch directory (so the mount
/// points are gone with the namespace too), then writes the merged tree.
/// Paths are positional arguments, never parsed as shell text; the layers
/// are named relative to the scratch directory, so no path reaches the
/// overlay's option string, where `:` and `,` would split it.
const MERGE_SCRIPT: &str = r#"set -eu
scratch=$1 lower=$2 upper=$3 out=$4 label=$5
mount -t tmpfs -o mode=0700 banger-merge "$scratch"
cd "$scratch"
mkdir lower upper merged
mount -t ext4 -o ro,loop "$lower" lower
if ! mount -t ext4 -o ro,loop "$upper" upper; then
    echo "cannot mount the upper disk $upper read-only (a guest that did not shut down cleanly leaves its journal to replay)" >&2
    exit 1
fi
if [ ! -d upper/root ]; then
    echo "the upper disk $upper holds no overlay layer (no /root directory)" >&2
    exit 1
fi
mount -t overlay banger-merge -o ro,lowerdir=upper/root:lower merged
mkfs.ext4 -q -F -m 0 -L "$label" -d merged "$out"
umount merged upper lower
"#;

/// Writes the tree the guest saw — `upper`'s layer (its `/root`) over the
/// root filesystem `lower` — to a new ext4 image `out` of `size_bytes`,
/// labelled `label`, whose root directory has `lower`'s mode and belongs to
/// root. Both inputs are only read; `out` appears only once complete.
pub fn merge_to_ext4(
    lower: &Path,
    upper: &Path,
    out: &Path,
    size_bytes: u64,
    label: &str,
) -> Result<(), DiskError> {
    let out = std::path::absolute(out).map_err(io_err("resolve", out))?;
    let scratch = TempFile::beside(&out);
    std::fs::create_dir(&scratch.path).map_err(io_err("create", &scratch.path))?;
    let image = TempFile::beside(&out);
    image
        .create()?
        .set_len(size_bytes)
        .map_err(io_err("set the size of", &image.path))?;
    let absolute = |path: &Path| std::path::absolute(path).map_err(io_err("resolve", path));
    // A guest's upper disk is never unmounted at its shutdown (it is mounted
    // before the switch to the overlay root): its journal is replayed in a
    // sparse copy, never in the disk itself.
    let replayed = TempFile::beside(&out);
    let upper = if super::ext4::needs_recovery(upper)? {
        let len = std::fs::metadata(upper)
            .map_err(io_err("stat", upper))?
            .len();
        super::cow::clone_file(upper, &replayed.path, len)?;
        super::ext4::check(&replayed.path)?;
        replayed.path.clone()
    } else {
        absolute(upper)?
    };
    run::run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(MERGE_SCRIPT)
            .arg("banger-merge")
            .arg(&scratch.path)
            .arg(absolute(lower)?)
            .arg(&upper)
            .arg(&image.path)
            .arg(label),
    )?;
    let root_mode = super::ext4::stat_mode(lower, "/")?;
    super::ext4::set_root_owner_and_mode(&image.path, root_mode)?;
    image.persist(&out)
}
