//! state::model
