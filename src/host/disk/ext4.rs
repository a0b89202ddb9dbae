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
    let mut script = String::new();
    push_owner_and_mode(&mut script, "/", S_IFDIR | (dir_mode & 0o7777));
    debugfs(&tmp.path, &script, true)?;
    // Its journal and tables are mostly zeros: holes, so that every clone
    // copies only what the filesystem holds.
    super::cow::punch_zeros(&tmp.path)?;
    tmp.persist(out)
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
    let mut e2fsck = Command::new(E2FSCK);
    e2fsck.arg("-fp").arg(image);
    let check = run::output(&mut e2fsck, None)?;
    // 0: clean, 1: errors fixed, 2: fixed (reboot advised, moot for an image).
    if !matches!(check.status.code(), Some(0..=2)) {
        return Err(RunError::failed(&e2fsck, &check).into());
    }
    match run::run(Command::new(RESIZE2FS).arg(image)) {
        Ok(_) => Ok(()),
        Err(err) => Err(out_of_space(image, size_bytes, err)),
    }
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
