//! `banger vm create`: allocate a VM, make its disks, start it.

use anyhow::{Context, Result};

use super::{VmView, print_json, print_timings};
use crate::cli::{CreateArgs, VmSpec};
use crate::lifecycle::{self, Ctx, ImageFiles, Observed, Timings};
use crate::state::model::{Vm, now};
use crate::state::store::NewVm;

pub fn run(args: CreateArgs) -> Result<()> {
    let ctx = Ctx::open()?;
    let mut timings = Timings::default();
    let (vm, observed) = create(&ctx, args.name, &args.spec, !args.no_start, &mut timings)?;
    if !args.no_start {
        super::vm_run::wait_ready(
            &ctx,
            &vm,
            args.spec.wait.no_wait,
            args.spec.wait.timeout,
            &mut timings,
        )?;
    }
    if args.spec.wait.timings {
        print_timings(&timings);
    }
    let view = VmView::new(&ctx, &vm, &observed);
    if args.json {
        let view = if args.spec.wait.timings {
            view.with_timings(&timings)
        } else {
            view
        };
        print_json(&view)?;
    } else {
        eprintln!(
            "created VM {} ({}, {}) in {:.1}s",
            vm.name,
            vm.ip,
            ctx.dns_name(&vm),
            timings.total().as_secs_f64()
        );
        println!("{}", vm.name);
    }
    Ok(())
}

/// Creates a VM and, when `start` is set, starts it. Used by `vm run` and
/// `bench` too. A VM that never became usable (its disks failed) is deleted;
/// one that failed to start is left stopped with `last_error`.
pub fn create(
    ctx: &Ctx,
    name: Option<String>,
    spec: &VmSpec,
    start: bool,
    timings: &mut Timings,
) -> Result<(Vm, Observed)> {
    if start {
        // A missing VMM is known now: refuse before making anything.
        crate::host::firecracker::process::find_binary(ctx.config.firecracker.as_deref())?;
    }
    let image = match &spec.image {
        Some(name) => ctx.store.image(name)?,
        None => timings.time("image", || super::image_build::ensure_default_image(ctx))?,
    };
    let image_files = ImageFiles::of(&ctx.paths, &image);
    let rootfs_size = lifecycle::file_size(&image_files.rootfs)?;
    let disk_size = spec.disk_size.unwrap_or(rootfs_size);
    if disk_size < rootfs_size {
        return Err(super::UsageError(format!(
            "--disk-size {} is smaller than image {}'s root filesystem ({} bytes)",
            disk_size, image.name, rootfs_size
        ))
        .into());
    }
    let new = NewVm {
        name,
        image: image.name.clone(),
        vcpus: spec.vcpus.unwrap_or(ctx.config.vcpus),
        memory_mib: spec.memory.unwrap_or(ctx.config.memory_mib),
        disk_size,
        work_size: spec.work_size.unwrap_or(ctx.config.work_size),
        nat: !spec.no_nat,
        expires_at: spec.ttl.map(|ttl| now() + ttl.as_secs() as i64),
    };
    let id = new_id();
    let _vm_lock = crate::state::lock::acquire(
        &ctx.paths.vm_lock(&id),
        "new VM",
        crate::state::lock::DEFAULT_TIMEOUT,
        &|_, _| {},
    )?;
    let mut vm = timings.time("allocate", || {
        Ok(ctx
            .store
            .insert_vm(&new, &id, &ctx.config.subnet, &generated_name)?)
    })?;
    if start {
        lifecycle::record_start_intent(ctx, &mut vm)?;
    }
    let prepared = {
        let _image_lock = ctx.lock_image_shared(&image.name)?;
        timings.time("disks", || lifecycle::prepare_disks(ctx, &vm, &image_files))
    };
    match prepared {
        Ok(strategy) => {
            vm.cow_strategy = Some(strategy.as_str().to_owned());
            vm.creating = false;
        }
        Err(err) => {
            lifecycle::remove(ctx, &vm).context("cleaning up the half-created VM")?;
            return Err(err.context(format!("cannot make the disks of VM {}", vm.name)));
        }
    }
    if !start {
        return Ok((vm, Observed::default()));
    }
    let pid = lifecycle::start(ctx, &mut vm, timings).with_context(|| {
        format!(
            "VM {} was created but did not start; it is left stopped",
            vm.name
        )
    })?;
    let observed = lifecycle::observe(&ctx.paths, &vm);
    debug_assert_eq!(observed.pid, Some(pid));
    Ok((vm, observed))
}

/// A random 10-hex-digit id: short enough for interface names (`bg-<id>`).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness for every instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "happy", "icy", "jolly", "keen",
    "lucky", "mellow", "nimble", "odd", "proud", "quick", "rusty", "shy", "tidy", "vivid", "witty",
    "young", "zesty",
];
const NOUNS: &[&str] = &[
    "badger", "comet", "dingo", "ember", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
    "lemur", "moose", "newt", "otter", "panda", "quail", "raven", "seal", "tapir", "urchin",
    "viper", "walrus", "yak", "zebra",
];

/// A readable name for the n-th attempt: `brave-otter`, then with a number.
fn generated_name(attempt: u32) -> String {
    let seed = u32::from_str_radix(&new_id()[..8], 16).unwrap_or(attempt);
    let adjective = ADJECTIVES[seed as usize % ADJECTIVES.len()];
    let noun = NOUNS[(seed / 97) as usize % NOUNS.len()];
    if attempt < 8 {
        format!("{adjective}-{noun}")
    } else {
        format!("{adjective}-{noun}-{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_generated_names_are_valid() {
        let id = new_id();
        assert_eq!(id.len(), 10);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(format!("bg-{id}").len() <= 15);
        for attempt in [0, 9, 100] {
            crate::state::parse::vm_name(&generated_name(attempt)).unwrap();
        }
    }
}
