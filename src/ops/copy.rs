//! Copying files and trees between the host and a running VM: a tar stream
//! over banger's SSH (pinned host key, banger's key), the `tar` crate on the
//! host and GNU tar in the guest. Each side extracts into a temporary name
//! beside the destination and renames it into place at the end, so a failed
//! copy leaves nothing half-written under the destination's name.

use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use super::UsageError;
use crate::state::model::{Vm, VmName};
use crate::vm::Ctx;

/// Copies over this many bytes get a progress bar (on a terminal only).
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// One side of a copy as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `-`: a tar stream on stdin (as a source) or stdout (as a destination).
    Stdio,
    /// A path on the host.
    Host(PathBuf),
    /// `NAME:PATH` in a VM.
    Guest { vm: VmName, path: String },
}

impl Endpoint {
    /// Parses `-`, `NAME:PATH` or a host path. A host path that contains a
    /// `:` can be written `./a:b` or `/abs/a:b`, as with docker.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        if text == "-" {
            return Ok(Self::Stdio);
        }
        if !text.starts_with(['/', '.'])
            && let Some((name, path)) = text.split_once(':')
            && !name.contains('/')
        {
            let vm = VmName::parse(name).map_err(|e| format!("{name}: {e}"))?;
            if path.is_empty() {
                return Err(format!("{text}: no path after the VM name"));
            }
            return Ok(Self::Guest {
                vm,
                path: path.to_owned(),
            });
        }
        Ok(Self::Host(PathBuf::from(text)))
    }
}

/// `HOST_PATH:GUEST_PATH` (`--copy`) or `GUEST_PATH:HOST_PATH`
/// (`--copy-out`): a pair of paths split at the colon nearest the guest side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPair {
    pub host: PathBuf,
    pub guest: String,
}

impl PathPair {
    /// `HOST_PATH:GUEST_PATH`, split at the last colon.
    pub fn parse_in(text: &str) -> Result<Self, String> {
        let (host, guest) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text}: expected HOST_PATH:GUEST_PATH"))?;
        Self::new(host, guest, text)
    }

    /// `GUEST_PATH:HOST_PATH`, split at the first colon.
    pub fn parse_out(text: &str) -> Result<Self, String> {
        let (guest, host) = text
            .split_once(':')
            .ok_or_else(|| format!("{text}: expected GUEST_PATH:HOST_PATH"))?;
        Self::new(host, guest, text)
    }

    fn new(host: &str, guest: &str, text: &str) -> Result<Self, String> {
        if host.is_empty() || guest.is_empty() {
            return Err(format!("{text}: both paths are needed"));
        }
        Ok(Self {
            host: host.into(),
            guest: guest.into(),
        })
    }
}

/// `banger vm cp SRC... DST`: checks the direction, then copies each source.
pub fn cp(ctx: &Ctx, sources: &[Endpoint], dest: &Endpoint) -> Result<()> {
    match dest {
        Endpoint::Guest { vm, path } => {
            let mut host = Vec::new();
            for src in sources {
                match src {
                    Endpoint::Host(p) => host.push(p.clone()),
                    Endpoint::Stdio if sources.len() == 1 => {
                        let vm = running(ctx, vm)?;
                        return stream_in(ctx, &vm, path);
                    }
                    Endpoint::Stdio => {
                        return Err(UsageError("`-` must be the only source".into()).into());
                    }
                    Endpoint::Guest { .. } => {
                        return Err(UsageError(
                            "cannot copy from one VM to another; copy through the host".into(),
                        )
                        .into());
                    }
                }
            }
            let vm = running(ctx, vm)?;
            to_guest(ctx, &vm, &host, path)
        }
        Endpoint::Host(_) | Endpoint::Stdio => {
            let mut guest = Vec::new();
            for src in sources {
                match src {
                    Endpoint::Guest { vm, path } => guest.push((vm, path)),
                    _ => {
                        return Err(UsageError(
                            "one side of a copy must be a VM (NAME:PATH)".into(),
                        )
                        .into());
                    }
                }
            }
            if guest.len() > 1 && *dest == Endpoint::Stdio {
                return Err(UsageError("only one source can be written to `-`".into()).into());
            }
            if let (Endpoint::Host(dir), true) = (dest, guest.len() > 1)
                && !dir.is_dir()
            {
                return Err(UsageError(format!(
                    "{}: not a directory (several sources need one)",
                    dir.display()
                ))
                .into());
            }
            let vms = guest
                .iter()
                .map(|(vm, _)| running(ctx, vm))
                .collect::<Result<Vec<_>>>()?;
            for (vm, (_, path)) in vms.iter().zip(&guest) {
                match dest {
                    Endpoint::Host(to) => from_guest(ctx, vm, path, to)?,
                    _ => stream_out(ctx, vm, path)?,
                }
            }
            Ok(())
        }
    }
}

