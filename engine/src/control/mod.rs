//! HTTP control: the serving layer with its limits (`http`), the local
//! endpoint of `sluice run` with its token (`local`, `token`), and the
//! client the `sluice` commands use (`client`). Preparing plugin versions
//! belongs to `reload`.

pub mod client;
pub mod http;
pub mod local;
pub mod token;

pub use local::PipelineStatus;
