//! `WorkerPool`: threads for blocking work (storage, password hashing, waiting on a
//! push's confirmation), fed through crossbeam channels.
//!
//! Each worker has its own queue; a job goes to the worker its key picks, so all jobs
//! of one connection run on one worker, in the order they were dispatched, while
//! different connections run in parallel. `dispatch` is safe to call from any thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

pub struct WorkerPool<J> {
    dispatcher: Dispatcher<J>,
    threads: Vec<JoinHandle<()>>,
}

/// Queues jobs on the pool's workers; cloneable, for threads other than the loops.
pub struct Dispatcher<J> {
    queues: Arc<[Sender<J>]>,
    /// Jobs dispatched and not finished.
    busy: Arc<AtomicUsize>,
}

impl<J> Clone for Dispatcher<J> {
    fn clone(&self) -> Self {
        Dispatcher { queues: Arc::clone(&self.queues), busy: Arc::clone(&self.busy) }
    }
}

impl<J> Dispatcher<J> {
    /// Queues `job` on the worker that `key` picks.
    pub fn dispatch(&self, key: u64, job: J) {
        let i = (key % self.queues.len() as u64) as usize;
        self.busy.fetch_add(1, Ordering::AcqRel);
        if self.queues[i].send(job).is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            log::error!("worker {i} has stopped; a job was dropped");
        }
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
            let (tx, rx) = crossbeam_channel::unbounded::<J>();
            let mut work = make(i);
            let busy = Arc::clone(&busy);
            threads.push(std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                for job in rx {
                    work(job);
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            })?);
            queues.push(tx);
        }
        Ok(WorkerPool { dispatcher: Dispatcher { queues: queues.into(), busy }, threads })
    }

    /// Queues `job` on the worker that `key` picks.
    pub fn dispatch(&self, key: u64, job: J) {
        self.dispatcher.dispatch(key, job);
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
