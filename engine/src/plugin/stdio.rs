//! A plugin's stdout and stderr, turned into lines of the engine's log
//! tagged with pipeline, stage and plugin, instead of the engine's own
//! terminal. Long lines are cut, and a [`LogBudget`] caps how many lines one
//! call may write (the rest are counted and reported in one line), so a
//! plugin cannot flood the engine's log.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::LogTag;

/// Longest line kept; the rest of a longer line is dropped with a marker.
const MAX_LINE: usize = 4096;

/// Lines a plugin may log per call (stdout, stderr and `log` together).
pub const LINES_PER_CALL: u32 = 1000;

/// How many more lines the current call may log, and how many it dropped.
#[derive(Debug, Default)]
pub struct LogBudget {
    left: AtomicU32,
    dropped: AtomicU32,
}

impl LogBudget {
    /// A budget for a new call; returns how many lines the last call dropped.
    pub fn reset(&self) -> u32 {
        self.left.store(LINES_PER_CALL, Ordering::Relaxed);
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Takes one line from the budget; false when it is spent.
    pub fn take(&self) -> bool {
        let ok = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Which of the guest's output streams.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A `StdoutStream` for `WasiCtxBuilder` that logs what the guest prints.
#[derive(Clone)]
pub struct LogStream {
    pub tag: Arc<LogTag>,
    pub stream: Stream,
    pub budget: Arc<LogBudget>,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self.clone()))
    }
}

struct LineWriter {
    target: LogStream,
    line: Vec<u8>,
    truncated: bool,
}

impl LineWriter {
    fn new(target: LogStream) -> Self {
        LineWriter {
            target,
            line: Vec::new(),
            truncated: false,
        }
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.extend(&bytes[..newline]);
            self.emit();
            bytes = &bytes[newline + 1..];
        }
        self.extend(bytes);
    }

    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        if !self.target.budget.take() {
            self.line.clear();
            self.truncated = false;
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        let cut = if self.truncated { " […]" } else { "" };
        let tag = &self.target.tag;
        match self.target.stream {
            Stream::Stdout => tracing::info!(
                pipeline = %tag.pipeline, stage = %tag.stage, plugin = %tag.plugin,
                "plugin stdout: {text}{cut}"
            ),
            Stream::Stderr => tracing::warn!(
                pipeline = %tag.pipeline, stage = %tag.stage, plugin = %tag.plugin,
                "plugin stderr: {text}{cut}"
            ),
        }
        self.line.clear();
        self.truncated = false;
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
