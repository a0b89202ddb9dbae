//! host::ssh
