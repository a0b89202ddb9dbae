//! Images: building one from packages, importing one, committing a stopped
//! VM as one, deleting one, and the single commit protocol all three use —
//! files are made in a staging directory beside the final one, then moved
//! into place and registered.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::UsageError;
use crate::host::disk::{cow, ext4};
use crate::host::image::{self, BuildOptions, Manifest, ManifestFile, Progress};
use crate::state::model::{CommittedFrom, Image, now, rfc3339};
use crate::vm::export::RootExport;
use crate::vm::resources::remove_dir_if_present;
use crate::vm::{Ctx, ImageFiles, LockedVm};

/// Name of the image `vm create`/`vm run` build when there is none.
pub const DEFAULT_IMAGE: &str = "default";

/// What to do when the image already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Replace,
    /// Keep it (someone else built it meanwhile) and return its manifest.
    Keep,
}

/// How an image came to be (`source` in its row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Build,
    Import,
    Commit(CommittedFrom),
}

impl Source {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Import => "import",
            Self::Commit(_) => "commit",
        }
    }
}

/// Build options for the default image, or any image built from packages.
pub fn build_options(ctx: &Ctx) -> Result<BuildOptions> {
    Ok(BuildOptions {
        suite: "bookworm".into(),
        kernel: None,
        initrd: None,
        size: None,
        packages: Vec::new(),
        agent_binary: agent_binary()?,
        cache_dir: ctx.paths.cache_dir(),
    })
}

/// The default image, built first when there is none: so on a fresh host
/// `banger vm run` is the whole set-up.
pub fn ensure_default(ctx: &Ctx) -> Result<Image> {
    if let Some(image) = ctx.store.default_image()? {
        return Ok(image);
    }
    eprintln!(
        "no image yet: building {DEFAULT_IMAGE:?} from Debian packages (once; a few minutes)"
    );
    build(
        ctx,
        DEFAULT_IMAGE,
        &build_options(ctx)?,
        true,
        IfExists::Keep,
    )?;
    Ok(ctx.store.image(DEFAULT_IMAGE)?)
}

/// Builds `name` into a staging directory, then commits it. A failed or
/// interrupted build registers nothing.
pub fn build(
    ctx: &Ctx,
    name: &str,
    options: &BuildOptions,
    default: bool,
    if_exists: IfExists,
) -> Result<Manifest> {
    let _lock = ctx.lock_image(name)?;
    let exists = ctx.store.find_image(name)?.is_some();
    if exists && if_exists == IfExists::Keep {
        return Ok(Manifest::read(
            &ImageFiles::in_dir(ctx.paths.image_dir(name)).manifest,
        )?);
    }
    if exists && if_exists == IfExists::Fail {
        return Err(UsageError(format!(
            "image {name:?} already exists; pass --force to replace it"
        ))
        .into());
    }
    if exists {
        // Its warm pool's VMs are of the image being replaced: they go,
        // and the pool fills again from the new image.
        super::pool::drain(ctx, name)?;
        refuse_if_used(ctx, name, "before replacing it")?;
    }
    let staging = fresh_staging(ctx, name)?;
    let started = Instant::now();
    let progress = StageProgress::new();
    let built = image::build(options, &staging, &progress);
    progress.finish();
    let manifest = match built {
        Ok(manifest) => manifest,
        Err(err) => {
            remove_dir_if_present(&staging)?;
            return Err(err).with_context(|| format!("building image {name} failed"));
        }
    };
    commit(ctx, name, &staging, Source::Build, default, exists)?;
    eprintln!(
        "built image {name} in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    if ctx.store.find_pool(name)?.is_some() {
        super::pool::start_fill(ctx)?;
    }
    Ok(manifest)
}

/// The files `image import` takes.
#[derive(Debug, Clone)]
pub struct ImportFiles {
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    pub initrd: Option<PathBuf>,
    pub work_seed: Option<PathBuf>,
}

