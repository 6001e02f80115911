//! Running a pipeline on shared worker pools instead of threads of its own
//! (`sluice serve`, which hosts many pipelines): each stage is a job on the
//! stage pool, delivery to the sinks a job on the sink pool (it waits on
//! disks and brokers, so it never holds a worker the plugins need), and the
//! batcher an async task. The links between them are the same as a
//! thread-per-stage run's, with callbacks that wake the job on the other
//! end instead of blocking: a stage runs only when a batch waits for it and
//! the next link has room, so order and memory bounds are the same.
//!
//! The pools are fair across tenants (see [`super::pool`]); what a pipeline
//! does with a batch is the same code as in [`super::run`].

use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot, watch};

use super::link::{Receiver, Sender, TryRecv, TrySend, Wake, link};
use super::pool::{Job, Step, WorkerPool};
use super::run::{InFlight, Started, deliver, run_stage, summary};
use super::{Cancel, Pipeline, RunError, RunSummary};
use crate::batch::{Batcher, Cut};
use crate::delivery::Delivery;
use crate::source::SourceError;
use crate::stage::Stage;
use crate::telemetry::{PipelineMetrics, Reporter};

/// The pools a hosted pipeline runs on.
#[derive(Clone)]
pub struct Pools {
    /// Runs stages (the plugins): as many workers as cores.
    pub stages: Arc<WorkerPool>,
    /// Runs delivery to sinks (disk and network waits).
    pub sinks: Arc<WorkerPool>,
}

/// A pipeline running on pools: its jobs, kept alive while the run lasts
/// (an idle job is held by nothing else).
pub struct PooledRun {
    _jobs: Vec<Arc<Job>>,
}

/// Told how a pooled run ended.
pub type OnDone = Box<dyn FnOnce(Result<RunSummary, RunError>) + Send>;

/// The first failure of any part of the run.
#[derive(Clone, Default)]
struct Failure(Arc<Mutex<Option<RunError>>>);

impl Failure {
    fn set(&self, error: RunError) {
        self.0.lock().unwrap().get_or_insert(error);
    }

    fn take(&self) -> Option<RunError> {
        self.0.lock().unwrap().take()
    }
}

/// A slot for a job, filled once it exists, so link callbacks made before
/// it can wake it.
#[derive(Clone, Default)]
struct JobSlot(Arc<OnceLock<Weak<Job>>>);

impl JobSlot {
    fn waker(&self) -> Wake {
        let slot = self.0.clone();
        Arc::new(move || {
            if let Some(job) = slot.get().and_then(Weak::upgrade) {
                job.wake();
            }
        })
    }

    fn fill(&self, job: &Arc<Job>) {
        let _ = self.0.set(Arc::downgrade(job));
    }
}

impl Pipeline {
    /// Starts the pipeline on `pools` as `tenant`'s; returns at once.
    /// `shutdown` turning true stops its sources (what they read is still
    /// processed); `on_done` hears how the run ended.
    pub fn start_pooled(
        mut self,
        runtime: &Handle,
        shutdown: watch::Receiver<bool>,
        pools: &Pools,
        tenant: Option<&str>,
        on_done: OnDone,
    ) -> PooledRun {
        self.log_start();
        let Started {
            queue: rx,
            stop: stop_tx,
            acks,
            tasks,
        } = self.start_sources(runtime, shutdown);

        let failure = Failure::default();
        let mut jobs = Vec::new();
        let (finished_tx, finished_rx) = oneshot::channel::<()>();

        // Delivery at the end of the chain, then the stages backwards.
        let (sink_tx, sink_rx) = link::<InFlight>();
        let mut delivery = self.delivery;
        delivery.acknowledge_to(acks);
        let slot = JobSlot::default();
        sink_rx.on_item(slot.waker());
        let job = pools.sinks.job(
            tenant,
            delivery_work(
                self.interval,
                self.metrics.clone(),
                delivery,
                sink_rx,
                failure.clone(),
                finished_tx,
                self.cancel.clone(),
            ),
        );
        slot.fill(&job);
        jobs.push(job);
        let mut next = sink_tx;
        for stage in std::mem::take(&mut self.stages).into_iter().rev() {
            let (tx, rx) = link::<InFlight>();
            let slot = JobSlot::default();
            rx.on_item(slot.waker());
            next.on_room(slot.waker());
            let work = stage_work(stage, rx, next, failure.clone(), self.cancel.clone());
            let job = pools.stages.job(tenant, work);
            slot.fill(&job);
            jobs.push(job);
            next = tx;
        }

        // The batcher, on the runtime: it waits for time and for room.
        let room = Arc::new(Notify::new());
        let notify = room.clone();
        next.on_room(Arc::new(move || notify.notify_one()));
        let batcher = Batcher::new(
            rx,
            self.interval,
            self.max_batch_records,
            self.max_batch_bytes,
        );
        runtime.spawn(cut_batches(
            batcher,
            next,
            room,
            stop_tx.clone(),
            self.metrics.clone(),
            self.cancel.clone(),
        ));

        // When delivery is done, the sources' outcomes and the summary.
        let name = self.name.clone();
        let metrics = self.metrics.clone();
        runtime.spawn(async move {
            let _ = finished_rx.await;
            let _ = stop_tx.send(true);
            let mut outcome = match failure.take() {
                Some(error) => Err(error),
                None => Ok(()),
            };
            for task in tasks {
                let result = task.await.unwrap_or_else(|join| {
                    Err(SourceError {
                        source_name: "task".into(),
                        message: format!("panicked: {join}"),
                    })
                });
                if let (Ok(()), Err(source)) = (&outcome, result) {
                    outcome = Err(RunError::Source {
                        pipeline: name.clone(),
                        source,
                    });
                }
            }
            on_done(outcome.map(|()| summary(name, &metrics)));
        });
        PooledRun { _jobs: jobs }
    }
}

