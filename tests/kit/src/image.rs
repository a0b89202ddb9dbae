//! The one guest image of the test suites and its cache: built once per set
//! of inputs by `banger::host::image::build` into `<target>/test-images/<key>`
//! (downloads kept in `<target>/test-images/cache`), and reused by the image,
//! guest and shim tests alike. Also the busybox initramfs the shim tests boot.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use banger::host::image::{self, BuildOptions, Manifest, Progress};
use sha2::{Digest, Sha256};

use crate::{Need, require};

/// The Debian suite of the test image.
pub const SUITE: &str = "bookworm";

/// Where the test image and the download cache live.
pub fn images_dir() -> PathBuf {
    crate::target_dir().join("test-images")
}

/// Records the build's stages and prints them with their start times (seen
/// with `--nocapture`).
pub struct Recorder {
    pub stages: Mutex<Vec<String>>,
    started: Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            stages: Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl Recorder {
    /// The stages seen so far.
    pub fn stages(&self) -> Vec<String> {
        self.stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Progress for Recorder {
    fn stage(&self, name: &str) {
        eprintln!("{:7.1} s  {name}", self.started.elapsed().as_secs_f64());
        self.stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
    }
    fn detail(&self, msg: &str) {
        eprintln!("{:7.1} s    {msg}", self.started.elapsed().as_secs_f64());
    }
}

/// Held while a build uses the shared download cache: one build at a time,
/// across threads and test binaries, so each can check it leaves no scratch.
pub struct BuildLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

pub fn build_lock() -> BuildLock {
    static BUILD: Mutex<()> = Mutex::new(());
    let guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = images_dir();
    fs::create_dir_all(&dir).expect("create the test image dir");
    let path = dir.join(".lock");
    let file = File::create(&path).expect("create the build lock");
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    BuildLock {
        _file: file,
        _guard: guard,
    }
}

/// Options of the test image with `agent` installed: those of the default
/// image `vm create` builds on a fresh host, so that build finds the base
/// system in the cache. The cache is shared by every build under the target dir.
pub fn options(agent: &Path) -> BuildOptions {
    BuildOptions {
        suite: SUITE.to_string(),
        kernel: None,
        initrd: None,
        size: None,
        packages: Vec::new(),
        agent_binary: agent.to_owned(),
        cache_dir: images_dir().join("cache"),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key over everything that shapes the image: options, agent, the image
/// code and the guest files.
pub(crate) fn input_key(opts: &BuildOptions) -> String {
    let root = crate::workspace_root();
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{}\n{:?}\n{:?}\n",
        opts.suite, opts.packages, opts.size
    ));
    hasher.update(fs::read(&opts.agent_binary).expect("read the agent"));
    for dir in ["src/host/image", "src/host/disk", "scripts/guest"] {
        let mut paths: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .expect("read the image sources")
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            hasher.update(path.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update(fs::read(&path).expect("read an image source"));
        }
    }
    sha256_hex(&hasher.finalize())[..16].to_string()
}

/// The built test image.
pub struct GuestImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The agent installed in it.
    pub agent: PathBuf,
}

impl GuestImage {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn vmlinux(&self) -> PathBuf {
        self.file(image::VMLINUX)
    }

    pub fn initrd(&self) -> PathBuf {
        self.file(image::INITRD)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.file(image::ROOTFS)
    }

    pub fn work_seed(&self) -> PathBuf {
        self.file(image::WORK_SEED)
    }

    /// The download cache the image was built with.
    pub fn cache_dir(&self) -> PathBuf {
        options(&self.agent).cache_dir
    }

    /// The kernel modules in the image's initramfs, in their load order, as
    /// (file name, contents).
    pub fn modules(&self) -> Vec<(String, Vec<u8>)> {
        let initrd = fs::read(self.initrd()).expect("read the initrd");
        let files = read_newc(&initrd);
        let find = |name: &str| {
            files
                .iter()
                .find(|(path, _)| path == name)
                .map(|(_, data)| data.clone())
                .unwrap_or_else(|| panic!("{name} is not in {}", self.initrd().display()))
        };
        let order = String::from_utf8(find("lib/modules/load-order")).expect("UTF-8 load order");
        order
            .lines()
            .map(|name| (name.to_owned(), find(&format!("lib/modules/{name}"))))
            .collect()
    }
}

/// The test image, built once per set of inputs (root, `BANGER_AGENT` and
/// debootstrap needed), or `None` after saying why the `tier` test skips.
#[track_caller]
pub fn guest_image(tier: &str) -> Option<&'static GuestImage> {
    let agent = crate::agent().unwrap_or_default();
    if require(
        tier,
        &[
            Need::Root,
            Need::Env("BANGER_AGENT"),
            Need::File(&agent),
            Need::Program("debootstrap"),
        ],
    )
    .is_some()
    {
        return None;
    }
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    Some(IMAGE.get_or_init(|| built(&agent)))
}

fn built(agent: &Path) -> GuestImage {
    let _lock = build_lock();
    let base = images_dir();
    let opts = options(agent);
    let dir = base.join(input_key(&opts));
    let agent = agent.to_owned();
    if let Ok(manifest) = Manifest::read(&dir.join(image::MANIFEST)) {
        return GuestImage {
            dir,
            manifest,
            agent,
        };
    }
    let building = base.join(format!("building-{}", std::process::id()));
    let _ = fs::remove_dir_all(&building);
    let progress = Recorder::default();
    let started = Instant::now();
    let manifest = image::build(&opts, &building, &progress)
        .unwrap_or_else(|e| panic!("the test image did not build: {e}"));
    eprintln!("image build took {:.1} s", started.elapsed().as_secs_f64());
    let stages = progress.stages();
    for stage in [
        "download",
        "unpack",
        "initramfs",
        "debootstrap",
        "packages",
        "agent",
        "mkfs",
    ] {
        assert!(
            stages.iter().any(|s| s == stage),
            "no {stage} stage in {stages:?}"
        );
    }
    fs::rename(&building, &dir).expect("move the built image into place");
    // Images of earlier inputs are stale: keep only this one.
    for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let stale = name.len() == 16
            && name
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if stale && entry.path() != dir {
            fs::remove_dir_all(entry.path()).expect("remove a stale image");
        }
    }
    assert_no_scratch(&opts.cache_dir);
    GuestImage {
        dir,
        manifest,
        agent,
    }
}

