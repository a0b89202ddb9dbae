//! ext4 images built, grown, read and written with e2fsprogs, without mounting.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use super::{DiskError, TempFile, io_err};
use crate::host::run::{self, RunError};

const MKFS: &str = "mkfs.ext4";
const E2FSCK: &str = "e2fsck";
const RESIZE2FS: &str = "resize2fs";
const DEBUGFS: &str = "debugfs";
const DUMPE2FS: &str = "dumpe2fs";
/// The ext2/3/4 superblock magic number, at byte 0x438.
const EXT4_MAGIC: [u8; 2] = [0x53, 0xef];

/// Size of a work seed; VMs grow their clone to `--work-size`.
const WORK_SEED_BYTES: u64 = 64 << 20;
/// Filesystem label of every work disk.
pub const WORK_LABEL: &str = "banger-work";

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// The skeleton of `/root` in every work seed, parents first: the path, the
/// contents (`None` for a directory) and the mode.
const WORK_SKELETON: &[(&str, Option<&str>, u32)] = &[
    ("", None, 0o700),
    (".bashrc", Some(BASHRC), 0o644),
    (".profile", Some(PROFILE), 0o644),
    (".ssh", None, 0o700),
    (".ssh/authorized_keys", Some(""), 0o600),
];

const BASHRC: &str = r#"# ~/.bashrc: executed by bash for interactive non-login shells.
[ -z "$PS1" ] && return
HISTCONTROL=ignoredups:ignorespace
shopt -s histappend checkwinsize
PS1='\u@\h:\w\$ '
alias ls='ls --color=auto'
alias ll='ls -l'
"#;

const PROFILE: &str = r#"# ~/.profile: executed by Bourne-compatible login shells.
if [ "$BASH" ] && [ -f ~/.bashrc ]; then
  . ~/.bashrc
fi
mesg n 2> /dev/null || true
"#;

/// Builds an ext4 image at `out`, `size_bytes` long, labelled `label`, whose
/// root holds the contents of `dir` (owners and modes copied; the root
/// directory takes `dir`'s mode and belongs to root). Replaces `out` only once the image is complete.
pub fn mkfs_from_dir(
    dir: &Path,
    out: &Path,
    size_bytes: u64,
    label: &str,
) -> Result<(), DiskError> {
    let tmp = TempFile::beside(out);
    tmp.create()?
        .set_len(size_bytes)
        .map_err(io_err("set the size of", &tmp.path))?;
    run::run(
        Command::new(MKFS)
            .args(["-q", "-F", "-m", "0", "-L", label, "-d"])
            .arg(dir)
            .arg(&tmp.path),
    )?;
    // mke2fs copies the modes of everything below `dir` but not of `dir` itself.
    let dir_mode = fs::metadata(dir).map_err(io_err("stat", dir))?.mode();
    set_root_owner_and_mode(&tmp.path, dir_mode)?;
    // Its journal and tables are mostly zeros: holes, so that every clone
    // copies only what the filesystem holds.
    super::cow::punch_zeros(&tmp.path)?;
    tmp.persist(out)
}

/// Gives the root directory of `image` the permission bits of `mode`,
/// owned by root.
pub(super) fn set_root_owner_and_mode(image: &Path, mode: u32) -> Result<(), DiskError> {
    let mut script = String::new();
    push_owner_and_mode(&mut script, "/", S_IFDIR | (mode & 0o7777));
    debugfs(image, &script, true).map(drop)
}

/// Grows `image` and its filesystem to `size_bytes`: extends the file,
/// checks the filesystem (`e2fsck -fp`, as `resize2fs` requires) and resizes
/// it to fill the file. Fails with [`DiskError::Shrink`] if the image is larger.
pub fn grow(image: &Path, size_bytes: u64) -> Result<(), DiskError> {
    let file = OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io_err("open", image))?;
    let current = file.metadata().map_err(io_err("stat", image))?.len();
    if size_bytes < current {
        return Err(DiskError::Shrink {
            path: image.to_path_buf(),
            current,
            requested: size_bytes,
        });
    }
    file.set_len(size_bytes).map_err(io_err("extend", image))?;
    drop(file);
    check(image)?;
    match run::run(Command::new(RESIZE2FS).arg(image)) {
        Ok(_) => Ok(()),
        Err(err) => Err(out_of_space(image, size_bytes, err)),
    }
}

