//! One file per command, each a `run(args) -> Result<Exit>` that reads top to
//! bottom as the user's story. Shared presentation helpers live here.

pub mod bench;
pub mod completions;
pub mod doctor;
pub mod gc;
pub mod image_build;
pub mod image_delete;
pub mod image_import;
pub mod image_list;
pub mod sidecar;
pub mod vm_create;
pub mod vm_delete;
pub mod vm_list;
pub mod vm_logs;
pub mod vm_run;
pub mod vm_show;
pub mod vm_ssh;
pub mod vm_start;
pub mod vm_stop;

use serde::Serialize;

/// An error in what the user asked for, found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

use crate::lifecycle::{Ctx, Observed, Timings};
use crate::state::model::{Vm, VmState, rfc3339};
use crate::state::parse::format_size;

/// A VM as `--json` shows it (the CLI contract in the design).
#[derive(Debug, Serialize)]
pub struct VmView {
    pub id: String,
    pub name: String,
    pub state: VmState,
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
    pub pid: Option<u32>,
    pub tap: Option<String>,
    pub cow_strategy: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<serde_json::Map<String, serde_json::Value>>,
}

impl VmView {
    pub fn new(ctx: &Ctx, vm: &Vm, observed: &Observed) -> Self {
        let running = observed.pid.is_some();
        Self {
            id: vm.id.clone(),
            name: vm.name.clone(),
            state: observed.state(),
            image: vm.image.clone(),
            ip: vm.ip.to_string(),
            mac: vm.mac.clone(),
            dns_name: ctx.dns_name(vm),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_size: vm.disk_size,
            work_size: vm.work_size,
            vsock_cid: vm.cid,
            nat: vm.nat,
            pid: observed.pid,
            tap: if running {
                observed.handles.tap.clone()
            } else {
                None
            },
            cow_strategy: vm.cow_strategy.clone(),
            created_at: rfc3339(vm.created_at),
            expires_at: vm.expires_at.map(rfc3339),
            // A half-created VM can only be deleted, whatever else it recorded.
            last_error: if vm.creating {
                Some(format!(
                    "creation did not finish; `banger vm delete {}` removes it",
                    vm.name
                ))
            } else {
                vm.last_error.clone()
            },
            timings: None,
        }
    }

    pub fn with_timings(mut self, timings: &Timings) -> Self {
        let map = timings
            .0
            .iter()
            .chain(&timings.1)
            .map(|(stage, d)| {
                (
                    (*stage).to_owned(),
                    serde_json::json!(d.as_secs_f64() * 1000.0),
                )
            })
            .collect();
        self.timings = Some(map);
        self
    }
}

/// Prints stage timings to stderr, one line each, and the total.
pub fn print_timings(timings: &Timings) {
    for (stage, duration) in &timings.0 {
        eprintln!("  {stage:<12} {:>8.1} ms", duration.as_secs_f64() * 1000.0);
    }
    eprintln!(
        "  {:<12} {:>8.1} ms",
        "total",
        timings.total().as_secs_f64() * 1000.0
    );
    for (stage, duration) in &timings.1 {
        eprintln!(
            "  {stage:<12} {:>8.1} ms (alongside configure)",
            duration.as_secs_f64() * 1000.0
        );
    }
}

/// Prints rows as aligned columns with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
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
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The one-line human summary of a VM in `vm ls`.
pub fn vm_row(view: &VmView) -> Vec<String> {
    vec![
        view.name.clone(),
        view.state.as_str().to_owned(),
        view.ip.clone(),
        view.image.clone(),
        view.vcpus.to_string(),
        format_size(u64::from(view.memory_mib) << 20),
        format_size(view.work_size),
        view.created_at.clone(),
    ]
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
