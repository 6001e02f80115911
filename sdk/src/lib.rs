//! Write Sluice processing stages in Rust.
//!
//! A Sluice plugin is a WebAssembly component that implements the
//! `sluice:plugin/stage` world (`wit/plugin.wit`): the engine calls `init`
//! once with the stage's configuration, then `process` once per micro-batch.
//! This crate hides the WIT bindings and the columnar layout in which a batch
//! crosses the boundary: you implement [`Processor`], read records through
//! [`Batch`] and [`RecordRef`], write them through [`Output`], and hand your
//! type to [`export!`].
//!
//! # Hello, world
//!
//! A stage that upper-cases every value:
//!
//! ```
//! use sluice_sdk::{Batch, Config, Error, Output, Processor, Record};
//!
//! struct Upper;
//!
//! impl Processor for Upper {
//!     fn init(config: &Config) -> Result<Self, Error> {
//!         config.allow_only(&[])?;
//!         Ok(Upper)
//!     }
//!
//!     fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
//!         for rec in batch.records() {
//!             match rec.value_str() {
//!                 Ok(text) => out.push(Record::new(text.to_uppercase()).with_timestamp(rec.timestamp())),
//!                 Err(e) => out.fail(rec.index(), e.to_string()),
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export!(Upper);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the `.wasm` file cargo writes
//! is the component the engine loads:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! # Errors, three ways
//!
//! - [`Output::fail`] reports one input record as failed; the engine sends it
//!   to the stage's dead-letter destination and the rest of the batch goes on.
//! - Returning an [`Error`] from [`Processor::process`] fails the whole batch;
//!   the stage's `on_error` policy decides what happens to its records.
//!   From [`Processor::init`], [`Error::invalid_config`] stops the pipeline
//!   from starting and is shown to the user as is.
//! - A panic traps: the engine discards the instance and applies `on_error`.
//!
//! # Performance
//!
//! Reading is zero-copy: [`RecordRef::value`] and friends borrow from the
//! buffers the batch arrived in. Writing with [`Output::emit`] (or
//! [`Output::emit_fmt`], [`Output::forward`]) copies bytes straight into the
//! output columns; [`Record`] is the convenient builder and costs an
//! allocation per field.

#![deny(missing_docs)]

// Lets the generated bindings and the `export!` macro name this crate as
// `sluice_sdk` from inside it as well as from plugin crates.
extern crate self as sluice_sdk;

mod batch;
mod config;
mod error;
pub mod log;
mod output;
mod runtime;
pub mod state;

pub use batch::{Batch, BatchInfo, Headers, RecordRef, Records};
pub use config::Config;
pub use error::{Error, ErrorKind, Utf8Error};
pub use output::{Output, Record};

/// The bindings `wit-bindgen` generates for the `sluice:plugin/stage` world.
///
/// Not part of the API: the types and the export macro in here change with
/// `wit-bindgen`. Use the rest of this crate instead.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "stage",
        pub_export_macro: true,
        export_macro_name: "export_stage",
        default_bindings_module: "sluice_sdk::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// What [`export!`] expands to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::{Slot, init, process};
    pub use wit_bindgen;

    pub use crate::bindings::exports::sluice::plugin::processor::Guest;
    pub use crate::bindings::sluice::plugin::types::{
        Batch as WitBatch, BatchInfo as WitBatchInfo, Error as WitError, Output as WitOutput,
    };
}

/// A processing stage: the type a plugin implements and hands to [`export!`].
///
/// The engine creates an instance with [`init`](Processor::init) and then
/// calls [`process`](Processor::process) once per micro-batch, in batch order
/// and never concurrently. Whatever the value keeps between batches lives as
/// long as the Wasm instance does: the engine may replace the instance (after
/// a trap, or to load a new plugin version), and the new one starts again
/// from `init`.
pub trait Processor: Sized + 'static {
    /// Creates the stage from its `config` table in the pipeline file.
    ///
    /// Return [`Error::invalid_config`] naming the key and the value when the
    /// configuration is wrong; [`Config::allow_only`] rejects unknown keys.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Turns one input batch into output records (appended to `out`) and
    /// per-record failures ([`Output::fail`]).
    ///
    /// Returning an error fails the whole batch and discards whatever was
    /// written to `out`.
    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error>;
}

/// Exports a [`Processor`] as the plugin's `sluice:plugin/processor`.
///
/// Invoke it once, at the top level of the plugin crate (a `cdylib`), with
/// the processor's type:
///
/// ```
/// # use sluice_sdk::{Batch, Config, Error, Output, Processor};
/// # struct Passthrough;
/// # impl Processor for Passthrough {
/// #     fn init(_: &Config) -> Result<Self, Error> { Ok(Passthrough) }
/// #     fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
/// #         batch.records().for_each(|rec| out.forward(&rec));
/// #         Ok(())
/// #     }
/// # }
/// sluice_sdk::export!(Passthrough);
/// ```
///
/// `init` stores the new instance; `process` before a successful `init`
/// fails the batch with "process called before init". The plugin crate
/// needs no dependency other than `sluice-sdk`.
#[macro_export]
macro_rules! export {
    ($processor:ty) => {
        const _: () = {
            ::std::thread_local! {
                static SLUICE_INSTANCE: ::core::cell::RefCell<::core::option::Option<$processor>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct SluiceGuest;

            impl $crate::__private::Guest for SluiceGuest {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), $crate::__private::WitError> {
                    $crate::__private::init(&SLUICE_INSTANCE, config)
                }

                fn process(
                    info: $crate::__private::WitBatchInfo,
                    input: $crate::__private::WitBatch,
                ) -> ::core::result::Result<
                    $crate::__private::WitOutput,
                    $crate::__private::WitError,
                > {
                    $crate::__private::process(&SLUICE_INSTANCE, info, input)
                }
            }

            $crate::bindings::export_stage!(SluiceGuest with_types_in $crate::bindings);
        };
    };
}