/// Cuts batches and hands them to the first stage, waiting for room
/// without holding a thread.
async fn cut_batches(
    mut batcher: Batcher,
    first: Sender<InFlight>,
    room: Arc<Notify>,
    stop: Arc<watch::Sender<bool>>,
    metrics: Arc<PipelineMetrics>,
    cancel: Cancel,
) {
    'batches: loop {
        let mut flight = match batcher.next().await {
            Cut::Finished => break,
            // The sources are stopping: what they read is dropped.
            Cut::Batch(batch) if cancel.drops(&batch) => continue,
            Cut::Batch(batch) => InFlight::new(batch),
        };
        metrics.queue_depth.set(batcher.queued() as i64);
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match first.try_send(flight) {
                Ok(()) => break,
                Err(TrySend::Full(back)) => {
                    flight = back;
                    notified.await;
                }
                // A stage or the delivery failed; it reports.
                Err(TrySend::Closed(_)) => break 'batches,
            }
        }
    }
    // Stop the sources; dropping the batcher frees any waiting to send.
    let _ = stop.send(true);
    drop(batcher);
    drop(first);
}

/// A stage's job: one batch per step, when one waits and the next link has
/// room for it; once the run is cancelled, every waiting batch dropped.
fn stage_work(
    stage: Stage,
    input: Receiver<InFlight>,
    output: Sender<InFlight>,
    failure: Failure,
    cancel: Cancel,
) -> Box<dyn FnMut() -> Step + Send> {
    let mut parts = Some((stage, input, output));
    // Since when a batch has waited for room downstream.
    let mut blocked: Option<std::time::Instant> = None;
    Box::new(move || {
        let Some((stage, input, output)) = parts.as_mut() else {
            return Step::Done;
        };
        if cancel.is_cancelled() {
            return match drop_waiting(input, &cancel) {
                TryRecv::Closed => {
                    parts = None;
                    Step::Done
                }
                _ => Step::Idle,
            };
        }
        if !output.has_room() {
            if !input.is_empty() {
                blocked.get_or_insert_with(std::time::Instant::now);
            }
            return Step::Idle;
        }
        if let Some(since) = blocked.take() {
            stage.settings().telemetry.blocked(since.elapsed());
        }
        let mut flight = match input.try_recv() {
            TryRecv::Empty => return Step::Idle,
            TryRecv::Item(flight) => flight,
            TryRecv::Closed => {
                // Everything upstream is done: so is this stage, and the
                // next link closes behind it.
                parts = None;
                return Step::Done;
            }
        };
        let outcome = run_stage(stage, &mut flight);
        let timed_out = stage.take_timeouts() > 0;
        stage.release_if_idle();
        if let Err(error) = outcome {
            failure.set(error);
            parts = None;
            return Step::Done;
        }
        match output.try_send(flight) {
            Ok(()) => {}
            Err(TrySend::Closed(_)) => {
                // Further down failed; it reports.
                parts = None;
                return Step::Done;
            }
            Err(TrySend::Full(_)) => unreachable!("room was checked and only this job sends"),
        }
        match (timed_out, input.is_empty()) {
            (true, _) => Step::TimedOut,
            (false, true) => Step::Idle,
            (false, false) => Step::More,
        }
    })
}

/// The delivery job: one batch per step; at the end, the sinks flushed and
/// `finished` told.
fn delivery_work(
    interval: std::time::Duration,
    metrics: Arc<PipelineMetrics>,
    delivery: Delivery,
    input: Receiver<InFlight>,
    failure: Failure,
    finished: oneshot::Sender<()>,
    cancel: Cancel,
) -> Box<dyn FnMut() -> Step + Send> {
    let mut reporter = Reporter::new(metrics.labels.clone(), interval);
    let name = metrics.labels.pipeline.clone();
    let mut parts = Some((delivery, input, finished));
    let mut last_id = 0;
    Box::new(move || {
        let Some((delivery, input, _)) = parts.as_mut() else {
            return Step::Done;
        };
        let failed = |source| RunError::Delivery {
            pipeline: name.clone(),
            source,
        };
        let next = match cancel.is_cancelled() {
            true => drop_waiting(input, &cancel),
            false => input.try_recv(),
        };
        match next {
            TryRecv::Empty => Step::Idle,
            TryRecv::Item(mut flight) => {
                last_id = flight.batch.id;
                let result = deliver(delivery, &mut flight, interval, &metrics, &mut reporter);
                if let Err(error) = result {
                    failure.set(failed(error));
                    let (_, input, finished) = parts.take().unwrap();
                    // Nothing more is taken: the stages stop.
                    drop(input);
                    let _ = finished.send(());
                    return Step::Done;
                }
                if input.is_empty() {
                    Step::Idle
                } else {
                    Step::More
                }
            }
            TryRecv::Closed => {
                reporter.flush(last_id);
                let (delivery, _, finished) = parts.take().unwrap();
                if let Err(error) = delivery.finish() {
                    failure.set(failed(error));
                }
                let _ = finished.send(());
                Step::Done
            }
        }
    })
}

/// Drops every batch waiting in `input` (the run is cancelled); says what
/// ended the wait: `Empty`, or `Closed` once upstream is done too.
fn drop_waiting(input: &Receiver<InFlight>, cancel: &Cancel) -> TryRecv<InFlight> {
    loop {
        match input.try_recv() {
            TryRecv::Item(flight) => {
                cancel.drops(&flight.batch);
            }
            ended => return ended,
        }
    }
}
