//! Copy-on-write clones of disk images: reflink where the filesystem can, sparse copy otherwise.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::FallocateFlags;
use nix::unistd::{Whence, lseek};

use super::{DiskError, TempFile, io_err};

/// Bytes read and written per step of a sparse copy.
const COPY_CHUNK: usize = 1 << 20;
/// The unit of holes: a filesystem block.
const BLOCK: usize = 4096;

pub use crate::state::model::CowStrategy;

mod sys {
    nix::ioctl_write_int!(ficlone, 0x94, 9);
}

/// `FICLONE`: makes `dst` share all of `src`'s extents.
fn ficlone(dst: &File, src: &File) -> Result<(), Errno> {
    // SAFETY: both descriptors are open for the duration of the call; the
    // argument is the source descriptor passed by value.
    unsafe { sys::ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) }.map(drop)
}

/// Clones `src` to `dst` and grows the clone to `size` bytes.
///
/// Uses `FICLONE` when the filesystem shares extents ([`CowStrategy::Reflink`]);
/// otherwise copies only the data extents, leaving holes where `src` has holes
/// or zeros ([`CowStrategy::Copy`]). The clone is built under a temporary name
/// beside `dst` and renamed over `dst` at the end, so a failure leaves no
/// partial file. `src` is only read. Fails with [`DiskError::Shrink`] if
/// `size` is smaller than `src`.
pub fn clone_file(src: &Path, dst: &Path, size: u64) -> Result<CowStrategy, DiskError> {
    clone_with(src, dst, size, true).map(|s| s.unwrap_or(CowStrategy::Copy))
}

/// Like [`clone_file`], but only by `FICLONE`: `false` (and nothing at
/// `dst`) when the filesystem cannot share extents. O(1) in the data.
pub fn reflink(src: &Path, dst: &Path, size: u64) -> Result<bool, DiskError> {
    clone_with(src, dst, size, false).map(|s| s.is_some())
}

/// Copies the first `len` bytes of `src` (a block device, such as a VM's
/// device-mapper snapshot) to a new sparse file `dst` of that length,
/// skipping chunks that are all zeros. Built under a temporary name and
/// renamed into place, so a failure leaves nothing at `dst`; `src` is only
/// read.
pub fn copy_device(src: &Path, dst: &Path, len: u64) -> Result<(), DiskError> {
    let source = File::open(src).map_err(io_err("open", src))?;
    let tmp = TempFile::beside(dst);
    let copy = tmp.create()?;
    sparse_copy(&source, src, &copy, &tmp.path, len)?;
    copy.set_len(len).map_err(io_err("resize", &tmp.path))?;
    drop(copy);
    tmp.persist(dst)
}

/// The clone of [`clone_file`]; `None` when `FICLONE` is unsupported and
/// `copy` is false.
fn clone_with(
    src: &Path,
    dst: &Path,
    size: u64,
    copy: bool,
) -> Result<Option<CowStrategy>, DiskError> {
    let source = File::open(src).map_err(io_err("open", src))?;
    let src_len = source.metadata().map_err(io_err("stat", src))?.len();
    if size < src_len {
        return Err(DiskError::Shrink {
            path: src.to_path_buf(),
            current: src_len,
            requested: size,
        });
    }
    let tmp = TempFile::beside(dst);
    let clone = tmp.create()?;
    let strategy = match ficlone(&clone, &source) {
        Ok(()) => CowStrategy::Reflink,
        Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::EPERM)
            if !copy =>
        {
            return Ok(None);
        }
        Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::EPERM) => {
            sparse_copy(&source, src, &clone, &tmp.path, src_len)?;
            CowStrategy::Copy
        }
        Err(source) => {
            return Err(DiskError::Ioctl {
                op: "FICLONE",
                path: tmp.path.clone(),
                source,
            });
        }
    };
    clone.set_len(size).map_err(io_err("resize", &tmp.path))?;
    drop(clone);
    tmp.persist(dst)?;
    Ok(Some(strategy))
}

/// Copies the data extents of `source` (`len` bytes) into the empty `dest`,
/// skipping blocks that are all zeros: they stay holes in `dest`.
fn sparse_copy(
    source: &File,
    src: &Path,
    dest: &File,
    dst: &Path,
    len: u64,
) -> Result<(), DiskError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    for extent in data_extents(source, len).map_err(io_err("find data extents in", src))? {
        for chunk in chunks(extent, COPY_CHUNK as u64) {
            let piece = &mut buf[..(chunk.end - chunk.start) as usize];
            source
                .read_exact_at(piece, chunk.start)
                .map_err(io_err("read", src))?;
            for run in runs(piece, false) {
                dest.write_all_at(&piece[run.clone()], chunk.start + run.start as u64)
                    .map_err(io_err("write", dst))?;
            }
        }
    }
    Ok(())
}

