//! What banger knows: paths, config, the SQLite store, locks and handles.

pub mod config;
pub mod handles;
pub mod lock;
pub mod model;
pub mod paths;
pub mod store;