/// Asserts that no build left scratch files in the cache.
pub fn assert_no_scratch(cache: &Path) {
    let scratch = cache.join("tmp");
    let left: Vec<_> = fs::read_dir(&scratch)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// The entries of a `newc` cpio archive: (path without a leading `/`, data).
pub fn read_newc(mut archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    let field = |header: &[u8], i: usize| {
        let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).expect("hex field");
        usize::from_str_radix(hex, 16).expect("hex field")
    };
    let padded = |n: usize| n.div_ceil(4) * 4;
    while archive.len() >= 110 && archive.starts_with(b"070701") {
        let (size, name_len) = (field(archive, 6), field(archive, 11));
        let name_end = 110 + name_len;
        let name = String::from_utf8_lossy(&archive[110..name_end - 1]).into_owned();
        if name == "TRAILER!!!" {
            break;
        }
        let data_start = padded(name_end);
        let data = archive[data_start..data_start + size].to_vec();
        entries.push((name.trim_start_matches('/').to_owned(), data));
        archive = &archive[padded(data_start + size)..];
    }
    entries
}

/// Writes a newc initramfs holding /bin/busybox, `init` as /init, and
/// `extra` files at the top.
pub fn write_initramfs(path: &Path, init: &str, extra: &[(String, Vec<u8>)]) {
    let busybox = fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut entries: Vec<(&str, u32, &[u8])> = vec![
        ("bin", 0o040_755, b""),
        ("bin/busybox", 0o100_755, &busybox),
        ("init", 0o100_755, init.as_bytes()),
    ];
    entries.extend(
        extra
            .iter()
            .map(|(name, data)| (name.as_str(), 0o100_755, data.as_slice())),
    );
    let mut out = Vec::new();
    for (ino, (name, mode, data)) in (1..).zip(entries) {
        push_newc(&mut out, ino, name, mode, data);
    }
    push_newc(&mut out, 0, "TRAILER!!!", 0, b"");
    fs::write(path, out).expect("write initramfs");
}

fn push_newc(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).expect("size"),
        0,
        0,
        0,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
