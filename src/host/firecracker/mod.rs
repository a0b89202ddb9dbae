//! The Firecracker process and its API.

pub mod api;
pub mod http;
pub mod process;
