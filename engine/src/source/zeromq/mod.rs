//! `type = "zeromq"`: messages from a ZeroMQ PULL or SUB socket, connected
//! to a peer or bound for peers to connect to, through `zeromq` (zmq.rs), a
//! pure-Rust implementation of the ZeroMQ transport: no libzmq to build, and
//! it runs on the engine's tokio runtime.
//!
//! What ZeroMQ itself can lose before Sluice sees a message, whatever
//! Sluice does: PUB/SUB drops messages a subscriber is too slow for (the
//! publisher's high-water mark, 1,000 messages per subscriber by default),
//! messages sent before the subscription reached the publisher (the "slow
//! joiner"), and everything sent while the connection is down; PUSH/PULL
//! does not drop at the high-water mark (the pusher waits) but loses what
//! sat in a broken connection's buffers. Neither acknowledges anything, so
//! nothing can be asked for again: once received, a message exists only in
//! Sluice. With `wal = true` each chunk received is written to the
//! pipeline's write-ahead log (`source::wal`) and synced before it counts,
//! so what Sluice received survives a crash of Sluice.
//!
//! Not here: the log itself (`source::wal`), record batching (`batch`).

mod frames;

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv};

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source, SourceError, SourceTask};
use crate::batch::Records;
use crate::stage::DeadLetter;
use frames::Refused;

/// Reads messages from a ZeroMQ socket.
///
/// ```toml
/// [[sources]]
/// type = "zeromq"
/// endpoint = "tcp://127.0.0.1:5555"
/// socket = "sub"                 # or "pull" (the default)
/// subscribe = ["sensor.", "alarm."]
/// bind = false                   # connect (the default), or bind
/// key_frame = true               # first frame as the record's key
/// wal = true                     # what was received survives a crash
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeromqConfig {
    /// `tcp://host:port` to connect to, or (with `bind = true`) to listen
    /// on; `tcp://0.0.0.0:port` binds every interface.
    pub endpoint: String,
    /// `"pull"` (the default): messages from PUSH peers, each to one puller;
    /// `"sub"`: messages from PUB peers whose first frame starts with one
    /// of `subscribe`.
    #[serde(default)]
    pub socket: SocketKind,
    /// SUB only: topic prefixes, matched against each message's first
    /// frame. Default `[""]`: every message.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Listen on `endpoint` for peers to connect, instead of connecting to
    /// it. Default false.
    #[serde(default)]
    pub bind: bool,
    /// A multipart message's first frame becomes the record's key and the
    /// rest its value (a SUB topic frame, for example). A message of one
    /// frame then has no value: it is dead-lettered with the reason.
    /// Default false: the value is every frame, back to back.
    #[serde(default)]
    pub key_frame: bool,
    /// Log every chunk received to a write-ahead log (synced) before it
    /// counts as received, so a crash of Sluice loses nothing it received:
    /// the next run replays what the last checkpoint did not cover. Kept
    /// in `<state_dir>/<pipeline>.wal/`. Default false.
    #[serde(default)]
    pub wal: bool,
}

/// The kind of ZeroMQ socket read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketKind {
    /// A PULL socket: load-balanced messages from PUSH peers.
    #[default]
    Pull,
    /// A SUB socket: messages from PUB peers, filtered by topic prefix.
    Sub,
}

impl ZeromqConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let Some(rest) = self.endpoint.strip_prefix("tcp://") else {
            return Err(format!(
                "invalid zeromq `endpoint` `{}`: expected tcp://host:port, like \
                 `tcp://127.0.0.1:5555` (only the tcp transport is built in)",
                self.endpoint
            ));
        };
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(format!(
                    "invalid zeromq `endpoint` `{}`: expected tcp://host:port, like \
                     `tcp://127.0.0.1:5555`",
                    self.endpoint
                ));
            }
        }
        if self.socket == SocketKind::Pull && self.subscribe.is_some() {
            return Err(
                "invalid zeromq source: `subscribe` is for `socket = \"sub\"`; a PULL socket \
                 takes every message"
                    .into(),
            );
        }
        if matches!(&self.subscribe, Some(topics) if topics.is_empty()) {
            return Err(
                "invalid zeromq source: `subscribe = []` would receive nothing; leave it out \
                 for every message, or use [\"\"]"
                    .into(),
            );
        }
        Ok(())
    }

    /// The running source; refused records go to `dead_letter`.
    pub fn build(&self, dead_letter: DeadLetter) -> ZeromqSource {
        ZeromqSource {
            config: self.clone(),
            dead_letter,
        }
    }
}

/// The running ZeroMQ source.
pub struct ZeromqSource {
    config: ZeromqConfig,
    dead_letter: DeadLetter,
}

