//! The Firecracker process and its API.

pub mod api;
mod http;
pub mod process;
