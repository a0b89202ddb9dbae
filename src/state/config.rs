//! state::config
