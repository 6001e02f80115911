//! The delivery order, checked step by step with sinks that record what
//! they see and a real state file: a sink writes before the checkpoint,
//! publishes after it, and the sources hear of nothing before both.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::batch::SourcePosition;
use crate::source::{Emitter, SourceTask};

/// What a recording sink saw, with the checkpoint number durable at the
/// time.
type Log = Arc<Mutex<Vec<String>>>;

struct Recording {
    log: Log,
    store: Arc<StateStore>,
    keeps: bool,
    fail_write: bool,
}

impl Recording {
    fn durable(&self) -> u64 {
        self.store.checkpoint().unwrap().map_or(0, |c| c.number)
    }
}

impl Sink for Recording {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        if self.fail_write {
            return Err(SinkError {
                sink: "recording".into(),
                message: "refused".into(),
            });
        }
        self.log.lock().unwrap().push(format!(
            "write {} ({} records, as checkpoint {:?}) with checkpoint {} durable",
            batch.id,
            records.len(),
            batch.checkpoint,
            self.durable()
        ));
        Ok(())
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        self.log.lock().unwrap().push(format!(
            "commit {} with checkpoint {} durable",
            batch.id,
            self.durable()
        ));
        Ok(())
    }

    fn recover(&mut self, checkpoint: u64, output: Option<Records>) -> Result<(), SinkError> {
        self.log.lock().unwrap().push(format!(
            "recover at {checkpoint}, kept {:?}",
            output.map(|r| r.len())
        ));
        Ok(())
    }

    fn keeps_output(&self) -> bool {
        self.keeps
    }
}

/// A source that only remembers where it was told to resume.
struct Resumable(Arc<Mutex<Option<String>>>);

impl Source for Resumable {
    fn describe(&self) -> String {
        "resumable".into()
    }
    fn run(self: Box<Self>, _: Emitter) -> SourceTask {
        Box::pin(async { Ok(()) })
    }
    fn resume(&mut self, position: &str) -> Result<bool, String> {
        *self.0.lock().unwrap() = Some(position.to_string());
        Ok(true)
    }
}

fn batch(id: u64, records: usize, position: &str) -> Batch {
    let mut batch = Batch {
        id,
        time_ms: 1000 + id,
        ready_at: Instant::now(),
        oldest_received: None,
        records: Records::default(),
        positions: vec![SourcePosition {
            source: 0,
            position: position.into(),
        }],
        ends_interval: true,
    };
    for _ in 0..records {
        batch.records.push_value(b"r", 0);
    }
    batch
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<StateStore>,
    log: Log,
    resumed: Arc<Mutex<Option<String>>>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        Setup {
            _dir: dir,
            store,
            log: Log::default(),
            resumed: Default::default(),
        }
    }

    fn delivery(&self, exactly_once: bool, keeps: bool, fail_write: bool) -> Delivery {
        let sink = Recording {
            log: self.log.clone(),
            store: self.store.clone(),
            keeps,
            fail_write,
        };
        let mut sources: Vec<Box<dyn Source>> = vec![Box::new(Resumable(self.resumed.clone()))];
        Delivery::recover(
            "p",
            Some(self.store.clone()),
            exactly_once,
            &mut sources,
            vec![Box::new(sink)],
        )
        .unwrap()
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[test]
fn at_least_once_writes_before_the_checkpoint_and_acknowledges_after() {
    let setup = Setup::new();
    let mut delivery = setup.delivery(false, false, false);
    let (ack_tx, ack_rx) = watch::channel(None);
    delivery.acknowledge_to(vec![ack_tx]);
    delivery
        .deliver(&batch(0, 3, "pos-0"), &mut Vec::new())
        .unwrap();
    assert_eq!(
        setup.take_log(),
        [
            "recover at 0, kept None",
            "write 0 (3 records, as checkpoint None) with checkpoint 0 durable"
        ]
    );
    let checkpoint = setup.store.checkpoint().unwrap().unwrap();
    assert_eq!(checkpoint.number, 1);
    assert_eq!(checkpoint.positions[&0], "pos-0");
    assert_eq!(ack_rx.borrow().as_deref(), Some("pos-0"));
    // An empty batch with a new position is checkpointed and acknowledged,
    // with nothing written.
    delivery
        .deliver(&batch(1, 0, "pos-1"), &mut Vec::new())
        .unwrap();
    assert!(setup.take_log().is_empty());
    assert_eq!(setup.store.checkpoint().unwrap().unwrap().number, 2);
    assert_eq!(ack_rx.borrow().as_deref(), Some("pos-1"));
    delivery.finish().unwrap();

    // The next run resumes the source from the last checkpoint.
    let _again = setup.delivery(false, false, false);
    assert_eq!(setup.resumed.lock().unwrap().as_deref(), Some("pos-1"));
}

#[test]
fn a_failed_write_takes_no_checkpoint_and_acknowledges_nothing() {
    let setup = Setup::new();
    let mut delivery = setup.delivery(false, false, true);
    let (ack_tx, ack_rx) = watch::channel(None);
    delivery.acknowledge_to(vec![ack_tx]);
    let stage = StageState::new(setup.store.clone(), "count");
    let mut writes = vec![(stage.clone(), [(b"k".to_vec(), Some(b"1".to_vec()))].into())];
    let err = delivery
        .deliver(&batch(0, 2, "pos-0"), &mut writes)
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(setup.store.checkpoint().unwrap(), None);
    assert_eq!(
        stage.get(b"k").unwrap(),
        None,
        "the state write is not committed"
    );
    assert_eq!(*ack_rx.borrow(), None);
}

#[test]
fn exactly_once_stages_under_the_next_checkpoint_and_publishes_once_it_is_durable() {
    let setup = Setup::new();
    let mut delivery = setup.delivery(true, true, false);
    delivery
        .deliver(&batch(0, 2, "pos-0"), &mut Vec::new())
        .unwrap();
    assert_eq!(
        setup.take_log(),
        [
            "recover at 0, kept None",
            "write 0 (2 records, as checkpoint Some(1)) with checkpoint 0 durable",
            "commit 0 with checkpoint 1 durable"
        ]
    );
    // The output was kept with checkpoint 1, in case the commit is lost:
    // a restart hands it back to the sink.
    drop(delivery);
    let _again = setup.delivery(true, true, false);
    assert_eq!(setup.take_log(), ["recover at 1, kept Some(2)"]);
}

#[test]
fn a_confirmed_commit_drops_the_kept_output_at_the_end() {
    let setup = Setup::new();
    let mut delivery = setup.delivery(true, true, false);
    delivery
        .deliver(&batch(0, 2, "pos-0"), &mut Vec::new())
        .unwrap();
    delivery.finish().unwrap();
    setup.take_log();
    let _again = setup.delivery(true, true, false);
    assert_eq!(setup.take_log(), ["recover at 1, kept None"]);
}
