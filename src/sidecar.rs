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
use crate::host::net::tap::{drain_pool, fill_pool, owned_links, reattach};

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
    /// The mark (interface alias) of this home's TAPs; others' are left alone.
    pub tap_owner: String,
    pub pool_size: usize,
    /// How long no VM may run before the sidecar exits.
    pub grace: Duration,
}

/// The VMs the sidecar serves: their names and whether any is running.
pub trait VmDirectory: NameLookup {
    fn any_running(&self) -> bool;
    /// The TAPs of the running VMs (re-attached to a bridge made again).
    fn running_taps(&self) -> Vec<String> {
        Vec::new()
    }
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
        if !is_alive(&self.lock_path) {
            self.spawn()?;
        }
        if let Some(why) = dns_failure(&self.lock_path) {
            eprintln!(
                "warning: VM names do not resolve: the sidecar {why} (VMs run and are reachable \
                 by IP; `banger doctor` checks)"
            );
        }
        Ok(())
    }
}

impl Control {
    /// Starts the sidecar and waits (briefly) until it says whether it
    /// serves DNS.
    fn spawn(&self) -> anyhow::Result<()> {
        let status = dns_status_path(&self.lock_path);
        let _ = std::fs::remove_file(&status);
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
        let deadline = Instant::now() + STATUS_WAIT;
        while !status.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// How long a command that started the sidecar waits for its DNS status.
const STATUS_WAIT: Duration = Duration::from_secs(2);

/// The sidecar's DNS status, beside its lock: `ok ADDR` or `failed MESSAGE`.
pub fn dns_status_path(lock_path: &Path) -> PathBuf {
    lock_path.with_file_name("sidecar.dns")
}

fn write_dns_status(path: &Path, line: &str) {
    if let Err(err) = crate::state::atomic::write(path, format!("{line}\n").as_bytes(), 0o600) {
        log(&format!("cannot write {}: {err}", path.display()));
    }
}

/// Why the running sidecar serves no DNS, if it said so in its status.
pub fn dns_failure(lock_path: &Path) -> Option<String> {
    use std::io::Read;
    let file = File::open(dns_status_path(lock_path)).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).ok()?;
    text.trim_end().strip_prefix("failed ").map(str::to_owned)
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
    let listen = SocketAddr::new(opts.gateway.into(), opts.dns_port);
    let status = dns_status_path(&opts.lock_path);
    // Without DNS the sidecar still keeps the bridge and the TAP pool; the
    // status file makes starting commands warn and `doctor` fail.
    let dns = match DnsServer::start(
        DnsConfig {
            listen,
            domain: opts.domain.clone(),
            upstreams: upstreams.clone(),
            upstream_timeout: UPSTREAM_TIMEOUT,
        },
        names,
    ) {
        Ok(dns) => {
            log(&format!(
                "serving *.{} on {}, forwarding to {upstreams:?}",
                opts.domain,
                dns.local_addr()
            ));
            write_dns_status(&status, &format!("ok {}", dns.local_addr()));
            Some(dns)
        }
        Err(err) => {
            let message = format!(
                "cannot serve *.{} on {listen}: {:#}",
                opts.domain,
                anyhow::Error::new(err)
            );
            log(&message);
            write_dns_status(&status, &format!("failed {message}"));
            None
        }
    };
    if dns.is_some() {
        match route_domain_via_resolved(&opts.bridge, opts.gateway, &opts.domain) {
            Ok(true) => log(&format!("systemd-resolved routes ~{} to us", opts.domain)),
            Ok(false) => {}
            Err(err) => log(&format!(
                "cannot route ~{} via systemd-resolved: {:#}",
                opts.domain,
                anyhow::Error::new(err)
            )),
        }
    }

    let mut idle_since: Option<Instant> = None;
    loop {
        keep_up(opts, vms.as_ref());
        if vms.any_running() {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= opts.grace {
            break;
        }
        thread::sleep(TICK.min(opts.grace.max(Duration::from_millis(100))));
    }

    match drain_pool(&opts.pool_prefix, &opts.tap_owner) {
        Ok(deleted) => log(&format!(
            "idle for {:?}; deleted {deleted} pool TAPs",
            opts.grace
        )),
        Err(err) => log(&format!(
            "cannot delete the pool TAPs: {:#}",
            anyhow::Error::new(err)
        )),
    }
    let _ = std::fs::remove_file(&status);
    let Some(dns) = dns else {
        return Ok(());
    };
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

/// One tick of upkeep: the bridge is still there with the running VMs' and
/// the pool's TAPs on it (a bridge deleted and made again has none), and
/// the pool is full.
fn keep_up(opts: &SidecarOptions, vms: &dyn VmDirectory) {
    if let Err(err) = ensure_bridge(&opts.bridge, opts.gateway, opts.prefix_len) {
        log(&format!(
            "cannot restore bridge {}: {:#}",
            opts.bridge,
            anyhow::Error::new(err)
        ));
        return;
    }
    let mut taps = vms.running_taps();
    taps.extend(owned_links(&opts.pool_prefix, &opts.tap_owner).unwrap_or_default());
    match reattach(&taps, &opts.bridge) {
        Ok(attached) if attached.is_empty() => {}
        Ok(attached) => log(&format!(
            "attached {} to bridge {} again",
            attached.join(", "),
            opts.bridge
        )),
        Err(err) => log(&format!(
            "cannot attach TAPs to bridge {}: {:#}",
            opts.bridge,
            anyhow::Error::new(err)
        )),
    }
    match fill_pool(
        &opts.pool_prefix,
        &opts.bridge,
        opts.pool_size,
        &opts.tap_owner,
    ) {
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
