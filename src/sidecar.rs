//! The sidecar's main loop: one per host (a flock on its lock file), it
//! serves VM names on the bridge and keeps the TAP pool warm, and exits once
//! no VM has been running for a grace period.
//!
//! It knows VMs only through [`VmDirectory`]; starting it detached and
//! pointing its stderr at a log file is the caller's job.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::host::dns::{
    DnsConfig, DnsServer, NameLookup, route_domain_via_resolved, unroute_domain_via_resolved,
    upstream_resolvers,
};
use crate::host::net::bridge::ensure_bridge;
use crate::host::net::tap::{drain_pool, fill_pool};

/// How often the sidecar checks the pool and whether VMs still run.
const TICK: Duration = Duration::from_secs(1);
/// Time budget for one forwarded DNS query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the sidecar needs to know about the host setup.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// The flock that makes this the only sidecar (`/run/banger/sidecar.lock`).
    pub lock_path: PathBuf,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Domain answered for VM names, e.g. `vm`.
    pub domain: String,
    pub dns_port: u16,
    /// Idle TAPs are named `<pool_prefix><n>`.
    pub pool_prefix: String,
    pub pool_size: usize,
    /// How long no VM may run before the sidecar exits.
    pub grace: Duration,
}

/// The VMs the sidecar serves: their names and whether any is running.
pub trait VmDirectory: NameLookup {
    fn any_running(&self) -> bool;
}

/// Runs the sidecar until it has been idle for `opts.grace`. Returns `Ok`
/// at once, doing nothing, when another sidecar holds the lock.
pub fn run(opts: &SidecarOptions, vms: Arc<dyn VmDirectory>) -> anyhow::Result<()> {
    loop {
        let Some(lock) = take_lock_patiently(&opts.lock_path)? else {
            log("another sidecar is running; exiting");
            return Ok(());
        };
        log(&format!("started (pid {})", std::process::id()));
        serve(opts, &vms)?;
        drop(lock);
        // A command that started a VM while we wound down saw the lock held
        // and did not start a sidecar: look once more after releasing it.
        if !vms.any_running() {
            log("no VM running; exited");
            return Ok(());
        }
        log("a VM started while stopping; serving again");
    }
}

/// Starts and probes the sidecar for VM lifecycles (`vm::host::Sidecar`).
pub struct Control {
    lock_path: PathBuf,
    log_path: PathBuf,
}

impl Control {
    pub fn new(paths: &crate::state::paths::Paths) -> Self {
        Self {
            lock_path: paths.sidecar_lock(),
            log_path: paths.sidecar_log(),
        }
    }
}

impl crate::vm::host::Sidecar for Control {
    fn is_alive(&self) -> bool {
        is_alive(&self.lock_path)
    }

    /// Starts `banger sidecar` detached in its own session, its output
    /// appended to the sidecar log, unless one is alive.
    fn ensure_running(&self) -> anyhow::Result<()> {
        if is_alive(&self.lock_path) {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let exe = std::env::current_exe().context("cannot find banger's own executable")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("sidecar");
        let stdout = log.try_clone().context("sidecar log")?;
        crate::host::procs::spawn_detached(&mut cmd, stdout, log)
            .context("cannot start the sidecar")?;
        Ok(())
    }
}

/// Whether a sidecar holds the lock at `lock_path`.
pub fn is_alive(lock_path: &Path) -> bool {
    crate::state::lock::is_held(lock_path)
}

/// [`take_lock`], retried for a moment: [`is_alive`] probes by taking the
/// lock briefly, and such a probe must not make a starting sidecar give up.
fn take_lock_patiently(path: &Path) -> anyhow::Result<Option<File>> {
    for _ in 0..10 {
        if let Some(lock) = take_lock(path)? {
            return Ok(Some(lock));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// Takes the sidecar lock and records our pid in it; `None` if it is held.
fn take_lock(path: &Path) -> anyhow::Result<Option<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the sidecar lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write our pid to {}", path.display()))?;
    Ok(Some(file))
}

fn serve(opts: &SidecarOptions, vms: &Arc<dyn VmDirectory>) -> anyhow::Result<()> {
    ensure_bridge(&opts.bridge, opts.gateway, opts.prefix_len)
        .with_context(|| format!("cannot set up bridge {}", opts.bridge))?;
    let upstreams = upstream_resolvers();
    let names: Arc<dyn NameLookup> = vms.clone();
    let dns = DnsServer::start(
        DnsConfig {
            listen: SocketAddr::new(opts.gateway.into(), opts.dns_port),
            domain: opts.domain.clone(),
            upstreams: upstreams.clone(),
            upstream_timeout: UPSTREAM_TIMEOUT,
        },
        names,
    )
    .context("cannot start the DNS server")?;
    log(&format!(
        "serving *.{} on {}, forwarding to {upstreams:?}",
        opts.domain,
        dns.local_addr()
    ));
    match route_domain_via_resolved(&opts.bridge, opts.gateway, &opts.domain) {
        Ok(true) => log(&format!("systemd-resolved routes ~{} to us", opts.domain)),
        Ok(false) => {}
        Err(err) => log(&format!(
            "cannot route ~{} via systemd-resolved: {:#}",
            opts.domain,
            anyhow::Error::new(err)
        )),
    }

    let mut idle_since: Option<Instant> = None;
    loop {
        keep_up(opts);
        if vms.any_running() {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= opts.grace {
            break;
        }
        thread::sleep(TICK.min(opts.grace.max(Duration::from_millis(100))));
    }

    match drain_pool(&opts.pool_prefix) {
        Ok(deleted) => log(&format!(
            "idle for {:?}; deleted {deleted} pool TAPs",
            opts.grace
        )),
        Err(err) => log(&format!(
            "cannot delete the pool TAPs: {:#}",
            anyhow::Error::new(err)
        )),
    }
    // Names of this domain would otherwise go on being sent to a bridge
    // where nothing answers.
    match unroute_domain_via_resolved(&opts.bridge) {
        Ok(true) => log(&format!(
            "systemd-resolved no longer routes ~{}",
            opts.domain
        )),
        Ok(false) => {}
        Err(err) => log(&format!(
            "cannot undo the ~{} route in systemd-resolved: {:#}",
            opts.domain,
            anyhow::Error::new(err)
        )),
    }
    dns.stop();
    Ok(())
}

/// One tick of upkeep: the bridge is still there and the pool is full.
fn keep_up(opts: &SidecarOptions) {
    if let Err(err) = ensure_bridge(&opts.bridge, opts.gateway, opts.prefix_len) {
        log(&format!(
            "cannot restore bridge {}: {:#}",
            opts.bridge,
            anyhow::Error::new(err)
        ));
        return;
    }
    match fill_pool(&opts.pool_prefix, &opts.bridge, opts.pool_size) {
        Ok(0) => {}
        Ok(created) => log(&format!("created {created} pool TAPs")),
        Err(err) => log(&format!(
            "cannot fill the TAP pool: {:#}",
            anyhow::Error::new(err)
        )),
    }
}

/// One line to stderr, which the caller points at the sidecar's log file.
fn log(message: &str) {
    let _ = writeln!(io::stderr().lock(), "banger sidecar: {message}");
}
