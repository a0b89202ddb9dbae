//! The Firecracker process and its API.
