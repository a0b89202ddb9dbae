//! state::paths
