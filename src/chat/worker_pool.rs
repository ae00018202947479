//! `WorkerPool`: threads for blocking work (storage, password hashing, waiting on a
//! push's confirmation), each fed by its own bounded queue (`crate::queue`).
//!
//! A job goes to the worker its key picks, so all jobs of one connection run on one
//! worker, in the order they were dispatched, while different connections run in
//! parallel. Each job runs under `panic_guard::catch`: a panic fails that job (its
//! handler answers 500 where there is a request to answer), never the worker.
//!
//! A worker's queue is bounded ([`JOB_BOUND`]) for the loops, which must never block:
//! `try_dispatch` is refused when it is full, and the loop stops reading that
//! connection until `when_room` says the queue has drained to half. `dispatch_always`
//! goes past the bound, for jobs whose number is bounded by construction: at most one
//! per connection (its close, an inbox pump it asked for), the log writer's publishes
//! (one per committed message, whose sender has at most `MAX_IN_FLIGHT` requests in
//! flight), and the bus's subscriber thread (one job per push it reads), which
//! must not wait either (Redis would buffer what it cannot deliver, then drop the
//! subscriber, and with it messages already counted as delivered).
//! Every function here is safe to call from any thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::panic_guard;
use crate::queue::{PushError, Queue};

/// Jobs queued on one worker at most for `try_dispatch`.
pub const JOB_BOUND: usize = 1024;

pub struct WorkerPool<J> {
    dispatcher: Dispatcher<J>,
    threads: Vec<JoinHandle<()>>,
}

/// Queues jobs on the pool's workers; cloneable, for threads other than the loops.
pub struct Dispatcher<J> {
    queues: Arc<[Queue<J>]>,
    /// Jobs dispatched and not finished.
    busy: Arc<AtomicUsize>,
}

impl<J> Clone for Dispatcher<J> {
    fn clone(&self) -> Self {
        Dispatcher { queues: Arc::clone(&self.queues), busy: Arc::clone(&self.busy) }
    }
}

impl<J> Dispatcher<J> {
    fn queue(&self, key: u64) -> (usize, &Queue<J>) {
        let i = (key % self.queues.len() as u64) as usize;
        (i, &self.queues[i])
    }

    /// Queues `job` on the worker that `key` picks, unless its queue is full (`Err`
    /// gives the job back). Never blocks.
    pub fn try_dispatch(&self, key: u64, job: J) -> Result<(), J> {
        let (i, queue) = self.queue(key);
        self.busy.fetch_add(1, Ordering::AcqRel);
        let Err(e) = queue.try_push(job) else { return Ok(()) };
        self.busy.fetch_sub(1, Ordering::AcqRel);
        match e {
            PushError::Full(job) => Err(job),
            PushError::Closed => {
                log::error!("worker {i} has stopped; a job was dropped");
                Ok(())
            }
        }
    }

    /// Queues `job` on the worker that `key` picks, past the bound if need be. Never
    /// blocks. Only for jobs bounded by construction (see the module doc).
    pub fn dispatch_always(&self, key: u64, job: J) {
        let (i, queue) = self.queue(key);
        self.busy.fetch_add(1, Ordering::AcqRel);
        if queue.push_always(job).is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            log::error!("worker {i} has stopped; a job was dropped");
        }
    }

    /// Runs `f` once the queue of the worker that `key` picks is at most half full
    /// (at once if it is). `f` runs on that worker's thread and must not block.
    pub fn when_room(&self, key: u64, f: impl FnOnce() + Send + 'static) {
        self.queue(key).1.when_room(f);
    }
}

impl<J: Send + 'static> WorkerPool<J> {
    /// Starts `n` workers; `make(i)` builds worker i's job function, which owns that
    /// worker's private state.
    pub fn start<F>(n: usize, mut make: impl FnMut(usize) -> F) -> std::io::Result<WorkerPool<J>>
    where
        F: FnMut(J) + Send + 'static,
    {
        let busy = Arc::new(AtomicUsize::new(0));
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = Queue::new(JOB_BOUND);
            let mut work = make(i);
            let busy = Arc::clone(&busy);
            threads.push(std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                while let Some(job) = rx.pop() {
                    if let Err(why) = panic_guard::catch(|| work(job)) {
                        log::error!("worker {i}: a job failed: {why}");
                    }
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            })?);
            queues.push(tx);
        }
        Ok(WorkerPool { dispatcher: Dispatcher { queues: queues.into(), busy }, threads })
    }

    /// See [`Dispatcher::try_dispatch`].
    pub fn try_dispatch(&self, key: u64, job: J) -> Result<(), J> {
        self.dispatcher.try_dispatch(key, job)
    }

    /// See [`Dispatcher::dispatch_always`].
    pub fn dispatch_always(&self, key: u64, job: J) {
        self.dispatcher.dispatch_always(key, job);
    }

    /// See [`Dispatcher::when_room`].
    pub fn when_room(&self, key: u64, f: impl FnOnce() + Send + 'static) {
        self.dispatcher.when_room(key, f);
    }

    pub fn dispatcher(&self) -> Dispatcher<J> {
        self.dispatcher.clone()
    }

    /// Waits until no job is queued or running, or until `timeout`; true if idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.dispatcher.busy.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Lets the workers finish their queues, then joins them.
    /// Dispatchers cloned elsewhere must be dropped first, or this waits for them.
    pub fn stop(self) {
        drop(self.dispatcher);
        for t in self.threads {
            if t.join().is_err() {
                log::error!("a worker panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_panicking_job_leaves_its_worker_alive() {
        let (tx, rx) = mpsc::channel();
        let pool = WorkerPool::start(1, |_| {
            let tx = tx.clone();
            move |job: u32| {
                assert_ne!(job, 13, "unlucky");
                let _ = tx.send(job);
            }
        })
        .unwrap();
        for job in [1, 13, 2] {
            pool.dispatcher().dispatch_always(0, job);
        }
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(2));
        assert!(pool.wait_idle(Duration::from_secs(5)));
        pool.stop();
    }

    #[test]
    fn a_full_queue_refuses_and_says_when_it_has_room() {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let mut gate = Some(gate_rx);
        let pool = WorkerPool::start(1, |_| {
            let gate = gate.take().unwrap();
            move |_: usize| {
                let _ = gate.recv();
            }
        })
        .unwrap();
        // The worker takes the first job and waits at the gate; the rest fill its queue.
        let mut queued = 0;
        while pool.try_dispatch(0, queued).is_ok() {
            queued += 1;
            assert!(queued <= JOB_BOUND + 1, "the bound does not hold");
        }
        assert!(queued >= JOB_BOUND, "refused at {queued}");
        // Past the bound for jobs bounded by construction.
        pool.dispatch_always(0, 0);
        let (room_tx, room_rx) = mpsc::channel();
        pool.when_room(0, move || {
            let _ = room_tx.send(());
        });
        assert!(room_rx.recv_timeout(Duration::from_millis(100)).is_err(), "room while full");
        for _ in 0..=JOB_BOUND / 2 + 1 {
            gate_tx.send(()).unwrap();
        }
        room_rx.recv_timeout(Duration::from_secs(5)).expect("told of room once half drained");
        drop(gate_tx);
        assert!(pool.wait_idle(Duration::from_secs(5)));
        pool.stop();
    }
}
