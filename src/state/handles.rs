//! state::handles
