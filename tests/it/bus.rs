//! `RedisBus` against a real Redis (a private one per test, from `support::services`),
//! through the public `Bus` API: pushes, order, presence, unsubscribe
//! semantics, and outages (Redis restarted, Redis stalled by SIGSTOP).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat::bus::{Bus, Inbox, Incoming, RedisBus};
use chat::store::UserId;

use crate::support::services::Redis;

/// Records what the bus hands in.
#[derive(Default)]
struct Recorder {
    got: Mutex<(Vec<Incoming>, Vec<Vec<UserId>>)>,
    cond: Condvar,
}

impl Inbox for Recorder {
    fn incoming(&self, msg: Incoming) {
        self.got.lock().unwrap().0.push(msg);
        self.cond.notify_all();
    }

    fn resubscribed(&self, users: Vec<UserId>) {
        self.got.lock().unwrap().1.push(users);
        self.cond.notify_all();
    }
}

impl Recorder {
    /// Waits until `done` holds over what was recorded, at most `limit`.
    fn wait(&self, limit: Duration, done: impl Fn(&[Incoming], &[Vec<UserId>]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut got = self.got.lock().unwrap();
        loop {
            if done(&got.0, &got.1) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            got = self.cond.wait_timeout(got, deadline - now).unwrap().0;
        }
    }

    fn messages(&self) -> Vec<Incoming> {
        self.got.lock().unwrap().0.clone()
    }

    fn resubscriptions(&self) -> Vec<Vec<UserId>> {
        self.got.lock().unwrap().1.clone()
    }
}

fn bus(redis: &Redis) -> (RedisBus, Arc<Recorder>) {
    let inbox = Arc::new(Recorder::default());
    let bus = RedisBus::connect(&redis.url(), inbox.clone()).expect("connect");
    (bus, inbox)
}

fn push(u: UserId, text: &str) -> Incoming {
    Incoming::Push(u, Arc::from(text))
}

/// PUBLISH on any channel, as another program would; the number of receivers.
fn publish_raw(redis: &Redis, channel: &str, payload: &str) -> i64 {
    let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    redis::cmd("PUBLISH").arg(channel).arg(payload).query(&mut con).unwrap()
}

const WAIT: Duration = Duration::from_secs(3);

#[test]
fn push_and_unsubscribed_user() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    a.subscribe(7).expect("subscribing twice is fine");
    let json = r#"{"msgid":5,"id":1,"to":7,"msg":"hi"}"#;
    assert_eq!(b.publish(7, json), Ok(true));
    assert_eq!(b.publish(8, json), Ok(false));
    assert!(inbox.wait(WAIT, |m, _| !m.is_empty()));
    assert_eq!(inbox.messages(), vec![push(7, json)]);
    a.unsubscribe(9).expect("unsubscribing a user not subscribed is Ok");
}

#[test]
fn order_of_many_pushes() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    for i in 0..1000 {
        assert_eq!(b.publish(7, &format!("{{\"n\":{i}}}")), Ok(true));
    }
    assert!(inbox.wait(Duration::from_secs(5), |m, _| m.len() >= 1000));
    let want: Vec<Incoming> = (0..1000).map(|i| push(7, &format!("{{\"n\":{i}}}"))).collect();
    assert_eq!(inbox.messages(), want);
}

#[test]
fn online_elsewhere_follows_subscriptions() {
    let redis = Redis::start();
    let (a, _) = bus(&redis);
    let (b, _) = bus(&redis);
    assert_eq!(b.online_elsewhere(7), Ok(false));
    a.subscribe(7).expect("subscribe");
    assert_eq!(b.online_elsewhere(7), Ok(true));
    assert_eq!(a.online_elsewhere(7), Ok(false), "not elsewhere from the holder itself");
    a.unsubscribe(7).expect("unsubscribe");
    // Presence outlives the channel until the holder has stored what reached it.
    assert_eq!(b.online_elsewhere(7), Ok(true), "held until released");
    assert_eq!(b.publish(7, "{}"), Ok(false), "but nothing is received any more");
    a.release(7).expect("release");
    assert_eq!(b.online_elsewhere(7), Ok(false));
    assert_eq!(a.online_elsewhere(7), Ok(false));
}

#[test]
fn unsubscribe_returns_after_earlier_messages_were_handed_over() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    for round in 0..5 {
        a.subscribe(7).expect("subscribe");
        let msgs: Vec<(UserId, Arc<str>)> =
            (0..200).map(|i| (7, Arc::from(format!("{{\"r\":{round},\"n\":{i}}}")))).collect();
        assert_eq!(b.publish_many(&msgs), Ok(vec![true; 200]));
        a.unsubscribe(7).expect("unsubscribe");
        // No wait: everything published before the unsubscribe is already there.
        assert_eq!(inbox.messages().len(), 200 * (round + 1), "round {round}");
        assert_eq!(b.publish(7, "{}"), Ok(false));
    }
}