/// Turns the all-zero blocks of `path`'s data into holes (the file reads
/// the same): a filesystem image `mkfs` made, whose journal and tables are
/// mostly zeros, then clones and copies in a fraction of its length.
pub fn punch_zeros(path: &Path) -> Result<(), DiskError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut buf = vec![0u8; COPY_CHUNK];
    for extent in data_extents(&file, len).map_err(io_err("find data extents in", path))? {
        for chunk in chunks(extent, COPY_CHUNK as u64) {
            let piece = &mut buf[..(chunk.end - chunk.start) as usize];
            file.read_exact_at(piece, chunk.start)
                .map_err(io_err("read", path))?;
            for run in runs(piece, true) {
                let to_off = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                nix::fcntl::fallocate(
                    &file,
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    to_off(chunk.start + run.start as u64),
                    to_off(run.len() as u64),
                )
                .map_err(|source| DiskError::Ioctl {
                    op: "FALLOC_FL_PUNCH_HOLE",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
    }
    file.sync_all().map_err(io_err("flush", path))
}

/// The runs of whole [`BLOCK`]-sized blocks of `data` that are all zeros
/// (`zeros`) or hold data (`!zeros`); a short last block holds data.
fn runs(data: &[u8], zeros: bool) -> Vec<Range<usize>> {
    let mut found: Vec<Range<usize>> = Vec::new();
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let is_zero = block.len() == BLOCK && block.iter().all(|&b| b == 0);
        if is_zero != zeros {
            continue;
        }
        let start = i * BLOCK;
        let end = start + block.len();
        match found.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => found.push(start..end),
        }
    }
    found
}

/// The byte ranges of `file` (of length `len`) holding data, by
/// `SEEK_DATA`/`SEEK_HOLE`; the whole file if the filesystem cannot tell.
fn data_extents(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    let to_off =
        |n: u64| i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match lseek(file, to_off(pos)?, Whence::SeekData) {
            Ok(start) => start as u64,
            // No data after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL) if pos == 0 => return Ok(std::iter::once(0..len).collect()),
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            break;
        }
        let end = (lseek(file, to_off(start)?, Whence::SeekHole)? as u64).min(len);
        extents.push(start..end);
        pos = end;
    }
    Ok(extents)
}

/// Splits `range` into consecutive pieces of at most `size` bytes.
fn chunks(range: Range<u64>, size: u64) -> impl Iterator<Item = Range<u64>> {
    (range.start..range.end)
        .step_by(size as usize)
        .map(move |start| start..(start + size).min(range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_match_serde() {
        for s in [
            CowStrategy::DmSnapshot,
            CowStrategy::Reflink,
            CowStrategy::Overlay,
            CowStrategy::Copy,
        ] {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<CowStrategy>(&json).expect("parse"),
                s
            );
        }
        assert_eq!(CowStrategy::DmSnapshot.as_str(), "dm-snapshot");
    }

    #[test]
    fn chunks_cover_the_range_without_overlap() {
        let pieces: Vec<_> = chunks(10..35, 10).collect();
        assert_eq!(pieces, [10..20, 20..30, 30..35]);
        assert_eq!(chunks(5..5, 10).count(), 0);
    }

    #[test]
    fn data_extents_skip_holes() {
        let file = tempfile::tempfile().expect("temp file");
        let mib = 1 << 20;
        file.write_all_at(&[1u8; 4096], 0).expect("write");
        file.write_all_at(&[2u8; 4096], 4 * mib).expect("write");
        file.set_len(16 * mib).expect("grow");
        let extents = data_extents(&file, 16 * mib).expect("extents");
        let data: u64 = extents.iter().map(|e| e.end - e.start).sum();
        assert!(extents.iter().any(|e| e.contains(&0)), "{extents:?}");
        assert!(
            extents.iter().any(|e| e.contains(&(4 * mib))),
            "{extents:?}"
        );
        assert!(data < 2 * mib, "holes reported as data: {extents:?}");
        assert!(extents.iter().all(|e| e.end <= 16 * mib));
    }

    #[test]
    fn runs_split_blocks_into_zeros_and_data() {
        let mut data = vec![0u8; 4 * BLOCK + 10];
        data[BLOCK + 5] = 1;
        data[2 * BLOCK] = 1;
        assert_eq!(
            runs(&data, false),
            [BLOCK..3 * BLOCK, 4 * BLOCK..4 * BLOCK + 10]
        );
        assert_eq!(runs(&data, true), [0..BLOCK, 3 * BLOCK..4 * BLOCK]);
        assert!(runs(&[], true).is_empty());
    }

    #[test]
    fn zeros_become_holes_and_the_file_reads_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("image");
        let mib = 1 << 20;
        let mut data = vec![0u8; 3 * mib];
        data[5] = 7;
        data[2 * mib + 100] = 9;
        std::fs::write(&path, &data).expect("write");
        punch_zeros(&path).expect("punch");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        let file = File::open(&path).expect("open");
        let kept: u64 = data_extents(&file, data.len() as u64)
            .expect("extents")
            .iter()
            .map(|e| e.end - e.start)
            .sum();
        assert!(kept < mib as u64, "{kept} bytes of data left");
        // A sparse copy of it copies as little, and reads the same.
        let copy = dir.path().join("copy");
        clone_file(&path, &copy, data.len() as u64).expect("clone");
        assert_eq!(std::fs::read(&copy).expect("read"), data);
    }

    #[test]
    fn a_device_copy_keeps_the_data_and_skips_zeros() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (src, dst) = (dir.path().join("dev"), dir.path().join("copy"));
        let mib = 1 << 20;
        let file = File::create(&src).expect("create");
        file.write_all_at(b"head", 0).expect("write");
        file.write_all_at(&[0u8; 1 << 20], mib)
            .expect("write zeros");
        file.write_all_at(b"tail", 3 * mib).expect("write");
        copy_device(&src, &dst, 4 * mib).expect("copy");
        let copy = std::fs::read(&dst).expect("read");
        assert_eq!(copy.len() as u64, 4 * mib);
        assert_eq!(&copy[..4], b"head");
        assert_eq!(&copy[3 * mib as usize..][..4], b"tail");
        let blocks = std::os::unix::fs::MetadataExt::blocks(&dst.metadata().expect("stat"));
        assert!(
            blocks * 512 < 3 * mib,
            "zeros were written: {blocks} blocks"
        );
        assert!(copy_device(&dir.path().join("none"), &dst, 1).is_err());
    }

    #[test]
    fn data_extents_of_an_empty_file_are_empty() {
        let file = tempfile::tempfile().expect("temp file");
        assert!(data_extents(&file, 0).expect("extents").is_empty());
    }
}