/// First wait before connecting again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one connection attempt may take (zmq.rs retries a refused
/// connection within it).
const CONNECT_ATTEMPT: Duration = Duration::from_secs(2);

impl Source for ZeromqSource {
    fn describe(&self) -> String {
        let kind = match self.config.socket {
            SocketKind::Pull => "pull",
            SocketKind::Sub => "sub",
        };
        let how = if self.config.bind { "bound to" } else { "from" };
        format!("zeromq {kind} {how} {}", self.config.endpoint)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let mut options = SocketOptions::default();
            options.connect_timeout(CONNECT_ATTEMPT);
            match self.config.socket {
                SocketKind::Pull => {
                    let socket = zeromq::PullSocket::with_options(options);
                    self.read(socket, emitter).await
                }
                SocketKind::Sub => {
                    let mut socket = zeromq::SubSocket::with_options(options);
                    let topics = self
                        .config
                        .subscribe
                        .clone()
                        .unwrap_or_else(|| vec![String::new()]);
                    for topic in &topics {
                        socket.subscribe(topic).await.map_err(|e| SourceError {
                            source_name: self.describe(),
                            message: format!("cannot subscribe to `{topic}`: {e}"),
                        })?;
                    }
                    self.read(socket, emitter).await
                }
            }
        })
    }
}

impl ZeromqSource {
    /// Binds or connects `socket`, then reads until told to stop.
    async fn read<S: Socket + SocketRecv + Send>(
        self: Box<Self>,
        mut socket: S,
        emitter: Emitter,
    ) -> Result<(), SourceError> {
        let name = self.describe();
        let fail = |message: String| SourceError {
            source_name: name.clone(),
            message,
        };
        let mut monitor = socket.monitor();
        if self.config.bind {
            socket
                .bind(&self.config.endpoint)
                .await
                .map_err(|e| fail(format!("cannot bind: {e}")))?;
            tracing::info!(source = %name, "listening");
        } else if !connect(&mut socket, &self.config.endpoint, &name, &emitter).await {
            return Ok(());
        }
        let mut refused = Refused::new(self.dead_letter.clone());
        let mut received: u64 = 0;
        let mut records = Records::default();
        let mut monitor_open = true;
        loop {
            // A chunk is handed over when full, or when no message is
            // waiting (the batcher's interval decides the batch).
            let full = records.len() >= CHUNK_RECORDS || records.byte_size() >= CHUNK_BYTES;
            let waiting = !records.is_empty() && !full;
            let next = tokio::select! {
                biased;
                _ = emitter.stopped() => break,
                message = socket.recv(), if !full => Some(message),
                event = monitor.next(), if monitor_open => {
                    monitor_open = event.is_some();
                    if let Some(SocketEvent::Disconnected(_)) = event {
                        if matches!(self.config.socket, SocketKind::Pull) && !self.config.bind {
                            // zmq.rs reconnects SUB sockets itself, not PULL.
                            tracing::warn!(source = %name, "the peer went away; reconnecting");
                            if !connect(&mut socket, &self.config.endpoint, &name, &emitter).await {
                                break;
                            }
                        } else {
                            tracing::info!(source = %name, "a peer disconnected");
                        }
                    }
                    None
                }
                _ = std::future::ready(()), if waiting || full => None,
            };
            match next {
                Some(Ok(message)) => {
                    if records.is_empty() {
                        records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                    }
                    let index = received;
                    received += 1;
                    if let Err(why) = frames::push(&mut records, &message, self.config.key_frame) {
                        refused.add(&message, index, why);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(source = %name, "receiving: {e}");
                }
                None => {}
            }
            refused.flush().await.map_err(&fail)?;
            if !records.is_empty() {
                let chunk = std::mem::take(&mut records);
                if emitter
                    .emit(chunk, Some(format!("message {received}")))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        refused.flush().await.map_err(&fail)?;
        if !records.is_empty() {
            let _ = emitter
                .emit(records, Some(format!("message {received}")))
                .await;
        }
        Ok(())
    }
}

/// Connects `socket` to `endpoint`, trying again with back-off (and saying
/// so) while no peer listens there. False when told to stop first.
async fn connect<S: Socket>(socket: &mut S, endpoint: &str, name: &str, emitter: &Emitter) -> bool {
    let mut backoff = FIRST_BACKOFF;
    let mut said = false;
    loop {
        let attempt = tokio::select! {
            r = socket.connect(endpoint) => r,
            _ = emitter.stopped() => return false,
        };
        match attempt {
            Ok(()) => {
                tracing::info!(source = %name, "connected");
                return true;
            }
            Err(e) => {
                if !said || backoff == MAX_BACKOFF {
                    tracing::warn!(source = %name, "waiting for a peer at {endpoint}: {e}; trying again");
                    said = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = emitter.stopped() => return false,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