/// Copies the given files into a staging directory (reflinked where the
/// filesystem can), makes a work seed unless one is given, and commits.
pub fn import(ctx: &Ctx, name: &str, files: &ImportFiles, default: bool) -> Result<()> {
    let _lock = ctx.lock_image(name)?;
    if ctx.store.find_image(name)?.is_some() {
        return Err(UsageError(format!(
            "an image named {name:?} already exists (delete it first)"
        ))
        .into());
    }
    let staging = fresh_staging(ctx, name)?;
    if let Err(err) = copy_in(files, &staging) {
        remove_dir_if_present(&staging)?;
        return Err(err);
    }
    commit(ctx, name, &staging, Source::Import, default, false)
}

/// Commits stopped VM `vm`'s disks as new image `name`: its root
/// filesystem as the guest saw it (made fit to be copied: see
/// `Disks::scrub_for_image`), its image's kernel and initrd (hard links, or
/// copies across filesystems), and as work seed either its work disk
/// (`with_work`: shrunk to its content, banger's key taken out of
/// `/.ssh/authorized_keys`) or its image's. Everything is made in a staging
/// directory and committed at once: a failed or interrupted commit
/// registers nothing, and the VM's own files are only read.
pub fn commit_vm(
    ctx: &Ctx,
    vm: &str,
    name: &str,
    with_work: bool,
    default: bool,
) -> Result<RootExport> {
    let locked = LockedVm::open(ctx, vm)?;
    locked.status().can_commit(vm)?;
    let _lock = ctx.lock_image(name)?;
    if ctx.store.find_image(name)?.is_some() {
        return Err(UsageError(format!(
            "an image named {name:?} already exists (delete it first, or pick another name)"
        ))
        .into());
    }
    let row = locked.vm();
    let Some(source) = ctx.store.find_image(&row.image)? else {
        bail!(
            "VM {vm}'s image {} no longer exists, and its root disk is read through it",
            row.image
        );
    };
    let source_files = ImageFiles::of(&ctx.paths, &source);
    source_files.check(&source.name)?;
    let from = CommittedFrom {
        vm: vm.to_owned(),
        vm_id: row.id.to_string(),
        image: source.name.clone(),
    };
    let staging = fresh_staging(ctx, name)?;
    let how = match stage_commit(ctx, &locked, &source_files, &staging, with_work) {
        Ok(how) => how,
        Err(err) => {
            remove_dir_if_present(&staging)?;
            return Err(err).with_context(|| format!("committing VM {vm} as image {name} failed"));
        }
    };
    crate::fault::point("commit:staged");
    commit(ctx, name, &staging, Source::Commit(from), default, false)?;
    Ok(how)
}

/// Fills `staging` with the new image's files from VM `vm` and its image's.
fn stage_commit(
    ctx: &Ctx,
    vm: &LockedVm,
    source: &ImageFiles,
    staging: &Path,
    with_work: bool,
) -> Result<RootExport> {
    let disks = &ctx.host.disks;
    let dest = ImageFiles::in_dir(staging.to_owned());
    let how = vm.export_root(source, &dest.rootfs)?;
    // A VM stopped by force leaves its journals unreplayed: replay them in
    // the copies before debugfs writes there.
    disks.check_ext4(&dest.rootfs)?;
    disks.scrub_for_image(&dest.rootfs)?;
    link_or_copy(&source.kernel, &dest.kernel)?;
    if let (Some(initrd), Some(dst)) = (&source.initrd, &dest.initrd) {
        link_or_copy(initrd, dst)?;
    }
    if with_work {
        vm.export_work(&dest.work_seed)?;
        disks.check_ext4(&dest.work_seed)?;
        let key = crate::host::ssh::ensure_key(&ctx.paths.ssh_key())?;
        disks.remove_authorized_key(&dest.work_seed, "/.ssh/authorized_keys", &key)?;
        disks.shrink_ext4(&dest.work_seed)?;
    } else {
        link_or_copy(&source.work_seed, &dest.work_seed)?;
    }
    let base = Manifest::read(&source.manifest).ok();
    write_manifest(&dest, base.as_ref())?;
    Ok(how)
}

