//! Nothing here: see `e2e/` for the tests and `build.rs` for the plugin build.