/// `e2fsck -fp`: checks `image` and fixes what can be fixed unattended,
/// first replaying the journal a guest that did not unmount it left, so that
/// what is written into it next lands on the filesystem the guest saw.
pub fn check(image: &Path) -> Result<(), DiskError> {
    let mut e2fsck = Command::new(E2FSCK);
    e2fsck.arg("-fp").arg(image);
    let check = run::output(&mut e2fsck, None)?;
    // 0: clean, 1: errors fixed, 2: fixed (reboot advised, moot for an image).
    if !matches!(check.status.code(), Some(0..=2)) {
        return Err(RunError::failed(&e2fsck, &check).into());
    }
    Ok(())
}

/// Shrinks `image` and its filesystem to the least that holds its content:
/// checks it (`e2fsck -fp`), shrinks the filesystem (`resize2fs -M`) and
/// truncates the file to it. Returns the new size in bytes.
pub fn shrink_to_fit(image: &Path) -> Result<u64, DiskError> {
    check(image)?;
    run::run(Command::new(RESIZE2FS).arg("-M").arg(image))?;
    let size = geometry(image)?.bytes();
    OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|file| file.set_len(size))
        .map_err(io_err("truncate", image))?;
    Ok(size)
}

/// Whether `path` holds an ext2/3/4 filesystem by its superblock's magic
/// number; a blank (all zeros, or too short) file does not.
pub fn is_ext4(path: &Path) -> Result<bool, DiskError> {
    let file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 2];
    match std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0x438) {
        Ok(()) => Ok(magic == EXT4_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Whether `image`'s journal holds what a guest wrote and never checkpointed
/// (feature `needs_recovery`: the guest did not unmount it): a read-only
/// mount cannot replay it, and reads past it see stale metadata.
pub fn needs_recovery(image: &Path) -> Result<bool, DiskError> {
    let output = run::run(Command::new(DUMPE2FS).arg("-h").arg(image))?;
    Ok(String::from_utf8_lossy(&output.stdout).lines().any(|line| {
        line.strip_prefix("Filesystem features:")
            .is_some_and(|features| features.split_whitespace().any(|f| f == "needs_recovery"))
    }))
}

/// The bytes of file data and directories `image`'s filesystem holds: its
/// blocks in use, less its inode tables and journal. An upper bound of what
/// a copy of its tree needs.
pub fn content_bytes(image: &Path) -> Result<u64, DiskError> {
    let g = geometry(image)?;
    let used = g.blocks.saturating_sub(g.free_blocks) * g.block_size;
    Ok(used.saturating_sub(g.inodes * g.inode_size + g.journal_bytes))
}

/// The size of a root filesystem holding `content` bytes: `at_least` when
/// that leaves a tenth of the content spare besides a sixteenth of the size
/// (more than a new ext4's journal and inode tables take), else what
/// `image build` gives such content (1.3 times it plus 256 MiB, in whole
/// MiB), never less than `at_least`.
pub fn rootfs_size_for(content: u64, at_least: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    if content + content / 10 + at_least / 16 <= at_least {
        return at_least;
    }
    at_least.max((content + content * 3 / 10 + 256 * MIB).div_ceil(MIB) * MIB)
}

/// What `dumpe2fs -h` says about a filesystem's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Geometry {
    block_size: u64,
    blocks: u64,
    free_blocks: u64,
    inodes: u64,
    inode_size: u64,
    journal_bytes: u64,
}

impl Geometry {
    fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

fn geometry(image: &Path) -> Result<Geometry, DiskError> {
    let output = run::run(Command::new(DUMPE2FS).arg("-h").arg(image))?;
    parse_geometry(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| DiskError::Debugfs {
        image: image.to_path_buf(),
        message: "dumpe2fs -h printed no block count and size".into(),
    })
}

/// Parses the superblock fields of `dumpe2fs -h`; `None` without a block
/// count and size.
fn parse_geometry(text: &str) -> Option<Geometry> {
    let mut g = Geometry::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let number = || value.parse::<u64>().ok();
        match key.trim() {
            "Block size" => g.block_size = number()?,
            "Block count" => g.blocks = number()?,
            "Free blocks" => g.free_blocks = number()?,
            "Inode count" => g.inodes = number()?,
            "Inode size" => g.inode_size = number()?,
            "Journal size" => g.journal_bytes = parse_journal_size(value)?,
            _ => {}
        }
    }
    (g.block_size > 0 && g.blocks > 0).then_some(g)
}

/// `Journal size` as dumpe2fs prints it: `4096k`, `64M`, `1024M`, `2G`.
fn parse_journal_size(value: &str) -> Option<u64> {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &value[digits.len()..] {
        "" => 1,
        "k" | "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    Some(digits.parse::<u64>().ok()? * unit)
}

/// Names a full filesystem as the cause when resize2fs reports a failed
/// write: it prints "short write" (or the ENOSPC text) rather than an errno.
fn out_of_space(image: &Path, requested: u64, err: RunError) -> DiskError {
    let RunError::Failed { stderr, .. } = &err else {
        return err.into();
    };
    if !stderr.contains("short write") && !stderr.contains("No space left on device") {
        return err.into();
    }
    let dir = image.parent().unwrap_or(image);
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_free() * s.fragment_size())
        .unwrap_or(0);
    DiskError::NoSpace {
        path: image.to_path_buf(),
        free,
        requested,
        source: Box::new(err.into()),
    }
}

/// Writes `data` to `guest_path` in `image` with permission bits `mode`,
/// owned by root. Missing parent directories are created (0700 for `.ssh`,
/// 0755 otherwise, owned by root); an existing file is replaced. The image
/// must not be in use by a running VM.
pub fn write_file(image: &Path, guest_path: &str, data: &[u8], mode: u32) -> Result<(), DiskError> {
    let names = guest_components(guest_path)?;
    let Some((file_name, parent_names)) = names.split_last() else {
        return Err(DiskError::GuestPath {
            path: guest_path.to_string(),
            reason: "it names no file",
        });
    };
    let prefixes: Vec<String> = (1..=names.len())
        .map(|n| format!("/{}", names[..n].join("/")))
        .collect();
    let modes = lookup(image, &prefixes)?;
    let mut script = String::new();
    for ((dir, name), found) in prefixes.iter().zip(parent_names).zip(&modes) {
        match found {
            Some(m) if m & S_IFMT == S_IFDIR => {}
            Some(_) => {
                return Err(DiskError::WrongType {
                    image: image.to_path_buf(),
                    guest_path: dir.clone(),
                    expected: "directory",
                });
            }
            None => {
                let perms = if *name == ".ssh" { 0o700 } else { 0o755 };
                script.push_str(&format!("mkdir {dir}\n"));
                push_owner_and_mode(&mut script, dir, S_IFDIR | perms);
            }
        }
    }
    match modes.last().copied().flatten() {
        Some(m) if m & S_IFMT == S_IFDIR => {
            return Err(DiskError::WrongType {
                image: image.to_path_buf(),
                guest_path: guest_path.to_string(),
                expected: "regular file",
            });
        }
        Some(_) => script.push_str(&format!("rm {guest_path}\n")),
        None => {}
    }

    let staged = TempFile::beside(image);
    std::io::Write::write_all(&mut staged.create()?, data)
        .map_err(io_err("write", &staged.path))?;
    let host = staged.path.to_str().filter(|p| !p.contains(['"', '\n']));
    let Some(host) = host else {
        return Err(DiskError::Debugfs {
            image: image.to_path_buf(),
            message: format!(
                "the staging path {} cannot be quoted for debugfs",
                staged.path.display()
            ),
        });
    };
    let parent = format!("/{}", parent_names.join("/"));
    let wanted = S_IFREG | (mode & 0o7777);
    script.push_str(&format!("cd {parent}\nwrite \"{host}\" {file_name}\n"));
    push_owner_and_mode(&mut script, guest_path, wanted);
    debugfs(image, &script, true)?;

    match lookup(image, &[guest_path.to_string()])?.pop().flatten() {
        Some(m) if m == wanted => Ok(()),
        found => Err(DiskError::Debugfs {
            image: image.to_path_buf(),
            message: format!(
                "{guest_path} has mode {} after writing, expected {wanted:o}",
                found.map_or("(missing)".to_string(), |m| format!("{m:o}"))
            ),
        }),
    }
}

/// The contents of regular file `guest_path` in `image`.
pub fn read_file(image: &Path, guest_path: &str) -> Result<Vec<u8>, DiskError> {
    let mode = stat_mode(image, guest_path)?;
    if mode & S_IFMT != S_IFREG {
        return Err(DiskError::WrongType {
            image: image.to_path_buf(),
            guest_path: guest_path.to_string(),
            expected: "regular file",
        });
    }
    let output = run::run(
        Command::new(DEBUGFS)
            .arg("-R")
            .arg(format!("cat {guest_path}"))
            .arg(image),
    )?;
    check_debugfs_stderr(image, &output.stderr, false)?;
    Ok(output.stdout)
}

/// The full `st_mode` (file type and permission bits) of `guest_path` in `image`.
pub fn stat_mode(image: &Path, guest_path: &str) -> Result<u32, DiskError> {
    guest_components(guest_path)?;
    lookup(image, &[guest_path.to_string()])?
        .pop()
        .flatten()
        .ok_or_else(|| DiskError::NotFound {
            image: image.to_path_buf(),
            guest_path: guest_path.to_string(),
        })
}

/// Makes the root filesystem in `image` fit to be the rootfs of an image,
/// whose copies become other VMs: removes the SSH host keys
/// (`/etc/ssh/ssh_host_*`) and the key banger's initramfs installs
/// (`/etc/ssh/banger/authorized_keys`); empties `/etc/machine-id` (an empty
/// file, mode 0444, so each VM makes its own) and removes
/// `/var/lib/dbus/machine-id` if it is a regular file; removes everything in
/// `/var/log/journal` and every other file under `/var/log`, keeping its
/// directories. Names debugfs cannot take literally are left alone.
/// `/root` (the work disk's mount point) is not touched.
pub fn scrub_for_image(image: &Path) -> Result<(), DiskError> {
    let mut script = String::new();
    for entry in list_dir(image, "/etc/ssh")? {
        if entry.name.starts_with("ssh_host_") && !entry.is_dir() {
            script.push_str(&format!("rm /etc/ssh/{}\n", entry.name));
        }
    }
    let found = lookup(
        image,
        &[
            "/etc/ssh/banger/authorized_keys".to_string(),
            "/var/lib/dbus/machine-id".to_string(),
            "/etc".to_string(),
        ],
    )?;
    if found[0].is_some_and(|m| m & S_IFMT != S_IFDIR) {
        script.push_str("rm /etc/ssh/banger/authorized_keys\n");
    }
    if found[1].is_some_and(|m| m & S_IFMT == S_IFREG) {
        script.push_str("rm /var/lib/dbus/machine-id\n");
    }
    for entry in list_dir(image, "/var/log")? {
        let path = format!("/var/log/{}", entry.name);
        match (entry.is_dir(), entry.name.as_str()) {
            (true, "journal") => clear_tree(image, &path, false, &mut script)?,
            (true, _) => clear_tree(image, &path, true, &mut script)?,
            (false, _) => script.push_str(&format!("rm {path}\n")),
        }
    }
    if !script.is_empty() {
        debugfs(image, &script, true)?;
    }
    if found[2].is_some_and(|m| m & S_IFMT == S_IFDIR) {
        write_file(image, "/etc/machine-id", b"", 0o444)?;
    }
    Ok(())
}

/// Removes the lines of `guest_path` in `image` that carry public key `key`
/// (its base64 blob, whatever the options and comment), keeping the file and
/// giving it mode 0600; nothing to do when the file does not exist.
pub fn remove_authorized_key(image: &Path, guest_path: &str, key: &str) -> Result<(), DiskError> {
    let Some(blob) = key.split_whitespace().nth(1) else {
        return Err(DiskError::GuestPath {
            path: guest_path.to_string(),
            reason: "the key to remove is not an OpenSSH public key line",
        });
    };
    let data = match read_file(image, guest_path) {
        Err(DiskError::NotFound { .. }) => return Ok(()),
        other => other?,
    };
    let text = String::from_utf8_lossy(&data);
    let kept: String = text
        .lines()
        .filter(|line| !line.split_whitespace().any(|word| word == blob))
        .map(|line| format!("{line}\n"))
        .collect();
    write_file(image, guest_path, kept.as_bytes(), 0o600)
}

/// One entry of a directory in an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    mode: u32,
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// The entries of directory `dir` in `image`, without `.` and `..` and
/// without names debugfs cannot take literally; none when `dir` is missing
/// or not a directory.
fn list_dir(image: &Path, dir: &str) -> Result<Vec<Entry>, DiskError> {
    let stdout = debugfs(image, &format!("ls -p {dir}\n"), false)?;
    Ok(parse_listing(&stdout)
        .into_iter()
        .filter(|e| guest_components(&format!("{dir}/{}", e.name)).is_ok())
        .collect())
}

/// Parses `ls -p` output: one `/inode/mode/uid/gid/name/size/` line an entry.
fn parse_listing(stdout: &str) -> Vec<Entry> {
    stdout
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.strip_prefix('/')?.split('/').collect();
            let [_inode, mode, _uid, _gid, name, _size, ""] = fields[..] else {
                return None;
            };
            let mode = u32::from_str_radix(mode, 8).ok()?;
            (name != "." && name != "..").then(|| Entry {
                name: name.to_string(),
                mode,
            })
        })
        .collect()
}

