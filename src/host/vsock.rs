//! host::vsock
