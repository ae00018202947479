//! `LogWriter`: the group commit of the message log.
//!
//! Threads: one thread, `log-writer`, owns nothing but the `Arc<dyn Store>` and does
//! every write of the log it is given. Any thread may call [`LogWriter::submit`] and
//! [`LogWriter::settle`], which queue the work and return at once (the queue is
//! unbounded; [`LogWriter::depth`] says how long it is), and [`LogWriter::barrier`],
//! which blocks its caller until the work queued before it is done.
//!
//! The writer takes everything queued, up to [`MAX_BATCH`] requests, and commits it
//! together: every message with one [`Store::append`] (one transaction: one fsync or
//! WAL append for the batch), then every settle with one [`Store::settle`]. Then
//! it calls each message's `done`, in the order they were submitted, and releases the
//! barriers. While a batch commits, the next one queues up, so batches grow with the
//! load and a lone message is written at once.
//!
//! `done` runs on the writer's thread: it must be quick and must not block (hand the
//! result to whoever answers the client). Every `done` is called exactly once: when
//! the writer has stopped, or a batch failed, with the error.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{Accepted, Mid, NewMessage, Result, Store, StoreError, UserId};

/// Requests one batch takes at most: messages, settles and barriers together.
pub const MAX_BATCH: usize = 1024;

/// What is called with the outcome of one submitted message.
pub type Done = Box<dyn FnOnce(Result<Accepted>) + Send>;

/// The log's writing thread and the queue to it. See the module docs.
pub struct LogWriter {
    queue: Sender<Job>,
    /// Requests queued and not yet taken by the writer.
    depth: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Job {
    Append(NewMessage, Reply),
    Settle(UserId, Vec<Mid>),
    Barrier(Sender<()>),
    Stop,
}

impl LogWriter {
    /// Starts the `log-writer` thread on `store`.
    pub fn new(store: Arc<dyn Store>) -> std::io::Result<LogWriter> {
        let (queue, jobs) = crossbeam_channel::unbounded();
        let depth = Arc::new(AtomicUsize::new(0));
        let thread = {
            let depth = Arc::clone(&depth);
            std::thread::Builder::new().name("log-writer".into()).spawn(move || run(&*store, &jobs, &depth))?
        };
        Ok(LogWriter { queue, depth, thread: Mutex::new(Some(thread)) })
    }

    /// Queues `msg` for the next batch; `done` gets its [`Accepted`] once the batch is
    /// committed, or the error. Never blocks.
    pub fn submit(&self, msg: NewMessage, done: Done) {
        self.send(Job::Append(msg, Reply(Some(done))));
    }

    /// Queues the removal of `mids` from `user`'s inbox ([`Store::settle`]), applied with
    /// the next batch. Never blocks. A failure is logged: the messages stay owed and are
    /// delivered again, never lost.
    pub fn settle(&self, user: UserId, mids: Vec<Mid>) {
        if !mids.is_empty() {
            self.send(Job::Settle(user, mids));
        }
    }

    /// Blocks until everything submitted before this call has been committed (or its
    /// error reported): e.g. a user's settles, before the user is let go.
    pub fn barrier(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Job::Barrier(tx));
        // An error means the writer is gone, and with it everything before.
        let _ = rx.recv();
    }

