//! state::lock
