//! `banger image build`: a bootable image from Debian packages alone.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{UsageError, print_json};
use crate::cli::ImageBuildArgs;
use crate::host::image::{self, BuildOptions, Manifest, Progress};
use crate::lifecycle::{Ctx, remove_dir_if_present};
use crate::state::model::{Image, now};

/// Name of the image `vm create`/`vm run` build when there is none.
pub const DEFAULT_IMAGE: &str = "default";

pub fn run(args: ImageBuildArgs) -> Result<()> {
    if args.kernel.is_none() && args.initrd.is_some() {
        return Err(UsageError("--initrd needs --kernel".into()).into());
    }
    for (flag, path) in [("--kernel", &args.kernel), ("--initrd", &args.initrd)] {
        if let Some(path) = path {
            let why = match std::fs::metadata(path) {
                Err(e) => e.to_string(),
                Ok(meta) if !meta.is_file() => "not a regular file".into(),
                Ok(meta) if meta.len() == 0 => "the file is empty".into(),
                Ok(_) => continue,
            };
            return Err(UsageError(format!("{flag} {}: {why}", path.display())).into());
        }
    }
    if let Some(kernel) = &args.kernel {
        image::check_elf(
            &std::fs::read(kernel).with_context(|| format!("cannot read {}", kernel.display()))?,
            &kernel.display().to_string(),
        )
        .map_err(|e| UsageError(format!("--kernel: {e}")))?;
    }
    let ctx = Ctx::open()?;
    let options = BuildOptions {
        suite: args.suite.clone(),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        size: args.size,
        packages: args.packages.clone(),
        agent_binary: agent_binary()?,
        cache_dir: ctx.paths.cache_dir(),
    };
    let if_exists = if args.force {
        IfExists::Replace
    } else {
        IfExists::Fail
    };
    let manifest = build(&ctx, &args.name, &options, args.default, if_exists)?;
    if args.json {
        print_json(&manifest)?;
    }
    Ok(())
}

/// What to do when the image already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Replace,
    /// Keep it (someone else built it meanwhile) and return its manifest.
    Keep,
}

/// Builds the default image unless there is a default already: so on a fresh
/// host `banger vm run` is the whole set-up.
pub fn ensure_default_image(ctx: &Ctx) -> Result<Image> {
    if let Some(image) = ctx.store.default_image()? {
        return Ok(image);
    }
    eprintln!(
        "no image yet: building {DEFAULT_IMAGE:?} from Debian packages (once; a few minutes)"
    );
    let options = BuildOptions {
        suite: "bookworm".into(),
        kernel: None,
        initrd: None,
        size: None,
        packages: Vec::new(),
        agent_binary: agent_binary()?,
        cache_dir: ctx.paths.cache_dir(),
    };
    build(ctx, DEFAULT_IMAGE, &options, true, IfExists::Keep)?;
    Ok(ctx.store.image(DEFAULT_IMAGE)?)
}

/// Builds `name` into a staging directory, then swaps it into place and
/// registers it. A failed or interrupted build registers nothing.
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
            &ctx.paths.image_dir(name).join(image::MANIFEST),
        )?);
    }
    if exists && if_exists == IfExists::Fail {
        return Err(UsageError(format!(
            "image {name:?} already exists; pass --force to replace it"
        ))
        .into());
    }
    let force = exists;
    if force {
        let users = ctx.store.vms_using_image(name)?;
        if !users.is_empty() {
            bail!(
                "image {name} is used by VM(s) {}; delete them before replacing it",
                users.join(", ")
            );
        }
    }
    let staging = super::image_import::staging_dir(ctx, name);
    remove_dir_if_present(&staging)?;
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
    let final_dir = ctx.paths.image_dir(name);
    if force {
        ctx.store.delete_image(name)?;
    }
    remove_dir_if_present(&final_dir)?;
    std::fs::rename(&staging, &final_dir)
        .with_context(|| format!("cannot move the image into {}", final_dir.display()))?;
    let image = Image {
        name: name.to_owned(),
        source: "build".into(),
        has_initrd: final_dir.join(image::INITRD).exists(),
        is_default: default,
        created_at: now(),
    };
    ctx.store.insert_image(&image)?;
    eprintln!(
        "built image {name} in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(manifest)
}

/// The `banger-agent` binary to put in images: `BANGER_AGENT`, else next to
/// this executable.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BANGER_AGENT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find banger's own executable")?;
    let agent = exe.with_file_name("banger-agent");
    if !agent.is_file() {
        bail!(
            "banger-agent not found next to {} (install both binaries with `cargo install --path .`, or set BANGER_AGENT)",
            exe.display()
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