/// The named VM if it is running and its host key is pinned.
pub use super::ssh::running;

/// `vm run --copy`, the command, then `--copy-out` whatever the command's
/// exit code; the command's code is returned unless a copy failed.
pub fn around(
    ctx: &Ctx,
    vm: &Vm,
    copy_in: &[PathPair],
    copy_out: &[PathPair],
    command: impl FnOnce() -> Result<i32>,
) -> Result<i32> {
    for pair in copy_in {
        to_guest(ctx, vm, std::slice::from_ref(&pair.host), &pair.guest)?;
    }
    let code = command()?;
    for pair in copy_out {
        from_guest(ctx, vm, &pair.guest, &pair.host)?;
    }
    Ok(code)
}

/// What one source becomes in the archive.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// The archive's top-level name, or `None` for "the directory's
    /// contents" (a source written as `DIR/.`).
    name: Option<String>,
    is_dir: bool,
}

fn source(path: &Path) -> Result<Source> {
    let meta = fs::symlink_metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow!("{}: no such file or directory", path.display())
        } else {
            anyhow!(e).context(format!("cannot read {}", path.display()))
        }
    })?;
    let is_dir = meta.is_dir();
    let contents = matches!(path.components().next_back(), Some(Component::CurDir))
        || path.as_os_str().to_string_lossy().ends_with("/.");
    let name = if contents && is_dir {
        None
    } else {
        let absolute = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let normal: PathBuf = absolute.components().collect();
        let name = normal
            .file_name()
            .ok_or_else(|| anyhow!("{}: cannot copy /", path.display()))?;
        Some(name.to_string_lossy().into_owned())
    };
    Ok(Source {
        path: path.to_owned(),
        name,
        is_dir,
    })
}

/// Copies host files or trees into `dest` in a running VM.
pub fn to_guest(ctx: &Ctx, vm: &Vm, sources: &[PathBuf], dest: &str) -> Result<()> {
    let sources = sources
        .iter()
        .map(|p| source(p))
        .collect::<Result<Vec<_>>>()?;
    let contents = sources.iter().any(|s| s.name.is_none());
    if contents && sources.len() > 1 {
        return Err(UsageError("a `DIR/.` source must be the only source".into()).into());
    }
    let mut args = vec![if contents { "stream" } else { "entries" }.to_owned()];
    args.push(dest.to_owned());
    for s in &sources {
        if let Some(name) = &s.name {
            args.push(format!("{}/{name}", if s.is_dir { 'd' } else { 'f' }));
        }
    }
    let total: u64 = sources.iter().map(|s| tree_size(&s.path)).sum();
    let mut child = spawn(ctx, vm, GUEST_IN, &args, Stdio::piped(), Stdio::null())?;
    let stderr = collect_stderr(&mut child);
    let written = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("ssh has no stdin"))
        .and_then(|stdin| {
            let bar = progress(total);
            let mut builder = tar::Builder::new(Progress { inner: stdin, bar });
            builder.follow_symlinks(false);
            for s in &sources {
                append(&mut builder, s)?;
            }
            let mut out = builder.into_inner()?;
            out.inner.flush()?;
            if let Some(bar) = out.bar {
                bar.finish_and_clear();
            }
            Ok(())
        });
    let status = child.wait().context("cannot wait for ssh")?;
    let stderr = stderr.join().unwrap_or_default();
    guest_result(vm, dest, status.code(), &stderr)?;
    written.with_context(|| format!("cannot send files to VM {}", vm.name))
}

fn append<W: Write>(builder: &mut tar::Builder<W>, s: &Source) -> Result<()> {
    let done = match (&s.name, s.is_dir) {
        (None, _) => builder.append_dir_all(".", &s.path),
        (Some(name), true) => builder.append_dir_all(name, &s.path),
        (Some(name), false) => builder.append_path_with_name(&s.path, name),
    };
    done.with_context(|| format!("cannot read {}", s.path.display()))
}

