//! `type = "socket"`: lines from a TCP server, like Spark's
//! `socketTextStream`, reconnecting with back-off when the connection drops.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::lines::chunk_for_read;
use super::{CHUNK_BYTES, Emitter, LineSplitter, Source, SourceTask};
use crate::batch::Records;

/// Connects to `address` and reads one record per line.
///
/// ```toml
/// [[sources]]
/// type = "socket"
/// address = "127.0.0.1:9999"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// `host:port` of the server to read from.
    pub address: String,
    /// Reconnect when the server closes the connection or cannot be
    /// reached, waiting 100ms, then twice as long each time up to 5s.
    /// With `false` the source ends when the first connection closes, and a
    /// failed first connection is an error. Default true.
    #[serde(default = "yes")]
    pub reconnect: bool,
    /// Log every chunk read to a write-ahead log (synced) before it counts
    /// as received, so a crash loses nothing read: the next run replays
    /// what the last checkpoint did not cover. Kept in
    /// `<state_dir>/<pipeline>.wal/`. Default false.
    #[serde(default)]
    pub wal: bool,
}

fn yes() -> bool {
    true
}

impl SocketConfig {
    /// Checks the address has a port.
    pub fn validate(&self) -> Result<(), String> {
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!(
                "invalid socket `address` `{}`: expected host:port, like `127.0.0.1:9999`",
                self.address
            )),
        }
    }

    /// The running source.
    pub fn build(&self) -> SocketSource {
        SocketSource {
            address: self.address.clone(),
            reconnect: self.reconnect,
        }
    }
}

/// The running socket source.
pub struct SocketSource {
    address: String,
    reconnect: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Source for SocketSource {
    fn describe(&self) -> String {
        format!("socket {}", self.address)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            let mut backoff = FIRST_BACKOFF;
            let mut lines: u64 = 0;
            loop {
                let connected = tokio::select! {
                    c = TcpStream::connect(&self.address) => c,
                    _ = emitter.stopped() => return Ok(()),
                };
                match connected {
                    Ok(mut stream) => {
                        tracing::info!(source = %name, "connected");
                        backoff = FIRST_BACKOFF;
                        let mut splitter = LineSplitter::default();
                        let mut buf = vec![0u8; CHUNK_BYTES];
                        let ended = loop {
                            let read = tokio::select! {
                                r = stream.read(&mut buf) => r,
                                _ = emitter.stopped() => break None,
                            };
                            let mut records = match &read {
                                Ok(n) => chunk_for_read(*n),
                                Err(_) => Records::default(),
                            };
                            let outcome = match read {
                                Ok(0) => {
                                    splitter.finish(&mut records);
                                    Some("the server closed the connection".to_string())
                                }
                                Ok(n) => {
                                    splitter.feed(&buf[..n], &mut records);
                                    None
                                }
                                Err(e) => {
                                    splitter.finish(&mut records);
                                    Some(format!("connection lost: {e}"))
                                }
                            };
                            lines += records.len() as u64;
                            if emitter
                                .emit(records, Some(format!("line {lines}")))
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                            if outcome.is_some() {
                                break outcome;
                            }
                        };
                        match ended {
                            None => return Ok(()),
                            Some(why) if !self.reconnect => {
                                tracing::info!(source = %name, "{why}; source finished");
                                return Ok(());
                            }
                            Some(why) => {
                                tracing::warn!(source = %name, "{why}; reconnecting in {}ms", backoff.as_millis())
                            }
                        }
                    }
                    Err(e) if !self.reconnect => {
                        return Err(super::SourceError {
                            source_name: name,
                            message: format!("cannot connect: {e}"),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(source = %name, "cannot connect: {e}; retrying in {}ms", backoff.as_millis());
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = emitter.stopped() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
    }
}
