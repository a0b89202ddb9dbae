//! state::store