#[test]
fn publish_many_mixed() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    a.subscribe(1).expect("subscribe");
    a.subscribe(3).expect("subscribe");
    let msgs: Vec<(UserId, Arc<str>)> =
        vec![(1, "{\"a\":1}".into()), (2, "{\"a\":2}".into()), (3, "{\"a\":3}".into()), (4, "{\"a\":4}".into())];
    assert_eq!(b.publish_many(&msgs), Ok(vec![true, false, true, false]));
    assert_eq!(b.publish_many(&[]), Ok(vec![]));
    assert!(inbox.wait(WAIT, |m, _| m.len() >= 2));
    assert_eq!(inbox.messages(), vec![push(1, "{\"a\":1}"), push(3, "{\"a\":3}")]);
}

#[test]
fn channels_other_than_user_ids_are_ignored() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    // Traffic on the presence channel `a` holds reaches its subscriber and is dropped.
    assert_eq!(publish_raw(&redis, "p:7", "x"), 1);
    // So are the wake-ups on its control channel, published by every (un)subscribe.
    a.subscribe(8).expect("subscribe");
    a.unsubscribe(8).expect("unsubscribe");
    assert_eq!(a.publish(7, "{}"), Ok(true));
    assert!(inbox.wait(WAIT, |m, _| !m.is_empty()));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(inbox.messages(), vec![push(7, "{}")]);
}

#[test]
fn drop_stops_the_subscriber_promptly() {
    let redis = Redis::start();
    let (a, _) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    let started = Instant::now();
    drop(a);
    assert!(started.elapsed() < Duration::from_millis(500), "drop took {:?}", started.elapsed());
}

#[test]
fn survives_a_redis_restart() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    assert_eq!(b.publish(7, "{\"n\":1}"), Ok(true));
    assert!(inbox.wait(WAIT, |m, _| m.len() == 1));

    redis.stop();
    let started = Instant::now();
    assert!(b.publish(7, "{\"n\":2}").is_err(), "publish during the outage fails");
    assert!(b.online_elsewhere(7).is_err());
    let failed_in = started.elapsed();
    assert!(failed_in < Duration::from_secs(3), "outage calls took {failed_in:?}");
    // Once the subscriber noticed: subscribe fails, unsubscribe holds.
    thread::sleep(Duration::from_millis(300));
    assert!(a.subscribe(8).is_err());
    a.unsubscribe(8).expect("unsubscribe while disconnected");
    eprintln!("outage: publish/numsub failed in {failed_in:?}");

    redis.restart();
    let restarted = Instant::now();
    assert!(inbox.wait(Duration::from_secs(5), |_, r| !r.is_empty()), "resubscribed within 5 s of the restart");
    eprintln!("outage: resubscribed {:?} after the restart", restarted.elapsed());
    assert_eq!(inbox.resubscriptions(), vec![vec![7]]);
    assert_eq!(b.publish(7, "{\"n\":3}"), Ok(true));
    assert!(inbox.wait(WAIT, |m, _| m.len() == 2));
    assert_eq!(inbox.messages(), vec![push(7, "{\"n\":1}"), push(7, "{\"n\":3}")]);
    assert_eq!(b.online_elsewhere(7), Ok(true));
    a.subscribe(8).expect("subscribe after the restart");
}

#[test]
fn survives_a_stalled_redis() {
    let redis = Redis::start();
    let (a, inbox) = bus(&redis);
    let (b, _) = bus(&redis);
    a.subscribe(7).expect("subscribe");
    assert_eq!(b.publish(7, "{\"n\":1}"), Ok(true));
    assert!(inbox.wait(WAIT, |m, _| m.len() == 1));

    redis.signal(libc::SIGSTOP);
    let started = Instant::now();
    assert!(b.publish(7, "{\"n\":2}").is_err(), "publish to a stalled redis fails");
    let failed_in = started.elapsed();
    assert!(failed_in < Duration::from_secs(3), "publish took {failed_in:?}");
    // The subscriber PINGs its silent connection after 1 s and gives it up 2 s later
    // (each checked once a second): about 3 s, 4 s at worst. Only a connection given up
    // is resubscribed when Redis wakes.
    thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    redis.signal(libc::SIGCONT);
    eprintln!("stall: publish failed in {failed_in:?}");

    assert!(inbox.wait(Duration::from_secs(5), |_, r| !r.is_empty()), "dead connection noticed and resubscribed");
    assert_eq!(inbox.resubscriptions(), vec![vec![7]]);
    assert_eq!(b.publish(7, "{\"n\":3}"), Ok(true));
    assert!(inbox.wait(WAIT, |m, _| m.iter().any(|x| *x == push(7, "{\"n\":3}"))));
}