/// Appends to `script` the commands that remove everything below `dir`,
/// children first; with `keep_dirs`, only the files (every directory stays).
fn clear_tree(
    image: &Path,
    dir: &str,
    keep_dirs: bool,
    script: &mut String,
) -> Result<(), DiskError> {
    for entry in list_dir(image, dir)? {
        let path = format!("{dir}/{}", entry.name);
        if entry.is_dir() {
            clear_tree(image, &path, keep_dirs, script)?;
            if !keep_dirs {
                script.push_str(&format!("rmdir {path}\n"));
            }
        } else {
            script.push_str(&format!("rm {path}\n"));
        }
    }
    Ok(())
}

/// Builds a work seed at `out`: a small ext4 labelled [`WORK_LABEL`] whose
/// root is the guest's `/root` (mode 0700) holding `.bashrc`, `.profile` and
/// `.ssh/` (0700) with an empty `authorized_keys` (0600). Every image gets its seed from here, built or imported, so every VM's
/// work disk starts from the same skeleton.
pub fn make_work_seed(out: &Path) -> Result<(), DiskError> {
    let staging = TempFile::beside(out);
    let root = &staging.path;
    for &(rel, content, mode) in WORK_SKELETON {
        let path = root.join(rel);
        let made = match content {
            None => DirBuilder::new().mode(mode).create(&path),
            Some(text) => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes())),
        };
        made.map_err(io_err("create", &path))?;
        // The umask narrowed what was just made; the seed's modes must not depend on it.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err("set permissions on", &path))?;
    }
    mkfs_from_dir(root, out, WORK_SEED_BYTES, WORK_LABEL)
}

