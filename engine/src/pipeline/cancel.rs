//! Cancelling a run: for a pipeline deleted with its state, where finishing
//! what it holds (every batch up to its stages' time limits) would only make
//! the delete wait. Stopping finishes those batches; cancelling drops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::batch::Batch;

/// Tells a running pipeline to drop the batches it holds instead of
/// processing them: a plugin call under way ends as usual (within its time
/// limit), but no later batch reaches a plugin or a sink, and the batcher
/// cuts no more. Nothing dropped is acknowledged to a source. Clones share
/// the signal.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    dropped_batches: AtomicU64,
    dropped_records: AtomicU64,
}

impl Cancel {
    /// Cancels the run.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Whether `batch` is to be dropped (the run is cancelled); counts it
    /// if so (an empty one is not counted).
    pub(super) fn drops(&self, batch: &Batch) -> bool {
        if !self.is_cancelled() {
            return false;
        }
        if !batch.records.is_empty() {
            self.0.dropped_batches.fetch_add(1, Ordering::Relaxed);
            self.0
                .dropped_records
                .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        }
        true
    }

    /// The batches and records dropped so far.
    pub fn dropped_so_far(&self) -> (u64, u64) {
        (
            self.0.dropped_batches.load(Ordering::Relaxed),
            self.0.dropped_records.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use tokio::sync::watch;

    use super::*;
    use crate::config::{FolderBase, PipelineFile};
    use crate::pipeline::{Pipeline, Pools, WorkerPool};
    use crate::plugin::PluginHost;

    /// A pipeline reading generated lines as fast as it takes them, with
    /// no stages, into a `null` sink; cancelled before it starts.
    fn cancelled(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> (Pipeline, Cancel) {
        let path = dir.join("p.toml");
        let text = "name = \"p\"\nbatch_interval = \"10ms\"\n\
                    [[sources]]\ntype = \"generator\"\nrate = 0\n\
                    [[sinks]]\ntype = \"null\"\n";
        let spec = PipelineFile::parse(&path, text.to_string())
            .unwrap()
            .resolve(&FolderBase::of_file(&path))
            .unwrap();
        let host = PluginHost::new().unwrap();
        let _guard = runtime.enter();
        let cancel = Cancel::default();
        cancel.cancel();
        let pipeline = Pipeline::build(&spec, &host)
            .unwrap()
            .cancelled_by(cancel.clone());
        (pipeline, cancel)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Waits until `cancel` has dropped records.
    fn wait_for_drops(cancel: &Cancel) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while cancel.dropped_so_far().1 == 0 {
            assert!(Instant::now() < deadline, "nothing was dropped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_cancelled_run_on_threads_delivers_nothing_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let (pipeline, cancel) = cancelled(dir.path(), &runtime);
        let metrics = pipeline.metrics();
        let (stop, stopped) = watch::channel(false);
        let handle = runtime.handle().clone();
        let run = std::thread::spawn(move || pipeline.run(&handle, stopped));
        wait_for_drops(&cancel);
        stop.send(true).unwrap();
        run.join().unwrap().unwrap();
        let totals = metrics.totals();
        assert_eq!((totals.busy_batches, totals.records_out), (0, 0));
        let (batches, records) = cancel.dropped_so_far();
        assert!(batches > 0 && records > 0);
    }

    #[test]
    fn a_cancelled_run_on_pools_delivers_nothing_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let (pipeline, cancel) = cancelled(dir.path(), &runtime);
        let metrics = pipeline.metrics();
        let pools = Pools {
            stages: WorkerPool::new("test-stage", 1, 1),
            sinks: WorkerPool::new("test-sink", 1, 1),
        };
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done) = mpsc::channel();
        let _run = pipeline.start_pooled(
            runtime.handle(),
            stopped,
            &pools,
            Some("t"),
            Box::new(move |outcome| done_tx.send(outcome.is_ok()).unwrap()),
        );
        wait_for_drops(&cancel);
        stop.send(true).unwrap();
        assert!(done.recv_timeout(Duration::from_secs(20)).unwrap());
        let totals = metrics.totals();
        assert_eq!((totals.busy_batches, totals.records_out), (0, 0));
    }
}
