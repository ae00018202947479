//! `Queue`: a FIFO from many threads to one consumer thread, bounded the way
//! backpressure needs it. Feeds each event loop (`net::LoopPool`) and each worker
//! (`chat::WorkerPool`).
//!
//! All items share one FIFO, so they keep the order they were queued in, but producers
//! differ in what they may do when the queue is full:
//!
//! - [`Queue::try_push`] is refused (`Full`): for a thread that must never block (a
//!   loop). It keeps the item, pauses whatever produced it, and asks [`Queue::when_room`]
//!   to be told when to go on.
//! - [`Queue::push_wait`] waits for room: for a thread that may block, where waiting for
//!   this consumer cannot deadlock (the caller's module says why).
//! - [`Queue::push_always`] goes past the bound: only for items whose number is bounded
//!   by construction (say, at most one per connection), so the queue stays bounded by
//!   `bound` plus that number. The caller says why its items are so bounded.
//!
//! Nothing is ever dropped while the consumer runs. Once it has stopped (its
//! [`Consumer`] is dropped) items queued are dropped, and later pushes return `Closed`.
//!
//! Cost while nobody floods: a push is a channel send and a length check, a pop a
//! channel receive, a fence and one atomic load.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Called once the queue has room again.
type Waiter = Box<dyn FnOnce() + Send>;

struct Shared {
    bound: usize,
    /// Who wants to hear when the queue is at most half full.
    waiters: Mutex<Vec<Waiter>>,
    /// `waiters` is not empty: the consumer checks this after each pop.
    has_waiters: AtomicBool,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Vec<Waiter>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs (on this thread) every waiter registered so far.
    fn wake(&self) {
        let waiters = {
            let mut w = self.waiters();
            self.has_waiters.store(false, Ordering::Relaxed);
            std::mem::take(&mut *w)
        };
        for w in waiters {
            w();
        }
    }
}

/// Why a push did not queue its item.
#[derive(Debug)]
pub enum PushError<T> {
    /// At the bound (`try_push` only): the item comes back.
    Full(T),
    /// The consumer has stopped; the item was dropped.
    Closed,
}

/// The producers' side; clone it for each producer.
pub struct Queue<T> {
    tx: Sender<T>,
    shared: Arc<Shared>,
}

/// The one consumer's side.
pub struct Consumer<T> {
    rx: Receiver<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<T> Queue<T> {
    /// A queue whose bounded producers see it full at `bound` items (at least 1).
    pub fn new(bound: usize) -> (Queue<T>, Consumer<T>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            bound: bound.max(1),
            waiters: Mutex::new(Vec::new()),
            has_waiters: AtomicBool::new(false),
        });
        (Queue { tx, shared: Arc::clone(&shared) }, Consumer { rx, shared })
    }

    /// Items queued and not yet taken.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    fn is_full(&self) -> bool {
        self.tx.len() >= self.shared.bound
    }

    /// Queues `item` unless the queue is full. Never blocks. (Producers racing for the
    /// last places may pass the bound by one each.)
    pub fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        if self.is_full() {
            return Err(PushError::Full(item));
        }
        self.push_always(item)
    }

    /// Queues `item`, past the bound if need be. Never blocks. Only for items whose
    /// number is bounded by construction.
    pub fn push_always(&self, item: T) -> Result<(), PushError<T>> {
        self.tx.send(item).map_err(|_| PushError::Closed)
    }

    /// Queues `item`, first waiting while the queue is full.
    pub fn push_wait(&self, item: T) -> Result<(), PushError<T>> {
        // A consumer that has stopped leaves the queue empty (its items dropped), so this
        // ends then too, and the push says `Closed`.
        while self.is_full() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            self.when_room(move || {
                let _ = tx.send(());
            });
            let _ = rx.recv();
        }
        self.push_always(item)
    }

    /// Runs `f` once the queue is at most half full: on the consumer's thread after a
    /// pop, or on this thread at once if it already is, or when the consumer stops.
    /// `f` must not block.
    pub fn when_room(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.waiters().push(Box::new(f));
        self.shared.has_waiters.store(true, Ordering::Relaxed);
        // Pairs with the fence in `Consumer::popped`: either the consumer sees the flag,
        // or this sees the length it left.
        fence(Ordering::SeqCst);
        if self.tx.len() <= self.shared.bound / 2 {
            self.shared.wake();
        }
    }
}

impl<T> Consumer<T> {
    /// The next item, waiting for one; `None` once every producer is gone.
    pub fn pop(&self) -> Option<T> {
        let item = self.rx.recv().ok()?;
        self.popped();
        Some(item)
    }

    /// The next item if there is one.
    pub fn try_pop(&self) -> Result<T, TryRecvError> {
        let item = self.rx.try_recv()?;
        self.popped();
        Ok(item)
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn popped(&self) {
        fence(Ordering::SeqCst);
        if self.shared.has_waiters.load(Ordering::Relaxed) && self.rx.len() <= self.shared.bound / 2 {
            self.shared.wake();
        }
    }
}

impl<T> Drop for Consumer<T> {
    /// Producers waiting for room hear of it, and find the queue closed.
    fn drop(&mut self) {
        // Drop the receiver's claim first, so a woken producer's push fails at once.
        let (_, rx) = crossbeam_channel::unbounded();
        drop(std::mem::replace(&mut self.rx, rx));
        self.shared.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn drain<T>(c: &Consumer<T>) -> Vec<T> {
        std::iter::from_fn(|| c.try_pop().ok()).collect()
    }

    #[test]
    fn every_kind_of_push_keeps_one_order() {
        let (q, c) = Queue::new(2);
        q.try_push(1).unwrap();
        q.push_wait(2).unwrap();
        assert!(matches!(q.try_push(9), Err(PushError::Full(9))));
        q.push_always(3).unwrap();
        q.push_always(4).unwrap();
        assert_eq!(q.len(), 4);
        assert_eq!(drain(&c), [1, 2, 3, 4]);
    }

    #[test]
    fn when_room_runs_once_the_queue_is_half_empty() {
        let (q, c) = Queue::new(4);
        for i in 0..4 {
            q.try_push(i).unwrap();
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        q.when_room(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        c.try_pop().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0, "3 of 4 left: not yet");
        c.try_pop().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "2 of 4 left: room");
        drain(&c);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "once");
        // Already room: runs at once.
        let seen = Arc::clone(&calls);
        q.when_room(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn push_wait_waits_for_the_consumer_and_loses_nothing() {
        let (q, c) = Queue::new(8);
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        q.push_wait((p, i)).unwrap();
                        assert!(q.len() <= 8 + 4, "bound passed by more than the racing producers");
                    }
                })
            })
            .collect();
        drop(q);
        let mut next = [0; 4];
        while let Some((p, i)) = c.pop() {
            assert_eq!(next[p], i, "producer {p} out of order");
            next[p] += 1;
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(next, [10_000; 4]);
    }

    #[test]
    fn a_stopped_consumer_releases_waiting_producers() {
        let (q, c) = Queue::new(1);
        q.try_push(0).unwrap();
        let waiting = std::thread::spawn(move || q.push_wait(1));
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        assert!(matches!(waiting.join().unwrap(), Err(PushError::Closed)));
    }
}