/// Makes `dst` another name of the image file `src` (image files are never
/// written once committed), or a copy where a hard link cannot be made.
fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let size = std::fs::metadata(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .len();
    cow::clone_file(src, dst, size).with_context(|| format!("cannot copy {}", src.display()))?;
    Ok(())
}

/// Deletes an image no VM uses.
pub fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    let _lock = ctx.lock_image(name)?;
    ctx.store.image(name)?;
    // Its warm pool goes with it, after its VMs.
    if ctx.store.find_pool(name)?.is_some() {
        super::pool::drain(ctx, name)?;
        ctx.store.delete_pool(name)?;
    }
    refuse_if_used(ctx, name, "first")?;
    ctx.store.delete_image(name)?;
    remove_dir_if_present(&ctx.paths.image_dir(name))
}

fn refuse_if_used(ctx: &Ctx, name: &str, when: &str) -> Result<()> {
    let users = ctx.store.vms_using_image(name)?;
    if !users.is_empty() {
        bail!(
            "image {name} is used by VM(s) {}; delete them {when}",
            users.join(", ")
        );
    }
    Ok(())
}

/// An empty staging directory for `name`, private to this process; `gc`
/// removes those whose process is gone.
fn fresh_staging(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let staging = ctx.paths.image_staging(name, std::process::id());
    remove_dir_if_present(&staging)?;
    crate::state::paths::ensure_private_dir(&staging)?;
    Ok(staging)
}

/// The one commit point of an image (its lock held): the staging directory
/// is moved into place, then the row is written. A crash between the two
/// leaves the directory without a row — nothing is registered — which the
/// next build or import of that name replaces and `gc` removes.
fn commit(
    ctx: &Ctx,
    name: &str,
    staging: &Path,
    source: Source,
    default: bool,
    replace: bool,
) -> Result<()> {
    let final_dir = ctx.paths.image_dir(name);
    if replace {
        ctx.store.delete_image(name)?;
    }
    remove_dir_if_present(&final_dir)?;
    std::fs::rename(staging, &final_dir)
        .with_context(|| format!("cannot move the image into {}", final_dir.display()))?;
    crate::fault::point("image:commit");
    let image = Image {
        name: name.to_owned(),
        source: source.as_str().into(),
        has_initrd: final_dir.join(image::INITRD).exists(),
        is_default: default,
        created_at: now(),
        committed_from: match source {
            Source::Commit(from) => Some(from),
            Source::Build | Source::Import => None,
        },
    };
    if let Err(err) = ctx.store.insert_image(&image) {
        remove_dir_if_present(&final_dir)?;
        return Err(err.into());
    }
    Ok(())
}

fn copy_in(files: &ImportFiles, dir: &Path) -> Result<()> {
    let dest = ImageFiles::in_dir(dir.to_owned());
    let copy = |src: &Path, dst: &Path| -> Result<()> {
        let size = std::fs::metadata(src)
            .with_context(|| format!("cannot read {}", src.display()))?
            .len();
        cow::clone_file(src, dst, size)
            .with_context(|| format!("cannot copy {}", src.display()))?;
        Ok(())
    };
    copy(&files.kernel, &dest.kernel)?;
    copy(&files.rootfs, &dest.rootfs)?;
    if let (Some(initrd), Some(dst)) = (&files.initrd, &dest.initrd) {
        copy(initrd, dst)?;
    }
    match &files.work_seed {
        Some(seed) => copy(seed, &dest.work_seed)?,
        None => ext4::make_work_seed(&dest.work_seed)?,
    }
    write_manifest(&dest, None)
}

