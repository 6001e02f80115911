//! State the engine keeps for the stage: running totals, sums, anything that
//! must outlive a batch. Memory inside a plugin instance is lost when the
//! instance is (a trap, a restart, a new version); entries here are not.
//!
//! A batch's writes count only if `process` returns `Ok`; they become
//! durable with the batch's source positions once every sink has the batch.
//! See the `state` interface in `wit/plugin.wit` for the full guarantees.
//!
//! ```
//! use sluice_sdk::state;
//!
//! # fn main() -> Result<(), sluice_sdk::Error> {
//! let seen = state::get(b"alpha")?
//!     .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
//!     .unwrap_or(0);
//! state::put(b"alpha", (seen + 1).to_string())?;
//! # assert_eq!(state::get(b"alpha")?, Some(b"1".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! Outside Wasm (in a plugin's unit tests) the entries live in a map of the
//! calling thread; [`clear`] empties it between tests.

use std::fmt;

/// Why a state call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key and value are larger than the stage's `state_limit`: fail
    /// that record alone ([`Output::fail`](crate::Output::fail)).
    TooLarge(String),
    /// The engine could not read its store: fail the batch (`?` turns this
    /// into an [`Error`](crate::Error)).
    Unavailable(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::TooLarge(m) => write!(f, "state entry too large: {m}"),
            StateError::Unavailable(m) => write!(f, "state unavailable: {m}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for crate::Error {
    fn from(e: StateError) -> Self {
        crate::Error::failed(e.to_string())
    }
}

/// The value stored under `key`, if any.
pub fn get(key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StateError> {
    imp::get(key.as_ref())
}

/// Stores `value` under `key`, replacing what was there.
pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StateError> {
    imp::put(key.as_ref(), value.as_ref())
}

/// Removes `key`, if present.
pub fn delete(key: impl AsRef<[u8]>) {
    imp::delete(key.as_ref())
}

/// Outside Wasm: forgets every entry of this thread (for unit tests).
#[cfg(not(target_family = "wasm"))]
pub fn clear() {
    imp::ENTRIES.with(|m| m.borrow_mut().clear());
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::StateError;
    use crate::bindings::sluice::plugin::state::{self as host, StateError as HostError};

    fn convert(e: HostError) -> StateError {
        match e {
            HostError::TooLarge(m) => StateError::TooLarge(m),
            HostError::Unavailable(m) => StateError::Unavailable(m),
        }
    }

    pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        host::get(key).map_err(convert)
    }

    pub fn put(key: &[u8], value: &[u8]) -> Result<(), StateError> {
        host::put(key, value).map_err(convert)
    }

    pub fn delete(key: &[u8]) {
        host::delete(key)
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::StateError;

    thread_local! {
        pub static ENTRIES: RefCell<HashMap<Vec<u8>, Vec<u8>>> = RefCell::new(HashMap::new());
    }

    /// The engine's default `state_limit`.
    const LIMIT: usize = 1 << 20;

    pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(ENTRIES.with(|m| m.borrow().get(key).cloned()))
    }

    pub fn put(key: &[u8], value: &[u8]) -> Result<(), StateError> {
        if key.len() + value.len() > LIMIT {
            return Err(StateError::TooLarge(format!(
                "a key and value of {} bytes is over the state_limit of {LIMIT} bytes",
                key.len() + value.len()
            )));
        }
        ENTRIES.with(|m| m.borrow_mut().insert(key.to_vec(), value.to_vec()));
        Ok(())
    }

    pub fn delete(key: &[u8]) {
        ENTRIES.with(|m| m.borrow_mut().remove(key));
    }
}
