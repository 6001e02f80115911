//! The link between two threads of a running pipeline (batcher → stage →
//! … → sinks): a queue that holds back the sender only for heavy batches.
//!
//! A batch is heavy when it carries records, or more than [`LIGHT_BYTES`]
//! of state writes (a window keeps each batch it holds as a write). At most
//! one heavy batch waits on a link, as with a channel of one slot, so memory
//! stays bounded by a few batches per link. Light batches (the intervals in
//! which nothing arrived) never make the sender wait. Otherwise, when the
//! pipeline runs behind, a stage that has just finished a large batch would
//! hand on the empty batches behind it one slot at a time, each waiting for
//! the next stage to finish that large batch: the stages would take turns
//! instead of working at once (word count at 10 ms batches ran 23 % faster
//! without that; see `engine/benches/README.md`).
//!
//! Batches leave in the order they came. A link holds at most
//! [`MOST_WAITING`] batches in all, so light ones are bounded too (at most
//! [`MOST_WAITING`] × [`LIGHT_BYTES`] of writes).
//!
//! Threads use the blocking `send` and iteration. Jobs on a worker pool
//! (`sluice serve`) never block: they use `try_send` and `try_recv`, and
//! register a callback ([`Sender::on_item`], [`Receiver::on_room`]) that
//! wakes them when there is something to take or room to put.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Most batches waiting on one link, light ones included.
pub const MOST_WAITING: usize = 1024;

/// Most bytes of state writes a batch without records may carry and still
/// pass as light.
pub const LIGHT_BYTES: usize = 4096;

/// What a link carries: anything that can say whether it is heavy.
pub trait Weighed {
    /// Whether this item counts against the one-heavy-item limit.
    fn is_heavy(&self) -> bool;
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

/// Called when something changed for the other end.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

struct State<T> {
    /// The items in order, each with whether it is heavy (weighed once, on
    /// the way in, so the count below cannot drift).
    waiting: VecDeque<(T, bool)>,
    /// How many of `waiting` are heavy.
    heavy: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// Wakes the receiving job: an item came, or the sender went.
    on_item: Option<Wake>,
    /// Wakes the sending job: room appeared, or the receiver went.
    on_room: Option<Wake>,
}

/// Why `try_send` gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySend<T> {
    /// No room now; the `on_room` callback runs when there is.
    Full(T),
    /// The receiving end is gone.
    Closed(T),
}

/// What `try_recv` found.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecv<T> {
    /// The next item.
    Item(T),
    /// Nothing now; the `on_item` callback runs when there is.
    Empty,
    /// Nothing, and the sender is gone: nothing will come.
    Closed,
}

/// The sending end.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving end; iterate it to take the items in order.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A new, empty link.
pub fn link<T: Weighed>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            waiting: VecDeque::new(),
            heavy: 0,
            sender_gone: false,
            receiver_gone: false,
            on_item: None,
            on_room: None,
        }),
        changed: Condvar::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A thread that panicked holding the lock left the queue whole:
        // nothing that can panic runs between a change of `waiting` and of
        // `heavy`.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Weighed> Sender<T> {
    /// Queues `item`, first waiting while a heavy item is already waiting
    /// (if `item` is heavy) or the link is full. Gives `item` back if the
    /// receiving end is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let heavy = item.is_heavy();
        let mut state = self.0.lock();
        loop {
            if state.receiver_gone {
                return Err(item);
            }
            let room = state.waiting.len() < MOST_WAITING && !(heavy && state.heavy > 0);
            if room {
                break;
            }
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.heavy += usize::from(heavy);
        state.waiting.push_back((item, heavy));
        let wake = state.on_item.clone();
        drop(state);
        self.0.changed.notify_all();
        if let Some(wake) = wake {
            wake();
        }
        Ok(())
    }

    /// Queues `item` if there is room now (for a heavy item: no heavy one
    /// waiting), without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySend<T>> {
        let heavy = item.is_heavy();
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(TrySend::Closed(item));
        }
        if state.waiting.len() >= MOST_WAITING || (heavy && state.heavy > 0) {
            return Err(TrySend::Full(item));
        }
        state.heavy += usize::from(heavy);
        state.waiting.push_back((item, heavy));
        let wake = state.on_item.clone();
        drop(state);
        self.0.changed.notify_all();
        if let Some(wake) = wake {
            wake();
        }
        Ok(())
    }

    /// Whether an item of any weight would be taken now (or the receiver
    /// is gone, so a send would return at once).
    pub fn has_room(&self) -> bool {
        let state = self.0.lock();
        state.receiver_gone || (state.waiting.len() < MOST_WAITING && state.heavy == 0)
    }

    /// Runs `wake` whenever room appears (an item is taken) or the
    /// receiver goes.
    pub fn on_room(&self, wake: Wake) {
        self.0.lock().on_room = Some(wake);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        let wake = state.on_item.clone();
        drop(state);
        self.0.changed.notify_all();
        if let Some(wake) = wake {
            wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the next item if there is one, without waiting.
    pub fn try_recv(&self) -> TryRecv<T> {
        let mut state = self.0.lock();
        match state.waiting.pop_front() {
            Some((item, heavy)) => {
                state.heavy -= usize::from(heavy);
                let wake = state.on_room.clone();
                drop(state);
                self.0.changed.notify_all();
                if let Some(wake) = wake {
                    wake();
                }
                TryRecv::Item(item)
            }
            None if state.sender_gone => TryRecv::Closed,
            None => TryRecv::Empty,
        }
    }

    /// Whether an item is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.lock().waiting.is_empty()
    }

    /// Runs `wake` whenever an item comes or the sender goes.
    pub fn on_item(&self, wake: Wake) {
        self.0.lock().on_item = Some(wake);
    }
}

