//! host::dns