/// `image.json` for an imported or committed image: sizes and checksums of
/// its files; what it was built from is `base`'s, if any (the image a
/// commit came from), else the kernel's release alone.
fn write_manifest(dest: &ImageFiles, base: Option<&Manifest>) -> Result<()> {
    let mut files = std::collections::BTreeMap::new();
    let listing = std::fs::read_dir(&dest.dir)
        .with_context(|| format!("cannot list {}", dest.dir.display()))?;
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, ManifestFile::of(&entry.path())?);
    }
    let manifest = match base {
        Some(base) => Manifest {
            files,
            created_at: rfc3339(now()),
            ..base.clone()
        },
        None => {
            let kernel = std::fs::read(&dest.kernel).context("cannot read the imported kernel")?;
            Manifest {
                kernel_version: image::kernel_release(&kernel).unwrap_or_else(|| "unknown".into()),
                suite: String::new(),
                packages: Vec::new(),
                files,
                agent_version: String::new(),
                agent_sha256: String::new(),
                created_at: rfc3339(now()),
            }
        }
    };
    manifest.write(&dest.manifest)?;
    Ok(())
}

/// The `banger-agent` binary to put in images: `BANGER_AGENT`, else next to
/// this executable.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = &crate::env::Env::get().agent {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("cannot find banger's own executable")?;
    let agent = exe.with_file_name("banger-agent");
    if !agent.is_file() {
        bail!(
            "banger-agent not found next to {} (install both binaries with `cargo install --path .`, or set {})",
            exe.display(),
            crate::env::AGENT
        );
    }
    Ok(agent)
}

