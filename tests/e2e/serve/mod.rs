//! `sluice serve`, the multi-tenant service, end to end over its HTTP API:
//! tenants kept apart, quotas, restarts (clean and `kill -9`), a hostile
//! tenant beside a well-behaved one, TLS, and the OpenAPI document checked
//! against what the server does.

mod cli;
mod hostile;
mod openapi;
mod quotas;
mod restart;
pub mod support;
mod tenants;
mod tls;