/// Splits an absolute guest path into its names, rejecting what debugfs
/// cannot take literally (whitespace, quotes, backslashes, control
/// characters) and `.`/`..`/empty names.
fn guest_components(path: &str) -> Result<Vec<&str>, DiskError> {
    let reject = |reason| DiskError::GuestPath {
        path: path.to_string(),
        reason,
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(reject("it is not absolute"));
    };
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(reject(
            "it contains whitespace, quotes or control characters",
        ));
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = rest.split('/').collect();
    if names
        .iter()
        .any(|n| n.is_empty() || *n == "." || *n == "..")
    {
        return Err(reject("it has an empty, `.` or `..` component"));
    }
    Ok(names)
}

/// The `st_mode` of each of `paths` in `image`, `None` for those missing.
fn lookup(image: &Path, paths: &[String]) -> Result<Vec<Option<u32>>, DiskError> {
    let script: String = paths.iter().map(|p| format!("stat {p}\n")).collect();
    let stdout = debugfs(image, &script, false)?;
    let modes = parse_stat_sections(&stdout);
    if modes.len() != paths.len() {
        return Err(DiskError::Debugfs {
            image: image.to_path_buf(),
            message: format!("expected {} stat results, got {}", paths.len(), modes.len()),
        });
    }
    Ok(modes)
}