/// Shows build stages: a spinner on a terminal, plain lines otherwise.
struct StageProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl StageProgress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for StageProgress {
    fn stage(&self, name: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("image build: {name}")),
            None => eprintln!("image build: {name}"),
        }
    }

    fn detail(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_owned()),
            None => eprintln!("  {msg}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod commit_tests {
    //! `image commit` against the fake host: what it refuses (before any
    //! side effect), and the root disk of each cow strategy read out.

    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;
    use crate::state::model::{CowStrategy, VmName};
    use crate::vm::VmFiles;
    use crate::vm::fake::TestBed;

    fn create(bed: &TestBed, name: &str, start: bool) -> crate::state::model::Vm {
        let spec = crate::ops::create::Spec {
            name: Some(VmName::parse(name).unwrap()),
            image: Some("base".into()),
            work_size: Some(1 << 20),
            ..crate::ops::create::Spec::default()
        };
        let mut timings = bed.ctx.timings();
        crate::ops::create::create(&bed.ctx, &spec, start, &mut timings)
            .unwrap()
            .vm
    }

    /// The names in the images directory, staging directories included.
    fn image_dirs(bed: &TestBed) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(bed.ctx.paths.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn digest(path: &Path) -> String {
        ManifestFile::of(path).unwrap().sha256
    }

    /// Checksums of every file of the VM's directory.
    fn vm_files(bed: &TestBed, vm: &crate::state::model::Vm) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(bed.ctx.paths.vm_dir(&vm.id))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), digest(&p)))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn refusals_come_before_any_side_effect() {
        let bed = TestBed::new().unwrap();
        create(&bed, "up", true);
        let stopped = create(&bed, "down", false);
        let before = (image_dirs(&bed), bed.ctx.store.image_names().unwrap());
        bed.fake.world().calls.clear();
        let cases = [
            ("nope", "new", "no VM named \"nope\""),
            (
                "up",
                "new",
                "VM up is running; stop it first: banger vm stop up",
            ),
            ("down", "base", "an image named \"base\" already exists"),
        ];
        for (vm, image, message) in cases {
            let err = commit_vm(&bed.ctx, vm, image, true, false).unwrap_err();
            assert!(format!("{err:#}").contains(message), "{vm}: {err:#}");
            assert_eq!(
                (image_dirs(&bed), bed.ctx.store.image_names().unwrap()),
                before,
                "{vm}"
            );
            let world = bed.fake.world();
            assert!(
                world.calls.iter().all(|c| !c.contains("clone_file")
                    && !c.starts_with("attach_loop")
                    && !c.starts_with("scrub")),
                "{vm}: {:?}",
                world.calls
            );
        }
        let image_taken = commit_vm(&bed.ctx, "down", "base", false, false).unwrap_err();
        assert!(image_taken.downcast_ref::<UsageError>().is_some());

        // The VM's image gone from the store (as by a hand-edited database).
        bed.ctx.store.delete_image("base").unwrap();
        let err = commit_vm(&bed.ctx, "down", "new", false, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("VM down's image base no longer exists"),
            "{err:#}"
        );
        assert_eq!(image_dirs(&bed), before.0);
        assert!(bed.ctx.store.find_image("new").unwrap().is_none());
        assert_eq!(bed.ctx.store.vm("down").unwrap().id, stopped.id);
    }

    #[test]
    fn a_copy_root_is_cloned_scrubbed_and_registered_with_its_origin() {
        let bed = TestBed::new().unwrap();
        let vm = create(&bed, "a", false);
        assert_eq!(vm.cow_strategy, Some(CowStrategy::Copy));
        let root = VmFiles::of(&bed.ctx.paths, &vm).root_disk;
        let file = std::fs::OpenOptions::new().write(true).open(&root).unwrap();
        file.write_all_at(b"written by the guest", 4096).unwrap();
        let vm_before = vm_files(&bed, &vm);
        bed.fake.world().calls.clear();

        let how = commit_vm(&bed.ctx, "a", "mine", false, true).unwrap();
        assert_eq!(how, RootExport::Clone);
        let image = bed.ctx.store.image("mine").unwrap();
        assert_eq!(image.origin(), "committed from VM a of image base");
        assert_eq!(image.source, "commit");
        assert!(image.is_default);
        let new = ImageFiles::of(&bed.ctx.paths, &image);
        assert_eq!(digest(&new.rootfs), digest(&root));
        let calls = bed.fake.world().calls.clone();
        let scrubbed = format!("scrub_for_image {}", staged(&bed, "mine", image::ROOTFS));
        assert!(calls.contains(&scrubbed), "{calls:?}");
        // Kernel and work seed are the base image's files, shared.
        let base = ImageFiles::in_dir(bed.ctx.paths.image_dir("base"));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&new.kernel), ino(&base.kernel));
        assert_eq!(ino(&new.work_seed), ino(&base.work_seed));
        assert!(
            Manifest::read(&new.manifest)
                .unwrap()
                .files
                .contains_key("rootfs.ext4")
        );
        assert_eq!(vm_files(&bed, &vm), vm_before, "the VM's files changed");
        assert_eq!(image_dirs(&bed), ["base", "mine"]);

        // The VM still starts.
        let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
        locked.start(&mut bed.ctx.timings()).unwrap();
    }

    #[test]
    fn a_dm_root_is_read_through_a_read_only_snapshot_released_after() {
        let bed = TestBed::new().unwrap();
        bed.fake.world().dm = true;
        let vm = create(&bed, "a", false);
        assert_eq!(vm.cow_strategy, Some(CowStrategy::DmSnapshot));
        let files = VmFiles::of(&bed.ctx.paths, &vm);
        let vm_before = vm_files(&bed, &vm);
        bed.fake.world().calls.clear();

        let how = commit_vm(&bed.ctx, "a", "mine", true, false).unwrap();
        assert_eq!(how, RootExport::Snapshot);
        let world = bed.fake.world();
        let dm = crate::state::layout::dm(&bed.ctx.home_tag(), &vm.id);
        let base = ImageFiles::in_dir(bed.ctx.paths.image_dir("base"));
        for read_only in [base.rootfs.clone(), files.cow.clone(), PathBuf::from(&dm)] {
            assert!(
                world.read_only.contains(&read_only),
                "{read_only:?}: {world:#?}"
            );
        }
        let ops: Vec<&str> = world
            .calls
            .iter()
            .filter_map(|c| c.split(' ').next())
            .collect();
        let wanted = [
            "attach_loop",
            "attach_loop",
            "create_snapshot",
            "copy_device",
            "remove_snapshot",
        ];
        assert_eq!(ops[..wanted.len()], wanted, "{:?}", world.calls);
        assert!(world.is_clean(), "{world:#?}");
        let seed = staged(&bed, "mine", image::WORK_SEED);
        let rootfs = staged(&bed, "mine", image::ROOTFS);
        let at = |call: String| world.calls.iter().position(|c| *c == call);
        let order = [
            at(format!("check_ext4 {rootfs}")),
            at(format!("scrub_for_image {rootfs}")),
            at(format!("check_ext4 {seed}")),
            at(format!(
                "remove_authorized_key {seed} /.ssh/authorized_keys"
            )),
            at(format!("shrink_ext4 {seed}")),
        ];
        assert!(
            order.iter().all(Option::is_some) && order.is_sorted(),
            "{order:?}: {:?}",
            world.calls
        );
        drop(world);
        assert!(!crate::state::handles::Handles::path(&files.dir).exists());
        let rootfs = std::fs::read(bed.ctx.paths.image_dir("mine").join(image::ROOTFS)).unwrap();
        assert!(rootfs.starts_with(b"snapshot"));
        assert_eq!(rootfs.len() as u64, vm.disk_size);
        assert_eq!(vm_files(&bed, &vm), vm_before, "the VM's files changed");
    }

    #[test]
    fn a_dm_copy_failing_releases_the_snapshot_and_registers_nothing() {
        for stage in [
            "create_snapshot",
            "copy_device",
            "scrub_for_image",
            "shrink_ext4",
        ] {
            let bed = TestBed::new().unwrap();
            bed.fake.world().dm = true;
            create(&bed, "a", false);
            bed.fake.world().fail = Some(stage);
            let err = commit_vm(&bed.ctx, "a", "mine", true, false).unwrap_err();
            assert!(
                format!("{err:#}").contains("committing VM a as image mine failed"),
                "{stage}: {err:#}"
            );
            let world = bed.fake.world();
            assert!(world.is_clean(), "{stage}: {world:#?}");
            drop(world);
            assert_eq!(image_dirs(&bed), ["base"], "{stage}");
            assert!(bed.ctx.store.find_image("mine").unwrap().is_none());
        }
    }

    #[test]
    fn an_overlay_root_is_merged_unless_the_vm_never_booted() {
        let bed = TestBed::new().unwrap();
        bed.boot_banger_initramfs().unwrap();
        let vm = create(&bed, "a", false);
        assert_eq!(vm.cow_strategy, Some(CowStrategy::Overlay));
        let base = ImageFiles::of(&bed.ctx.paths, &bed.ctx.store.image("base").unwrap());

        let how = commit_vm(&bed.ctx, "a", "blank", false, false).unwrap();
        assert_eq!(how, RootExport::Unchanged);
        let blank = ImageFiles::of(&bed.ctx.paths, &bed.ctx.store.image("blank").unwrap());
        assert_eq!(digest(&blank.rootfs), digest(&base.rootfs));
        assert!(blank.initrd.as_deref().is_some_and(Path::exists));

        // Once booted, the upper disk holds a filesystem.
        let upper = VmFiles::of(&bed.ctx.paths, &vm).upper;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&upper)
            .unwrap();
        file.write_all_at(&[0x53, 0xef], 0x438).unwrap();
        bed.fake.world().calls.clear();
        let how = commit_vm(&bed.ctx, "a", "merged", false, false).unwrap();
        assert_eq!(how, RootExport::Overlay);
        let merged = bed.ctx.paths.image_dir("merged").join(image::ROOTFS);
        let calls = bed.fake.world().calls.clone();
        let merge = format!("merge_overlay {}", staged(&bed, "merged", image::ROOTFS));
        assert!(calls.contains(&merge), "{calls:?}");
        assert!(merged.exists());
    }

    /// The path of `file` in image `name`'s staging directory.
    fn staged(bed: &TestBed, name: &str, file: &str) -> String {
        bed.ctx
            .paths
            .image_staging(name, std::process::id())
            .join(file)
            .display()
            .to_string()
    }
}
