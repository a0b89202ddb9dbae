//! `banger vm run`: create (or start, or reuse) a VM, wait until it answers,
//! copy files in (`--copy`), run a command in it over SSH, copy files out
//! (`--copy-out`, whatever the command's exit code) and return that
//! command's exit code. With `--rm`, a VM this run created is deleted
//! afterwards whatever happened (a failed start or wait, the command's
//! failure, SIGINT/SIGTERM/SIGHUP), after its logs' last lines have been
//! shown; a VM it only borrowed stays. While the run lasts, such a VM holds
//! a short, renewed TTL, so that `gc` removes it if banger is killed outright.

use anyhow::{Context, Result};

use super::{Global, print_timings};
use crate::cli::RunArgs;
use crate::ops;
use crate::ops::create::Lease;
use crate::ops::diagnose::{Evidence, LogMark};
use crate::ops::interrupt;
use crate::ops::ready::Left;
use crate::state::model::Vm;
use crate::vm::{Ctx, LockedVm, Timings};

pub fn run(args: RunArgs, global: &Global) -> Result<i32> {
    let ctx = global.ctx()?;
    let mut timings = ctx.timings();
    let existing = match &args.name {
        Some(name) => ctx.store.find_vm(name.as_str())?,
        None => None,
    };
    if let Some(vm) = &existing
        && !args.spec.publish.is_empty()
        && args.spec.publish != vm.published
    {
        // Ports are fixed when a VM is created.
        eprintln!(
            "banger: VM {} existed before this run; --publish leaves its ports as they are",
            vm.name
        );
    }
    if args.rm {
        match &existing {
            Some(vm) => eprintln!(
                "banger: VM {} existed before this run; --rm leaves it",
                vm.name
            ),
            None => interrupt::catch(),
        }
    }
    let run = Run {
        ctx: &ctx,
        args: &args,
        created: existing.is_none(),
    };
    // Held while the run lasts: a VM it makes for `--rm` expires soon
    // after the run is killed outright.
    let mut lease = None;
    let (vm, mark) = match existing {
        Some(vm) => {
            let mut locked = LockedVm::lock(&ctx, vm)?;
            let mark = LogMark::of(&ctx, locked.vm());
            if locked.observed().pid.is_none()
                && let Err(err) = locked.start(&mut timings)
            {
                let vm = locked.vm().clone();
                drop(locked);
                return run.failed(err, &vm, mark, &timings, false);
            }
            (locked.read().vm, mark)
        }
        None => {
            let mut spec = args.spec.resolve(args.name.clone());
            // A missing VMM is known now: refuse before making anything.
            crate::vm::vmm_choice::pick(&ctx, spec.vmm)?;
            let user_ttl = spec.ttl;
            if args.rm {
                spec.ttl = Lease::first_expiry(user_ttl)?;
            }
            // A warm pool's VM, booted already, when one matches.
            if let Some(claimed) = ops::pool::claim(&ctx, &spec, &mut timings)? {
                let vm = claimed.vm;
                if args.rm {
                    let user_expiry = user_ttl.map(|ttl| vm.created_at + ttl.as_secs() as i64);
                    lease = Some(Lease::hold(&ctx, &vm.id, user_expiry)?);
                }
                let mark = LogMark::of(&ctx, &vm);
                (vm, mark)
            } else {
                match cold(&ctx, &run, &spec, user_ttl, &mut lease, &mut timings) {
                    Ok(made) => made,
                    Err(ColdFailed::Code(code)) => return code,
                }
            }
        }
    };
    let vm = match ops::ready::wait(&ctx, &vm, args.spec.wait.timeout, &mut timings) {
        Ok(vm) => vm,
        Err(err) => return run.failed(err, &vm, mark, &timings, true),
    };
    if args.spec.wait.timings {
        print_timings(&timings);
    }
    let outcome = ops::copy::around(&ctx, &vm, &args.copy, &args.copy_out, || {
        ops::ssh::run(&ctx, &vm, &args.command)
    });
    run.clean_up(&vm)?;
    drop(lease);
    outcome
}

/// Makes and starts the VM of a run that claimed none from a pool; with
/// `--rm`, its lease is held from the moment it exists. A failed start is
/// the run's result (`Err(code)`), the VM dealt with as `--rm` says.
fn cold(
    ctx: &Ctx,
    run: &Run<'_>,
    spec: &ops::create::Spec,
    user_ttl: Option<std::time::Duration>,
    lease: &mut Option<Lease>,
    timings: &mut Timings,
) -> Result<(Vm, LogMark), ColdFailed> {
    let made = ops::create::create(ctx, spec, false, timings)?.vm;
    if run.args.rm {
        let user_expiry = user_ttl.map(|ttl| made.created_at + ttl.as_secs() as i64);
        *lease = Some(Lease::hold(ctx, &made.id, user_expiry)?);
    }
    let mut locked = LockedVm::lock(ctx, made)?;
    let started = match interrupt::caught() {
        Some(_) => Ok(0),
        None => locked.start(timings),
    };
    let vm = locked.read().vm;
    drop(locked);
    if let Err(err) = started {
        return Err(ColdFailed::Code(run.failed(
            err,
            &vm,
            LogMark::default(),
            timings,
            false,
        )));
    }
    Ok((vm, LogMark::default()))
}

/// How a cold start ends a run early: an error, or the exit code
/// [`Run::failed`] settled on.
enum ColdFailed {
    Code(Result<i32>),
}

impl From<anyhow::Error> for ColdFailed {
    fn from(err: anyhow::Error) -> Self {
        Self::Code(Err(err))
    }
}

/// One `vm run`: what it was asked and whether it created its VM.
struct Run<'a> {
    ctx: &'a Ctx,
    args: &'a RunArgs,
    created: bool,
}

impl Run<'_> {
    /// Whether this run deletes its VM when it ends.
    fn deletes(&self) -> bool {
        self.args.rm && self.created
    }

    /// Deletes the VM if this run should.
    fn clean_up(&self, vm: &Vm) -> Result<()> {
        if !self.deletes() {
            return Ok(());
        }
        let Some(vm) = self.ctx.store.find_vm(vm.name.as_str())? else {
            return Ok(());
        };
        let name = vm.name.clone();
        LockedVm::lock(self.ctx, vm)?
            .delete(true)
            .with_context(|| format!("cannot delete VM {name}"))
    }

    /// A start (`waited`: false) or a wait for the guest that failed: shows
    /// the timings and the logs' last lines (and, after a wait, the likely
    /// cause, under the error), deletes the VM if this run should, and
    /// reports what became of it. A signal ends the run with 128 + its number.
    fn failed(
        &self,
        err: anyhow::Error,
        vm: &Vm,
        mark: LogMark,
        timings: &Timings,
        waited: bool,
    ) -> Result<i32> {
        if self.args.spec.wait.timings {
            print_timings(timings);
        }
        let evidence = Evidence::read(self.ctx, vm, mark);
        // A failed wait shows it under its error; a failed start before it.
        let shown = if waited {
            evidence.under(&err)
        } else {
            eprint!("{}", evidence.logs());
            String::new()
        };
        let left = if self.deletes() {
            self.clean_up(vm)?;
            Left::Deleted
        } else {
            Left::Kept {
                running: evidence.running,
            }
        };
        let err = ops::ready::failure(err, vm.name.as_str(), left, &shown);
        match interrupt::caught() {
            Some(signal) => {
                eprintln!("banger: {err}");
                Ok(interrupt::exit_code(signal))
            }
            None => Err(err),
        }
    }
}