/// Runs debugfs `script` (one command per line) on `image` and returns its
/// stdout. debugfs exits 0 even when commands fail, so any stderr line other
/// than its banner (and, for read-only lookups, "not found") is an error.
fn debugfs(image: &Path, script: &str, write: bool) -> Result<String, DiskError> {
    let mut cmd = Command::new(DEBUGFS);
    if write {
        cmd.arg("-w");
    }
    cmd.args(["-f", "-"]).arg(image);
    let output = run::run_with_input(&mut cmd, script.as_bytes())?;
    check_debugfs_stderr(image, &output.stderr, !write)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn check_debugfs_stderr(image: &Path, stderr: &[u8], allow_missing: bool) -> Result<(), DiskError> {
    let stderr = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_banner(l))
        .filter(|l| !(allow_missing && is_missing(l)))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DiskError::Debugfs {
            image: image.to_path_buf(),
            message: errors.join("; "),
        })
    }
}

/// Whether `line` reports a path that does not resolve: absent, or below a non-directory.
fn is_missing(line: &str) -> bool {
    line.contains("File not found by ext2_lookup") || line.contains("Ext2 inode is not a directory")
}

/// Whether `line` is debugfs's version banner, e.g. `debugfs 1.47.0 (5-Feb-2023)`.
fn is_banner(line: &str) -> bool {
    line.strip_prefix("debugfs ")
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

fn push_owner_and_mode(script: &mut String, path: &str, mode: u32) {
    script.push_str(&format!(
        "sif {path} mode 0{mode:o}\nsif {path} uid 0\nsif {path} gid 0\n"
    ));
}

/// Splits the stdout of a debugfs `stat` script at its echoed commands
/// (`debugfs: stat PATH`) and parses each result: `None` when it has no inode.
fn parse_stat_sections(stdout: &str) -> Vec<Option<u32>> {
    let mut sections: Vec<Option<u32>> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("debugfs: ") {
            sections.push(None);
        } else if let Some(last) = sections.last_mut()
            && last.is_none()
        {
            *last = parse_inode_line(line);
        }
    }
    sections
}

