//! Firecracker's API subset: routes each request onto the configuration or the running guest.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use serde_json::json;

use crate::config::{self, ActionType, VmConfig};
use crate::fault::{self, FakeStart, Fault};
use crate::http::{Request, Response};
use crate::vm::{Sockets, Vm};

/// The Firecracker release whose API the shim imitates.
pub const FIRECRACKER_VERSION: &str = "1.12.1";

const AFTER_START: &str = "The requested operation is not supported after starting the microVM.";
const BEFORE_START: &str = "The requested operation is not supported before starting the microVM.";

/// The API's state: configuration until `InstanceStart`, then the guest.
pub struct Api {
    id: String,
    sockets: Sockets,
    config: VmConfig,
    vm: Option<Vm>,
    /// `VMM_SHIM_FAULT`: fail on purpose.
    fault: Option<Fault>,
    /// The log `PUT /logger` named (where a fault is logged, as Firecracker would).
    log_path: Option<PathBuf>,
    /// The guest a fault pretends to run.
    fake: Option<FakeStart>,
}

impl Api {
    pub fn new(id: String, sockets: Sockets, fault: Option<Fault>) -> Self {
        Self {
            id,
            sockets,
            config: VmConfig::default(),
            vm: None,
            fault,
            log_path: None,
            fake: None,
        }
    }

    pub fn handle(&mut self, request: &Request) -> Response {
        match self.route(request) {
            Ok(response) => response,
            Err(message) => {
                self.log(&format!(
                    "[{}:fc_api] Received Error. Status code: 400 Bad Request. Message: {message}",
                    self.id
                ));
                Response::fault(message)
            }
        }
    }

    fn started(&self) -> bool {
        self.vm.is_some() || self.fake.is_some()
    }

    /// Appends a line to the configured log, if any (best effort).
    fn log(&self, line: &str) {
        if let Some(path) = &self.log_path {
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .and_then(|mut file| writeln!(file, "{line}"));
        }
    }

    fn route(&mut self, request: &Request) -> Result<Response, String> {
        let body = &request.body;
        let path = request.path.trim_start_matches('/');
        let (resource, id) = path.split_once('/').unwrap_or((path, ""));
        match (request.method.as_str(), resource, id) {
            ("GET", "", "") => {
                let state = if self.started() {
                    "Running"
                } else {
                    "Not started"
                };
                return Ok(Response::json(&json!({
                    "id": self.id,
                    "state": state,
                    "vmm_version": FIRECRACKER_VERSION,
                    "app_name": "Firecracker",
                })));
            }
            ("PUT", "actions", "") => return self.act(config::parse_body(body)?),
            ("PUT", "logger" | "metrics" | "machine-config" | "boot-source" | "vsock", "")
            | ("PUT", "drives" | "network-interfaces", _)
                if self.started() =>
            {
                return Err(AFTER_START.to_owned());
            }
            ("PUT", "logger", "") => {
                let logger: config::Logger = config::parse_body(body)?;
                config::check_logger(&logger)?;
                self.log_path = logger.log_path;
            }
            ("PUT", "machine-config", "") if self.fault == Some(Fault::Configure) => {
                return Err(fault::CONFIGURE_REFUSAL.to_owned());
            }
            ("PUT", "metrics", "") => config::check_metrics(&config::parse_body(body)?)?,
            ("PUT", "machine-config", "") => self.config.set_machine(config::parse_body(body)?)?,
            ("PUT", "boot-source", "") => self.config.set_boot(config::parse_body(body)?)?,
            ("PUT", "drives", id) if !id.is_empty() => {
                self.config.set_drive(id, config::parse_body(body)?)?
            }
            ("PUT", "network-interfaces", id) if !id.is_empty() => {
                self.config.set_net(id, config::parse_body(body)?)?;
            }
            ("PUT", "vsock", "") => self.config.set_vsock(config::parse_body(body)?),
            (method, _, _) => {
                return Err(format!(
                    "Invalid request method and/or path: {method} {path}."
                ));
            }
        }
        Ok(Response::no_content())
    }

    fn act(&mut self, action: config::Action) -> Result<Response, String> {
        if let Some(fake) = self.fault.filter(|_| self.vm.is_none()) {
            return match (action.action_type, &self.fake) {
                (ActionType::InstanceStart, Some(_)) => Err(AFTER_START.to_owned()),
                (ActionType::InstanceStart, None) => {
                    eprintln!("vmm-shim: {fake:?}: starting no guest");
                    self.fake = Some(FakeStart::begin(fake, &self.id, self.log_path.as_deref()));
                    Ok(Response::no_content())
                }
                (ActionType::SendCtrlAltDel, None) => Err(BEFORE_START.to_owned()),
                // Nothing runs that could see it.
                (ActionType::SendCtrlAltDel, Some(_)) => Ok(Response::no_content()),
            };
        }
        match (action.action_type, &mut self.vm) {
            (ActionType::InstanceStart, Some(_)) => Err(AFTER_START.to_owned()),
            (ActionType::InstanceStart, None) => {
                let boot = self.config.boot.as_ref().ok_or(
                    "Start microvm error: Cannot start microvm without kernel configuration.",
                )?;
                let vm = Vm::start(&self.config, boot, &self.sockets)
                    .map_err(|err| format!("Start microvm error: {err}"))?;
                eprintln!("vmm-shim: guest started");
                self.vm = Some(vm);
                Ok(Response::no_content())
            }
            (ActionType::SendCtrlAltDel, None) => Err(BEFORE_START.to_owned()),
            (ActionType::SendCtrlAltDel, Some(vm)) => {
                vm.send_ctrl_alt_del()
                    .map_err(|err| format!("Failed to send CTRL+ALT+DEL: {err}"))?;
                Ok(Response::no_content())
            }
        }
    }

    /// QEMU's exit status once the guest has ended.
    pub fn guest_exit(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.fake.as_ref().is_some_and(FakeStart::exited) {
            // As a VMM whose vCPU failed: exit code 1.
            return Ok(Some(ExitStatus::from_raw(1 << 8)));
        }
        match &mut self.vm {
            Some(vm) => vm.try_wait(),
            None => Ok(None),
        }
    }

    /// Stops the guest, if any, and removes the sockets made for it.
    pub fn stop(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            vm.stop();
        }
    }
}