    /// Requests queued and not yet taken by the writer.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Finishes everything queued, then ends the thread and waits for it. Later
    /// submissions get an error at once. Idempotent; also run on drop.
    pub fn stop(&self) {
        self.send(Job::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            // A `done` that drops the last handle runs on the writer itself.
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                log::error!("log-writer: the thread panicked");
            }
        }
    }

    fn send(&self, job: Job) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(returned) = self.queue.send(job) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            // Dropping the job answers its `done` with an error and frees a barrier.
            drop(returned);
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer's loop: a batch of what is queued, committed, answered; again. After a
/// `Stop` it finishes what is queued and returns (dropping the queue: a job sent later
/// comes back to its sender).
fn run(store: &dyn Store, jobs: &Receiver<Job>, depth: &AtomicUsize) {
    let mut stopping = false;
    loop {
        let first = if stopping {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut batch = Batch::default();
        let mut taken = 1;
        stopping |= batch.add(first);
        while taken < MAX_BATCH {
            let Ok(job) = jobs.try_recv() else { break };
            taken += 1;
            stopping |= batch.add(job);
        }
        depth.fetch_sub(taken, Ordering::Relaxed);
        batch.commit(store);
    }
}

/// What one turn of the writer commits.
#[derive(Default)]
struct Batch {
    msgs: Vec<NewMessage>,
    replies: Vec<Reply>,
    /// Per user, in the order users first appear.
    settles: Vec<(UserId, Vec<Mid>)>,
    settle_index: HashMap<UserId, usize>,
    barriers: Vec<Sender<()>>,
}

impl Batch {
    /// Adds a job; true when it was `Stop`.
    fn add(&mut self, job: Job) -> bool {
        match job {
            Job::Append(msg, reply) => {
                self.msgs.push(msg);
                self.replies.push(reply);
            }
            Job::Settle(user, mids) => match self.settle_index.get(&user) {
                Some(&i) => self.settles[i].1.extend(mids),
                None => {
                    self.settle_index.insert(user, self.settles.len());
                    self.settles.push((user, mids));
                }
            },
            Job::Barrier(barrier) => self.barriers.push(barrier),
            Job::Stop => return true,
        }
        false
    }

    fn commit(self, store: &dyn Store) {
        if !self.msgs.is_empty() {
            let outcome = match store.append(&self.msgs) {
                Ok(accepted) if accepted.len() == self.replies.len() => Ok(accepted),
                Ok(accepted) => Err(StoreError::Unavailable(format!(
                    "append of {} messages answered {} of them",
                    self.msgs.len(),
                    accepted.len()
                ))),
                Err(err) => Err(err),
            };
            match outcome {
                Ok(accepted) => self.replies.into_iter().zip(accepted).for_each(|(reply, a)| reply.send(Ok(a))),
                Err(err) => {
                    log::warn!("log-writer: {} messages not written: {err}", self.msgs.len());
                    self.replies.into_iter().for_each(|reply| reply.send(Err(err.clone())));
                }
            }
        }
        if !self.settles.is_empty() {
            if let Err(err) = store.settle(&self.settles) {
                log::warn!("log-writer: settles of {} users not applied (delivered again): {err}", self.settles.len());
            }
        }
        for barrier in self.barriers {
            let _ = barrier.send(());
        }
    }
}

/// A `done` called exactly once: with the outcome, or with an error when its job is
/// dropped unprocessed (the writer has stopped).
struct Reply(Option<Done>);

impl Reply {
    fn send(mut self, outcome: Result<Accepted>) {
        if let Some(done) = self.0.take() {
            call(done, outcome);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            call(done, Err(StoreError::Unavailable("the log writer has stopped".into())));
        }
    }
}

/// Calls `done`; a panic in it is logged and does not take the writer down.
fn call(done: Done, outcome: Result<Accepted>) {
    if catch_unwind(AssertUnwindSafe(move || done(outcome))).is_err() {
        log::error!("log-writer: a completion panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Conversation, Credentials, Group, GroupId, Message, Role, SqliteStore, User};
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A store on a temp SQLite file that records the size of each append, can be made
    /// to fail, and can hold the writer inside `append` until released.
    struct Probe {
        inner: SqliteStore,
        dir: PathBuf,
        batches: Mutex<Vec<usize>>,
        fail: AtomicBool,
        /// When set: `append` reports that it was entered, then waits for a release.
        gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    }

    impl Probe {
        fn new() -> Arc<Probe> {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "chat-log-writer-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let inner = SqliteStore::open(dir.join("chat.db").to_str().unwrap()).unwrap();
            Arc::new(Probe {
                inner,
                dir,
                batches: Mutex::new(Vec::new()),
                fail: AtomicBool::new(false),
                gate: Mutex::new(None),
            })
        }

        /// The next `append` signals on the returned receiver and waits for the sender.
        fn hold_next_append(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (entered_tx, entered_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel();
            *self.gate.lock().unwrap() = Some((entered_tx, release_rx));
            (entered_rx, release_tx)
        }

        fn batches(&self) -> Vec<usize> {
            self.batches.lock().unwrap().clone()
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    macro_rules! delegate {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            $(fn $name(&self, $($arg: $ty),*) -> Result<$ret> { self.inner.$name($($arg),*) })*
        };
    }

    impl Store for Probe {
        delegate! {
            create_user(name: &str, password_hash: &str) -> UserId;
            credentials(id: UserId) -> Option<Credentials>;
            user_exists(id: UserId) -> bool;
            set_online(ids: &[UserId], online: bool) -> ();
            set_all_offline() -> ();
            online_users() -> Vec<UserId>;
            add_friend(user: UserId, friend: UserId) -> ();
            del_friend(user: UserId, friend: UserId) -> ();
            friends(user: UserId) -> Vec<User>;
            create_group(creator: UserId, name: &str, desc: &str) -> GroupId;
            join_group(group: GroupId, user: UserId) -> ();
            leave_group(group: GroupId, user: UserId) -> Role;
            group_members(group: GroupId) -> Option<Vec<(UserId, Role)>>;
            user_groups(user: UserId) -> Vec<Group>;
            inbox(user: UserId, after: Mid, limit: usize) -> Vec<Message>;
            settle(settles: &[(UserId, Vec<Mid>)]) -> ();
            history(me: UserId, conv: Conversation, before: Option<Mid>, limit: usize) -> (Vec<Message>, bool);
            expire(unix_time: i64) -> usize;
        }

        fn append(&self, msgs: &[NewMessage]) -> Result<Vec<Accepted>> {
            if let Some((entered, release)) = self.gate.lock().unwrap().take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.batches.lock().unwrap().push(msgs.len());
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("probe: failing on purpose".into()));
            }
            self.inner.append(msgs)
        }
    }

    fn message(sender: UserId, to: UserId, i: usize) -> NewMessage {
        NewMessage {
            sender,
            sender_name: format!("u{sender}"),
            to: Conversation::Peer(to),
            text: format!("{i}").into(),
            time: "2026-05-01 12:00:00".into(),
            unix_time: 1_780_000_000,
            cmid: None,
            recipients: vec![to],
        }
    }

    /// Outcomes by submission index, filled in by the `done`s.
    type Outcomes = Arc<Mutex<Vec<(usize, Result<Accepted>)>>>;

    fn recorder(outcomes: &Outcomes, i: usize) -> Done {
        let outcomes = Arc::clone(outcomes);
        Box::new(move |outcome| outcomes.lock().unwrap().push((i, outcome)))
    }

    fn setup() -> (Arc<Probe>, LogWriter, UserId, UserId) {
        let probe = Probe::new();
        let a = probe.create_user("alice", "h").unwrap();
        let b = probe.create_user("bob", "h").unwrap();
        let writer = LogWriter::new(Arc::clone(&probe) as Arc<dyn Store>).unwrap();
        (probe, writer, a, b)
    }

    #[test]
    fn what_queues_during_a_commit_is_the_next_batch_in_order() {
        let (probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        let (entered, release) = probe.hold_next_append();
        writer.submit(message(a, b, 0), recorder(&outcomes, 0));
        entered.recv().unwrap();
        // The writer is inside the first commit: 2,500 more queue up meanwhile.
        for i in 1..=2500 {
            writer.submit(message(a, b, i), recorder(&outcomes, i));
        }
        assert_eq!(writer.depth(), 2500);
        release.send(()).unwrap();
        writer.barrier();
        assert_eq!(writer.depth(), 0);
        assert_eq!(probe.batches(), [1, MAX_BATCH, MAX_BATCH, 2500 - 2 * MAX_BATCH]);
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..=2500).collect::<Vec<_>>());
        let mids: Vec<Mid> = outcomes.iter().map(|(_, o)| o.as_ref().unwrap().mid).collect();
        assert!(mids.windows(2).all(|w| w[0] < w[1]), "mids not in submission order");
        let (page, more) = probe.history(a, Conversation::Peer(b), None, 3).unwrap();
        assert_eq!(page.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["2498", "2499", "2500"]);
        assert!(more);
    }

    #[test]
    fn batches_form_under_concurrent_submitters() {
        let (probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (writer, outcomes) = (&writer, &outcomes);
                scope.spawn(move || {
                    for i in 0..500 {
                        writer.submit(message(a, b, t * 1000 + i), recorder(outcomes, t * 1000 + i));
                    }
                });
            }
        });
        writer.barrier();
        let batches = probe.batches();
        assert_eq!(batches.iter().sum::<usize>(), 2000);
        assert!(batches.len() < 2000 && batches.iter().all(|&n| n <= MAX_BATCH), "{batches:?}");
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes.len(), 2000);
        // Each submitter's messages keep its order.
        for t in 0..4 {
            let mids: Vec<Mid> =
                outcomes.iter().filter(|(i, _)| i / 1000 == t).map(|(_, o)| o.as_ref().unwrap().mid).collect();
            assert_eq!(mids.len(), 500);
            assert!(mids.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn barrier_waits_for_appends_and_settles_before_it() {
        let (probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        for i in 0..300 {
            writer.submit(message(a, b, i), recorder(&outcomes, i));
        }
        writer.barrier();
        assert_eq!(outcomes.lock().unwrap().len(), 300);
        let mids: Vec<Mid> = probe.inbox(b, 0, 1000).unwrap().iter().map(|m| m.mid).collect();
        assert_eq!(mids.len(), 300);
        // Settles for two users, in several requests, land as one batch.
        let (entered, release) = probe.hold_next_append();
        writer.submit(message(b, a, 300), recorder(&outcomes, 300));
        entered.recv().unwrap();
        writer.settle(b, mids[..100].to_vec());
        writer.settle(a, vec![mids[0]]);
        writer.settle(b, mids[100..250].to_vec());
        writer.settle(b, Vec::new());
        release.send(()).unwrap();
        writer.barrier();
        let left: Vec<Mid> = probe.inbox(b, 0, 1000).unwrap().iter().map(|m| m.mid).collect();
        assert_eq!(left, mids[250..]);
        assert_eq!(probe.inbox(a, 0, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_commit_reaches_every_done_of_its_batch_and_the_writer_goes_on() {
        let (probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        let (entered, release) = probe.hold_next_append();
        writer.submit(message(a, b, 0), recorder(&outcomes, 0));
        entered.recv().unwrap();
        for i in 1..=50 {
            writer.submit(message(a, b, i), recorder(&outcomes, i));
        }
        probe.fail.store(true, Ordering::SeqCst);
        release.send(()).unwrap();
        writer.barrier();
        probe.fail.store(false, Ordering::SeqCst);
        writer.submit(message(a, b, 51), recorder(&outcomes, 51));
        writer.barrier();
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes.len(), 52);
        for (i, outcome) in outcomes.iter() {
            match i {
                51 => assert!(outcome.as_ref().unwrap().first),
                _ => assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{i}: {outcome:?}"),
            }
        }
        let (page, _) = probe.history(a, Conversation::Peer(b), None, 100).unwrap();
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn a_panicking_done_does_not_stop_the_writer() {
        let (_probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        writer.submit(message(a, b, 0), Box::new(|_| panic!("a careless completion")));
        writer.submit(message(a, b, 1), recorder(&outcomes, 1));
        writer.barrier();
        assert!(outcomes.lock().unwrap()[0].1.is_ok());
    }

    #[test]
    fn stop_finishes_the_queue_and_later_work_gets_an_error() {
        let (probe, writer, a, b) = setup();
        let outcomes = Outcomes::default();
        let (entered, release) = probe.hold_next_append();
        writer.submit(message(a, b, 0), recorder(&outcomes, 0));
        entered.recv().unwrap();
        for i in 1..200 {
            writer.submit(message(a, b, i), recorder(&outcomes, i));
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                release.send(()).unwrap();
            });
            writer.stop();
        });
        assert_eq!(outcomes.lock().unwrap().len(), 200);
        assert!(outcomes.lock().unwrap().iter().all(|(_, o)| o.is_ok()));
        // After the stop: an error at once, and a barrier does not hang.
        writer.submit(message(a, b, 200), recorder(&outcomes, 200));
        assert!(matches!(outcomes.lock().unwrap()[200], (200, Err(StoreError::Unavailable(_)))));
        writer.barrier();
        writer.stop();
        drop(writer);
        assert_eq!(probe.history(a, Conversation::Peer(b), None, 1000).unwrap().0.len(), 200);
    }
}