/// Parses `Inode: 12   Type: directory    Mode:  0700   Flags: 0x80000`
/// into the full `st_mode`.
fn parse_inode_line(line: &str) -> Option<u32> {
    let rest = line.trim_start().strip_prefix("Inode:")?;
    let (_, rest) = rest.split_once("Type:")?;
    let (kind, rest) = rest.split_once("Mode:")?;
    let perms = rest.split_whitespace().next()?;
    let perms = u32::from_str_radix(perms, 8).ok()?;
    let kind = match kind.trim() {
        "regular" => S_IFREG,
        "directory" => S_IFDIR,
        "symlink" => 0o120_000,
        "FIFO" => 0o010_000,
        "socket" => 0o140_000,
        "character special" => 0o020_000,
        "block special" => 0o060_000,
        _ => return None,
    };
    Some(kind | (perms & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_lines_parse_to_full_modes() {
        assert_eq!(
            parse_inode_line("Inode: 12   Type: directory    Mode:  0700   Flags: 0x80000"),
            Some(0o040_700)
        );
        assert_eq!(
            parse_inode_line("Inode: 14   Type: regular    Mode:  0600   Flags: 0x80000"),
            Some(0o100_600)
        );
        assert_eq!(
            parse_inode_line("Inode: 15   Type: character special    Mode:  0666   Flags: 0x0"),
            Some(0o020_666)
        );
        assert_eq!(parse_inode_line("Generation: 0    Version: 0x0"), None);
    }

    #[test]
    fn stat_sections_map_to_requests_in_order() {
        let out = "debugfs: stat /.ssh\n\
                   Inode: 12   Type: directory    Mode:  0700   Flags: 0x80000\n\
                   Generation: 0    Version: 0x00000000:00000000\n\
                   debugfs: stat /.ssh/nope\n\
                   debugfs: stat /.profile\n\
                   Inode: 13   Type: regular    Mode:  0644   Flags: 0x80000\n";
        assert_eq!(
            parse_stat_sections(out),
            [Some(0o040_700), None, Some(0o100_644)]
        );
    }

    #[test]
    fn guest_paths_must_be_plain_and_absolute() {
        assert_eq!(
            guest_components("/.ssh/authorized_keys").expect("valid"),
            [".ssh", "authorized_keys"]
        );
        assert!(guest_components("/").expect("root").is_empty());
        for bad in [".ssh", "/a//b", "/a/../b", "/a b", "/a\"b", "/a\nb", "/a/"] {
            assert!(guest_components(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn superblock_fields_give_size_and_content() {
        let out = "Filesystem volume name:   rootfs\n\
                   Inode count:              65536\n\
                   Block count:              262144\n\
                   Free blocks:              100000\n\
                   Block size:               4096\n\
                   Inode size:               256\n\
                   Journal size:             16M\n";
        let g = parse_geometry(out).expect("geometry");
        assert_eq!(g.bytes(), 1 << 30);
        assert_eq!(
            (g.inodes * g.inode_size, g.journal_bytes),
            (16 << 20, 16 << 20)
        );
        assert_eq!(parse_geometry("Block size: 4096\n"), None);
        assert_eq!(parse_journal_size("4096k"), Some(4 << 20));
        assert_eq!(parse_journal_size("1024M"), Some(1 << 30));
        assert_eq!(parse_journal_size("2G"), Some(2 << 30));
        assert_eq!(parse_journal_size("lots"), None);
    }

    #[test]
    fn a_rootfs_keeps_its_size_while_the_content_fits_with_room() {
        const MIB: u64 = 1 << 20;
        assert_eq!(rootfs_size_for(600 * MIB, 1036 * MIB), 1036 * MIB);
        // 900 MiB, a tenth and a sixteenth of 1036 need more than 1036:
        // sized as a build would.
        assert_eq!(rootfs_size_for(900 * MIB, 1036 * MIB), 1426 * MIB);
        assert_eq!(rootfs_size_for(4 * MIB, 64 * MIB), 64 * MIB);
        assert_eq!(rootfs_size_for(MIB, 0), 258 * MIB);
        assert_eq!(rootfs_size_for(MIB, 4096 * MIB), 4096 * MIB);
    }

    #[test]
    fn listings_parse_into_entries_without_dot_and_dotdot() {
        let out = "debugfs: ls -p /var/log\n\
                   /17/040755/0/0/.//\n\
                   /16/040755/0/0/..//\n\
                   /18/120777/0/0/README/5/\n\
                   /19/040755/0/0/journal//\n\
                   /22/100644/0/0/syslog/2/\n\n";
        let entries = parse_listing(out);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["README", "journal", "syslog"]);
        assert!(entries[1].is_dir() && !entries[0].is_dir() && !entries[2].is_dir());
    }

    #[test]
    fn banner_is_not_an_error() {
        assert!(is_banner("debugfs 1.47.0 (5-Feb-2023)"));
        assert!(!is_banner("debugfs: No such file or directory"));
        let image = Path::new("/img");
        assert!(check_debugfs_stderr(image, b"debugfs 1.47.0 (5-Feb-2023)\n", false).is_ok());
        assert!(check_debugfs_stderr(image, b"/x: File not found by ext2_lookup\n", true).is_ok());
        assert!(
            check_debugfs_stderr(image, b"/f/x: Ext2 inode is not a directory\n", true).is_ok()
        );
        assert!(
            check_debugfs_stderr(image, b"/x: File not found by ext2_lookup\n", false).is_err()
        );
        assert!(check_debugfs_stderr(image, b"write: Ext2 file already exists\n", true).is_err());
    }
}
