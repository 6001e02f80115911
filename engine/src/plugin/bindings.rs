//! The one place the WIT package becomes Rust: `bindgen!` over `wit/`. The
//! rest of the engine converts to and from its own types at the edges of
//! `plugin::instance` and never names these.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stage",
});

pub use self::sluice::plugin::{log, state, types};
