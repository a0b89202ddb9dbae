//! host::procs