/// `tar c . | banger vm cp - NAME:DIR`: stdin, a tar stream, extracted into
/// `dest` (a directory, made if missing).
fn stream_in(ctx: &Ctx, vm: &Vm, dest: &str) -> Result<()> {
    let args = ["stream".to_owned(), dest.to_owned()];
    let mut child = spawn(ctx, vm, GUEST_IN, &args, Stdio::inherit(), Stdio::null())?;
    let stderr = collect_stderr(&mut child);
    let status = child.wait().context("cannot wait for ssh")?;
    let stderr = stderr.join().unwrap_or_default();
    guest_result(vm, dest, status.code(), &stderr)
}

/// `banger vm cp NAME:PATH -`: the guest's tar stream to stdout.
fn stream_out(ctx: &Ctx, vm: &Vm, src: &str) -> Result<()> {
    with_guest_archive(ctx, vm, src, |_, _, reader| {
        let mut stdout = io::stdout().lock();
        io::copy(reader, &mut stdout).context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")
    })
}

/// Copies `src` (a file or tree) out of a running VM to `dest` on the host.
pub fn from_guest(ctx: &Ctx, vm: &Vm, src: &str, dest: &Path) -> Result<()> {
    with_guest_archive(ctx, vm, src, |is_dir, size, reader| {
        let name = guest_name(src);
        let (parent, target) = host_target(dest, &name, is_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".banger-cp.")
            .tempdir_in(&parent)
            .map_err(|e| write_error(&parent, e))?;
        let bar = progress(size);
        let mut archive = tar::Archive::new(Progress { inner: reader, bar });
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive
            .unpack(tmp.path())
            .map_err(|e| write_error(&target, e))?;
        if let Some(bar) = &archive.into_inner().bar {
            bar.finish_and_clear();
        }
        place(&tmp.path().join(&name), &target).map_err(|e| write_error(&target, e))
    })
}

/// The last component of a guest path (as the guest's `basename` of its
/// `realpath -s` names it in the archive).
fn guest_name(src: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.last().copied().unwrap_or("/").to_owned()
}

/// Where a source named `name` lands for `dest`, and the directory the
/// temporary copy goes in; refuses a directory onto a file (or the reverse)
/// and a missing parent, before anything is written.
fn host_target(dest: &Path, name: &str, is_dir: bool) -> Result<(PathBuf, PathBuf)> {
    let refuse = |msg: String| anyhow!(msg);
    let target = if dest.is_dir() {
        dest.join(name)
    } else {
        dest.to_owned()
    };
    let parent = match target.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_owned(),
        None => return Err(refuse(format!("{}: cannot copy onto /", dest.display()))),
    };
    if !parent.is_dir() {
        return Err(refuse(format!("{}: no such directory", parent.display())));
    }
    if let Ok(meta) = fs::symlink_metadata(&target) {
        if is_dir && !meta.is_dir() {
            return Err(refuse(format!(
                "cannot copy a directory onto the file {}",
                target.display()
            )));
        }
        if !is_dir && meta.is_dir() {
            return Err(refuse(format!(
                "cannot copy a file onto the directory {}",
                target.display()
            )));
        }
    }
    Ok((parent, target))
}

/// Moves `new` to `target`: a rename, or for a directory onto an existing
/// directory, each entry renamed into it (merging, as `cp -r` does).
fn place(new: &Path, target: &Path) -> io::Result<()> {
    let new_meta = fs::symlink_metadata(new)?;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() && new_meta.is_dir() => {
            for entry in fs::read_dir(new)? {
                let entry = entry?;
                place(&entry.path(), &target.join(entry.file_name()))?;
            }
            fs::set_permissions(target, new_meta.permissions())?;
            fs::File::open(target)?.set_modified(new_meta.modified()?)
        }
        _ => fs::rename(new, target),
    }
}

fn write_error(path: &Path, e: io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.to_string().contains("No space left") {
        anyhow!("no space left on the host's disk for {}", path.display())
    } else {
        anyhow!(e).context(format!("cannot write {}", path.display()))
    }
}

