//! One file per command, each a `run(args, global)` that reads top to
//! bottom as the user's story: resolve the input, call one `ops` flow or one
//! method of a locked VM, print. Commands never import each other; what
//! several share lives in `ops`, and presentation helpers live here.

/// `println!` that hands the write's error back instead of panicking: a
/// closed pipe (`banger vm ls | head -1`) ends the command quietly (see
/// `main`). Every command writes its stdout through this.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub mod bench;
pub mod completions;
pub mod doctor;
pub mod gc;
pub mod image_build;
pub mod image_commit;
pub mod image_delete;
pub mod image_import;
pub mod image_list;
pub mod pool;
pub mod sidecar;
pub mod vm_cp;
pub mod vm_create;
pub mod vm_delete;
pub mod vm_list;
pub mod vm_logs;
pub mod vm_port;
pub mod vm_run;
pub mod vm_show;
pub mod vm_ssh;
pub mod vm_ssh_config;
pub mod vm_start;
pub mod vm_stop;

use serde::Serialize;

pub use crate::ops::UsageError;
use crate::state::model::{VmId, VmName, VmState, rfc3339};
use crate::state::parse::format_size;
use crate::vm::{Ctx, Timings, VmRead};

/// Options every command shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global {
    /// `-v`: stage lines on stderr.
    pub verbose: u8,
}

impl Global {
    /// Opens banger's state with the real host.
    pub fn ctx(&self) -> anyhow::Result<Ctx> {
        Ctx::open(self.verbose > 0)
    }
}

/// A VM as `--json` shows it (the CLI contract in the design).
#[derive(Debug, Serialize)]
pub struct VmView {
    pub id: VmId,
    pub name: VmName,
    pub state: VmState,
    pub status: crate::vm::VmStatus,
    pub image: String,
    pub ip: String,
    pub mac: String,
    pub dns_name: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub disk_size: u64,
    pub work_size: u64,
    pub vsock_cid: u32,
    pub nat: bool,
    pub published: Vec<crate::state::model::PublishedPort>,
    pub pid: Option<u32>,
    pub tap: Option<String>,
    pub cow_strategy: Option<crate::state::model::CowStrategy>,
    /// The VMM it runs under (or ran under last).
    pub vmm: crate::state::model::VmmKind,
    /// For a VM a warm pool keeps (`vm ls --all`): `ready` or `filling`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<&'static str>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<serde_json::Map<String, serde_json::Value>>,
}

impl VmView {
    pub fn new(ctx: &Ctx, read: &VmRead) -> Self {
        let (vm, observed) = (&read.vm, &read.observed);
        let running = observed.pid.is_some();
        Self {
            id: vm.id.clone(),
            name: vm.name.clone(),
            state: observed.state(),
            status: read.status(),
            image: vm.image.clone(),
            ip: vm.ip.to_string(),
            mac: vm.mac.clone(),
            dns_name: ctx.dns_name(vm),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_size: vm.disk_size,
            work_size: vm.work_size,
            vsock_cid: vm.vsock_cid,
            nat: vm.nat,
            published: vm.published.clone(),
            pid: observed.pid,
            tap: if running {
                observed.handles.tap.clone()
            } else {
                None
            },
            cow_strategy: vm.cow_strategy,
            vmm: vm.vmm,
            pool: None,
            created_at: rfc3339(vm.created_at),
            expires_at: vm.expires_at.map(rfc3339),
            last_error: read.last_error(),
            timings: None,
        }
    }

    /// The published ports as `127.0.0.1:2222->22/tcp`, comma separated;
    /// `-` when there are none.
    pub fn ports(&self) -> String {
        if self.published.is_empty() {
            return "-".to_owned();
        }
        let ports: Vec<String> = self.published.iter().map(ToString::to_string).collect();
        ports.join(",")
    }

    pub fn with_timings(mut self, timings: &Timings) -> Self {
        let mut map: serde_json::Map<String, serde_json::Value> = timings
            .stages
            .iter()
            .chain(&timings.overlapped)
            .map(|(stage, d)| {
                (
                    (*stage).to_owned(),
                    serde_json::json!(d.as_secs_f64() * 1000.0),
                )
            })
            .collect();
        if let Some(pool) = &timings.pool {
            map.insert("pool".to_owned(), serde_json::json!(pool));
        }
        self.timings = Some(map);
        self
    }
}

/// Prints stage timings to stderr, one line each, and the total.
pub fn print_timings(timings: &Timings) {
    if let Some(pool) = &timings.pool {
        eprintln!("  {:<12} {pool}", "pool");
    }
    if let Some(vmm) = timings.vmm {
        eprintln!("  {:<12} {:>8}", "vmm", vmm.as_str());
    }
    for (stage, duration) in &timings.stages {
        eprintln!("  {stage:<12} {:>8.1} ms", duration.as_secs_f64() * 1000.0);
    }
    eprintln!(
        "  {:<12} {:>8.1} ms",
        "total",
        timings.total().as_secs_f64() * 1000.0
    );
    for (stage, duration) in &timings.overlapped {
        eprintln!(
            "  {stage:<12} {:>8.1} ms (alongside configure)",
            duration.as_secs_f64() * 1000.0
        );
    }
}

/// Prints rows as aligned columns with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", out.trim_end())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// The one-line human summary of a VM in `vm ls`.
pub fn vm_row(view: &VmView) -> Vec<String> {
    vec![
        view.name.to_string(),
        // Software-CPU VMs are marked: their boots take tens of seconds;
        // and so are the VMs pools keep (`vm ls --all`).
        [
            Some(view.state.as_str()),
            (view.vmm == crate::state::model::VmmKind::Qemu).then_some("(qemu)"),
            view.pool.map(|p| {
                if p == "ready" {
                    "(pool)"
                } else {
                    "(pool, filling)"
                }
            }),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" "),
        view.ip.clone(),
        view.ports(),
        view.image.clone(),
        view.vcpus.to_string(),
        format_size(u64::from(view.memory_mib) << 20),
        format_size(view.work_size),
        view.created_at.clone(),
    ]
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The command modules declared above.
    fn commands() -> Vec<String> {
        include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn no_command_imports_another() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
        let commands = commands();
        assert!(commands.len() > 10, "{commands:?}");
        let mut offences = Vec::new();
        for command in &commands {
            let text =
                std::fs::read_to_string(dir.join(format!("{command}.rs"))).unwrap_or_default();
            for other in commands.iter().filter(|c| *c != command) {
                for path in [format!("super::{other}"), format!("commands::{other}")] {
                    let hit = text.match_indices(&path).any(|(i, _)| {
                        !text[i + path.len()..]
                            .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        offences.push(format!("{command}.rs uses {path}"));
                    }
                }
            }
        }
        assert!(offences.is_empty(), "{offences:#?}");
    }
}