impl<T: Weighed> Iterator for Receiver<T> {
    type Item = T;

    /// The next item, waiting for one; `None` once the sender is gone and
    /// nothing is left.
    fn next(&mut self) -> Option<T> {
        let mut state = self.0.lock();
        loop {
            if let Some((item, heavy)) = state.waiting.pop_front() {
                state.heavy -= usize::from(heavy);
                let wake = state.on_room.clone();
                drop(state);
                self.0.changed.notify_all();
                if let Some(wake) = wake {
                    wake();
                }
                return Some(item);
            }
            if state.sender_gone {
                return None;
            }
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // Nothing will take them: let them go now.
        let dropped = std::mem::take(&mut state.waiting);
        state.heavy = 0;
        let wake = state.on_room.clone();
        drop(state);
        drop(dropped);
        self.0.changed.notify_all();
        if let Some(wake) = wake {
            wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A test item: a number, heavy or not.
    #[derive(Debug, PartialEq)]
    struct Item(u32, bool);

    impl Weighed for Item {
        fn is_heavy(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn empty_items_pass_a_waiting_full_one_without_waiting_and_order_holds() {
        let (tx, rx) = link();
        tx.send(Item(1, true)).unwrap();
        // Would block with a one-slot channel; here they queue at once.
        for i in 2..10 {
            tx.send(Item(i, false)).unwrap();
        }
        let sender = std::thread::spawn(move || {
            // Waits until item 1 is taken.
            tx.send(Item(10, true)).unwrap();
            tx.send(Item(11, false)).unwrap();
        });
        let got: Vec<Item> = rx.collect();
        sender.join().unwrap();
        let numbers: Vec<u32> = got.iter().map(|i| i.0).collect();
        assert_eq!(numbers, (1..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_second_heavy_item_waits_for_the_first_to_be_taken() {
        let (tx, mut rx) = link();
        tx.send(Item(1, true)).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            tx.send(Item(2, true)).unwrap();
            done_tx.send(()).unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the second heavy item did not wait"
        );
        assert_eq!(rx.next(), Some(Item(1, true)));
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(rx.next(), Some(Item(2, true)));
        sender.join().unwrap();
        assert_eq!(rx.next(), None);
    }

    #[test]
    fn a_gone_receiver_gives_the_item_back_and_frees_a_waiting_sender() {
        let (tx, rx) = link();
        tx.send(Item(1, true)).unwrap();
        let sender = std::thread::spawn(move || tx.send(Item(2, true)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!sender.is_finished(), "the sender did not wait");
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(Item(2, true)));
    }

    #[test]
    fn a_gone_sender_wakes_a_waiting_receiver_after_what_is_left() {
        let (tx, mut rx) = link();
        tx.send(Item(1, false)).unwrap();
        assert_eq!(rx.next(), Some(Item(1, false)));
        let receiver = std::thread::spawn(move || rx.next());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!receiver.is_finished(), "the receiver did not wait");
        drop(tx);
        assert_eq!(receiver.join().unwrap(), None);
    }

    #[test]
    fn the_link_holds_a_bounded_number_of_empty_items() {
        let (tx, mut rx) = link();
        for i in 0..MOST_WAITING as u32 {
            tx.send(Item(i, false)).unwrap();
        }
        let sender = std::thread::spawn(move || tx.send(Item(u32::MAX, false)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sender.is_finished(), "a full link took one more");
        assert_eq!(rx.next(), Some(Item(0, false)));
        sender.join().unwrap().unwrap();
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, PartialEq)]
    struct Item(u32, bool);

    impl Weighed for Item {
        fn is_heavy(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn jobs_are_woken_for_items_and_for_room() {
        let (tx, rx) = link();
        let items = Arc::new(AtomicUsize::new(0));
        let rooms = Arc::new(AtomicUsize::new(0));
        let (i, r) = (items.clone(), rooms.clone());
        rx.on_item(Arc::new(move || {
            i.fetch_add(1, Ordering::SeqCst);
        }));
        tx.on_room(Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(rx.try_recv(), TryRecv::Empty);
        assert!(tx.has_room());
        tx.try_send(Item(1, true)).unwrap();
        assert_eq!(items.load(Ordering::SeqCst), 1);
        assert!(!tx.has_room(), "a heavy item waits");
        assert_eq!(
            tx.try_send(Item(2, true)),
            Err(TrySend::Full(Item(2, true)))
        );
        tx.try_send(Item(3, false)).unwrap();
        assert_eq!(rx.try_recv(), TryRecv::Item(Item(1, true)));
        assert_eq!(rooms.load(Ordering::SeqCst), 1);
        assert!(tx.has_room());
        assert_eq!(rx.try_recv(), TryRecv::Item(Item(3, false)));
        drop(tx);
        assert_eq!(
            items.load(Ordering::SeqCst),
            3,
            "the sender's going wakes too"
        );
        assert_eq!(rx.try_recv(), TryRecv::Closed);
    }
}