/// Runs the guest side of a copy out, reads its `KIND SIZE` line, and hands
/// the archive that follows to `consume`; then checks how the guest ended.
fn with_guest_archive(
    ctx: &Ctx,
    vm: &Vm,
    src: &str,
    consume: impl FnOnce(bool, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let args = [src.to_owned()];
    let mut child = spawn(ctx, vm, GUEST_OUT, &args, Stdio::null(), Stdio::piped())?;
    let stderr = collect_stderr(&mut child);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("ssh has no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut header = String::new();
    let header_read = reader.read_line(&mut header);
    let consumed = match (header_read, header.trim_end().split_once(' ')) {
        (Ok(_), Some((kind @ ("d" | "f"), size))) => {
            let consumed = consume(kind == "d", size.parse().unwrap_or(0), &mut reader);
            if consumed.is_err() {
                // Refused or failed on the host: stop the guest's side.
                child.kill().ok();
                drop(reader);
                child.wait().ok();
                return consumed;
            }
            consumed
        }
        // No archive: the guest says why (a missing source, say).
        _ => Err(anyhow!("VM {} sent no archive for {src}", vm.name)),
    };
    drop(reader);
    let status = child.wait().context("cannot wait for ssh")?;
    let stderr = stderr.join().unwrap_or_default();
    guest_result(vm, src, status.code(), &stderr)?;
    consumed
}

/// Maps how the guest side ended to an error naming the VM and the path.
fn guest_result(vm: &Vm, path: &str, code: Option<i32>, stderr: &str) -> Result<()> {
    let name = &vm.name;
    let said = stderr.trim();
    match code {
        Some(0) => Ok(()),
        Some(255) => bail!(
            "ssh to VM {name} failed{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ),
        _ => {
            if let Some(reason) = said.lines().find_map(|l| l.strip_prefix("banger-cp: ")) {
                bail!("VM {name}: {reason}")
            } else if said.contains("No space left on device") || said.contains(": Wrote only ") {
                // GNU tar says the latter for a short write, as on a full tmpfs.
                bail!("VM {name} has no space left on its disk for {path}")
            } else if said.is_empty() {
                bail!("copying {name}:{path} failed")
            } else {
                bail!("copying {name}:{path} failed: {said}")
            }
        }
    }
}

/// Starts `sh -c SCRIPT banger-cp ARGS...` in the VM over banger's SSH.
fn spawn(
    ctx: &Ctx,
    vm: &Vm,
    script: &str,
    args: &[String],
    stdin: Stdio,
    stdout: Stdio,
) -> Result<Child> {
    let mut command = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "banger-cp".to_owned(),
    ];
    command.extend(args.iter().cloned());
    super::ssh::command(ctx, vm, false, &command)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ssh` (install OpenSSH's client)")
}

/// Reads the child's stderr on a thread, so that neither side blocks.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            s.read_to_string(&mut text).ok();
        }
        text
    })
}

/// The bytes a tree holds (for the progress bar).
fn tree_size(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| tree_size(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

fn progress(total: u64) -> Option<indicatif::ProgressBar> {
    (total >= PROGRESS_MIN_BYTES && io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

/// A reader or writer that advances a progress bar.
struct Progress<T> {
    inner: T,
    bar: Option<indicatif::ProgressBar>,
}

impl<W: Write> Write for Progress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

/// The guest side of a copy in: `sh -c GUEST_IN banger-cp MODE DEST
/// [d/NAME|f/NAME]...`. It checks DEST before reading anything, extracts the
/// tar stream on stdin into a temporary directory beside the destination,
/// then renames each entry into place (merging into existing directories).
/// MODE `stream` extracts the archive into DEST itself.
const GUEST_IN: &str = r#"set -eu
fail() { printf 'banger-cp: %s\n' "$*" >&2; exit 3; }
mode=$1; dst=$2; shift 2
into=
if [ -d "$dst" ]; then
  into=$dst; parent=$dst
  for e; do
    t=$into/${e#?/}
    case $e in
      d/*) if { [ -e "$t" ] || [ -L "$t" ]; } && [ ! -d "$t" ]; then fail "cannot copy a directory onto the file $t"; fi ;;
      f/*) if [ -d "$t" ] && [ ! -L "$t" ]; then fail "cannot copy a file onto the directory $t"; fi ;;
    esac
  done
else
  parent=$(dirname -- "$dst")
  [ -d "$parent" ] || fail "$parent: no such directory"
  if [ -e "$dst" ] || [ -L "$dst" ]; then
    [ "$mode" = entries ] && [ $# -eq 1 ] || fail "$dst is not a directory"
    case $1 in d/*) fail "cannot copy a directory onto the file $dst" ;; esac
  else
    [ "$mode" = stream ] || [ $# -eq 1 ] || fail "$dst: no such directory"
  fi
fi
tmp=$(mktemp -d -- "$parent/.banger-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
chmod 755 "$tmp"
tar -x -f - -C "$tmp" --no-same-owner
place() {
  if [ -d "$2" ] && [ ! -L "$2" ] && [ -d "$1" ] && [ ! -L "$1" ]; then
    cp -a --link --remove-destination -- "$1/." "$2/"
  else
    mv -f -T -- "$1" "$2"
  fi
}
if [ "$mode" = stream ]; then
  place "$tmp" "$dst"
else
  for e; do
    n=${e#?/}
    if [ -n "$into" ]; then place "$tmp/$n" "$into/$n"; else place "$tmp/$n" "$dst"; fi
  done
fi
"#;

/// The guest side of a copy out: `sh -c GUEST_OUT banger-cp SRC`. Prints
/// `d SIZE` or `f SIZE`, then a tar archive of SRC under its own name.
const GUEST_OUT: &str = r#"set -eu
fail() { printf 'banger-cp: %s\n' "$*" >&2; exit 3; }
[ -e "$1" ] || [ -L "$1" ] || fail "$1: no such file or directory"
src=$(realpath -s -- "$1")
[ "$src" != / ] || fail "cannot copy /"
if [ -d "$src" ] && [ ! -L "$src" ]; then k=d; else k=f; fi
printf '%s %s\n' "$k" "$(du -sb -- "$src" | cut -f1)"
cd -- "$(dirname -- "$src")"
exec tar -c -f - -- "$(basename -- "$src")"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(vm: &str, path: &str) -> Endpoint {
        Endpoint::Guest {
            vm: VmName::parse(vm).unwrap_or_else(|e| panic!("{e}")),
            path: path.into(),
        }
    }

    #[test]
    fn endpoints_parse_as_docker_writes_them() {
        assert_eq!(Endpoint::parse("-"), Ok(Endpoint::Stdio));
        assert_eq!(
            Endpoint::parse("dev1:/root/src"),
            Ok(guest("dev1", "/root/src"))
        );
        assert_eq!(Endpoint::parse("dev1:out"), Ok(guest("dev1", "out")));
        assert_eq!(Endpoint::parse("./a:b"), Ok(Endpoint::Host("./a:b".into())));
        assert_eq!(
            Endpoint::parse("/tmp/a:b"),
            Ok(Endpoint::Host("/tmp/a:b".into()))
        );
        assert_eq!(
            Endpoint::parse("src/a:b"),
            Ok(Endpoint::Host("src/a:b".into()))
        );
        assert_eq!(Endpoint::parse("file"), Ok(Endpoint::Host("file".into())));
        assert!(Endpoint::parse("dev1:").is_err());
        assert!(Endpoint::parse("Bad_Name:/x").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn path_pairs_split_at_the_colon_nearest_the_guest() {
        let pair = PathPair::parse_in("./a:b:/root/src").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (pair.host, pair.guest),
            ("./a:b".into(), "/root/src".into())
        );
        let pair = PathPair::parse_out("/root/out:./x:y").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (pair.host, pair.guest),
            ("./x:y".into(), "/root/out".into())
        );
        assert!(PathPair::parse_in("nocolon").is_err());
        assert!(PathPair::parse_out(":x").is_err());
    }

    #[test]
    fn guest_names_are_the_last_component() {
        assert_eq!(guest_name("/root/src/"), "src");
        assert_eq!(guest_name("/root/src/."), "src");
        assert_eq!(guest_name("a/b/../c"), "c");
        assert_eq!(guest_name("out"), "out");
    }

    #[test]
    fn host_targets_refuse_a_directory_onto_a_file() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap_or_else(|e| panic!("{e}"));
        let err = host_target(&file, "d", true).unwrap_err().to_string();
        assert!(
            err.contains("cannot copy a directory onto the file"),
            "{err}"
        );
        let (_, target) = host_target(tmp.path(), "d", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target, tmp.path().join("d"));
        let (_, target) =
            host_target(&tmp.path().join("new"), "d", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target, tmp.path().join("new"));
        let err = host_target(&tmp.path().join("no/such"), "d", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such directory"), "{err}");
    }

    #[test]
    fn placing_a_tree_merges_into_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (new, old) = (tmp.path().join("new"), tmp.path().join("old"));
        for d in [&new, &old] {
            fs::create_dir_all(d.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(new.join("sub/a"), "new").unwrap_or_else(|e| panic!("{e}"));
        fs::write(old.join("sub/a"), "old").unwrap_or_else(|e| panic!("{e}"));
        fs::write(old.join("keep"), "kept").unwrap_or_else(|e| panic!("{e}"));
        place(&new, &old).unwrap_or_else(|e| panic!("{e}"));
        let read = |p: &str| fs::read_to_string(old.join(p)).unwrap_or_default();
        assert_eq!((read("sub/a"), read("keep")), ("new".into(), "kept".into()));
    }
}
