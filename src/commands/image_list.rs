//! `banger image list`, `image show` and `image default`.

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Global, print_json, print_table};
use crate::cli::{ImageNameArg, ImageShowArgs, ListArgs};
use crate::state::model::{CommittedFrom, Image, rfc3339};
use crate::vm::{Ctx, ImageFiles};

#[derive(Serialize)]
struct ImageView {
    name: String,
    source: String,
    /// Where it came from: `built`, `imported`, `committed from VM … of image …`.
    origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    committed_from: Option<CommittedFrom>,
    default: bool,
    has_initrd: bool,
    created_at: String,
    dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<serde_json::Value>,
}

fn view(ctx: &Ctx, image: &Image, with_manifest: bool) -> ImageView {
    let files = ImageFiles::of(&ctx.paths, image);
    let manifest = with_manifest
        .then(|| std::fs::read(&files.manifest).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    ImageView {
        name: image.name.clone(),
        source: image.source.clone(),
        origin: image.origin(),
        committed_from: image.committed_from.clone(),
        default: image.is_default,
        has_initrd: image.has_initrd,
        created_at: rfc3339(image.created_at),
        dir: files.dir.display().to_string(),
        manifest,
    }
}

pub fn list(args: ListArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let images = ctx.store.list_images()?;
    if args.quiet {
        for image in &images {
            outln!("{}", image.name)?;
        }
        return Ok(());
    }
    let views: Vec<_> = images.iter().map(|i| view(&ctx, i, false)).collect();
    if args.json {
        return print_json(&views);
    }
    let rows: Vec<_> = views
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                if v.default { "*" } else { "" }.into(),
                v.source.clone(),
                v.created_at.clone(),
            ]
        })
        .collect();
    print_table(&["NAME", "DEFAULT", "SOURCE", "CREATED"], &rows)?;
    Ok(())
}

pub fn show(args: ImageShowArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let image = ctx.store.image(&args.name)?;
    let view = view(&ctx, &image, true);
    if args.json {
        return print_json(&view);
    }
    outln!("{:<13} {}", "name", view.name)?;
    outln!(
        "{:<13} {}",
        "default",
        if view.default { "yes" } else { "no" }
    )?;
    outln!("{:<13} {}", "source", view.source)?;
    outln!("{:<13} {}", "origin", view.origin)?;
    outln!("{:<13} {}", "created", view.created_at)?;
    outln!("{:<13} {}", "files", view.dir)?;
    if let Some(manifest) = &view.manifest {
        outln!(
            "manifest:\n{}",
            serde_json::to_string_pretty(manifest).context("manifest")?
        )?;
    }
    Ok(())
}

pub fn set_default(args: ImageNameArg, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    ctx.store.set_default_image(&args.name)?;
    eprintln!("image {} is now the default", args.name);
    Ok(())
}
