//! Firecracker's API subset: routes each request onto the configuration or the running guest.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitStatus;

use serde_json::json;

use crate::FIRECRACKER_API_VERSION;
use crate::backend::{Backend, Guest, StartContext};
use crate::config::{self, ActionType, VmConfig};
use crate::http::{Request, Response};

const AFTER_START: &str = "The requested operation is not supported after starting the microVM.";
const BEFORE_START: &str = "The requested operation is not supported before starting the microVM.";

/// The API's state: configuration until `InstanceStart`, then the guest.
pub struct Api<'b> {
    id: String,
    api_sock: PathBuf,
    backend: &'b mut dyn Backend,
    config: VmConfig,
    guest: Option<Box<dyn Guest>>,
    /// The log `PUT /logger` named (where API errors are logged, as Firecracker does).
    log_path: Option<PathBuf>,
}

impl<'b> Api<'b> {
    pub fn new(id: String, api_sock: PathBuf, backend: &'b mut dyn Backend) -> Self {
        Self {
            id,
            api_sock,
            backend,
            config: VmConfig::default(),
            guest: None,
            log_path: None,
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
        self.guest.is_some()
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
                    "vmm_version": FIRECRACKER_API_VERSION,
                    "app_name": self.backend.name(),
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
            ("PUT", "metrics", "") => config::check_metrics(&config::parse_body(body)?)?,
            ("PUT", "machine-config", "") => {
                let machine = config::parse_body(body)?;
                self.backend.check_machine(&machine)?;
                self.config.set_machine(machine)?;
            }
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
        match (action.action_type, &mut self.guest) {
            (ActionType::InstanceStart, Some(_)) => Err(AFTER_START.to_owned()),
            (ActionType::InstanceStart, None) => {
                let boot = self.config.boot.as_ref().ok_or(
                    "Start microvm error: Cannot start microvm without kernel configuration.",
                )?;
                let start = StartContext {
                    id: &self.id,
                    api_sock: &self.api_sock,
                    log_path: self.log_path.as_deref(),
                };
                let guest = self
                    .backend
                    .start(&self.config, boot, &start)
                    .map_err(|err| format!("Start microvm error: {err}"))?;
                crate::log("INFO", "guest started");
                self.guest = Some(guest);
                Ok(Response::no_content())
            }
            (ActionType::SendCtrlAltDel, None) => Err(BEFORE_START.to_owned()),
            (ActionType::SendCtrlAltDel, Some(guest)) => {
                guest
                    .send_ctrl_alt_del()
                    .map_err(|err| format!("Failed to send CTRL+ALT+DEL: {err}"))?;
                Ok(Response::no_content())
            }
        }
    }

    /// The guest's exit status once it has ended.
    pub fn guest_exit(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.guest {
            Some(guest) => guest.try_wait(),
            None => Ok(None),
        }
    }

    /// Stops the guest, if any, and removes what was made for it.
    pub fn stop(&mut self) {
        if let Some(mut guest) = self.guest.take() {
            guest.stop();
        }
    }

    /// The backend's name, for messages.
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }
}
