//! A backend-independent test suite for [`Store`].
//!
//! [`run_all`] takes a function that opens a fresh, empty store and runs every check
//! on its own store. Each backend calls it once (`sqlite_store_suite` and
//! `mysql_store_suite` at the bottom).
//!
//! The checks only rely on what the trait documents: no case sensitivity of names,
//! no trailing spaces (MySQL collations compare those differently), no NUL bytes.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use chat::store::{Credentials, Group, Member, Role, SqliteStore, Store, StoreError, User, UserId};

/// One check: gets a fresh, empty store.
type Check = fn(&dyn Store);

/// Runs every check, each on a store returned by `open_fresh`.
pub fn run_all(open_fresh: &dyn Fn() -> Arc<dyn Store>) {
    let checks: &[(&str, Check)] = &[
        ("create_user_and_credentials", create_user_and_credentials),
        ("create_user_duplicate_name_conflicts", create_user_duplicate_name_conflicts),
        ("credentials_of_missing_user_is_none", credentials_of_missing_user_is_none),
        ("user_exists", user_exists),
        ("set_online_and_offline", set_online_and_offline),
        ("set_all_offline", set_all_offline),
        ("add_friend_is_one_way_and_sorted", add_friend_is_one_way_and_sorted),
        ("add_friend_twice_conflicts", add_friend_twice_conflicts),
        ("del_friend", del_friend),
        ("del_missing_friend_is_not_found", del_missing_friend_is_not_found),
        ("create_group_makes_creator_member", create_group_makes_creator_member),
        ("create_group_duplicate_name_conflicts", create_group_duplicate_name_conflicts),
        ("join_group", join_group),
        ("join_missing_group_is_not_found", join_missing_group_is_not_found),
        ("join_group_twice_conflicts", join_group_twice_conflicts),
        ("group_members_of_missing_group_is_none", group_members_of_missing_group_is_none),
        ("group_members_sorted_by_user_id", group_members_sorted_by_user_id),
        ("leave_group_normal_member", leave_group_normal_member),
        ("leave_group_creator_deletes_group", leave_group_creator_deletes_group),
        ("leave_group_not_found", leave_group_not_found),
        ("group_ids_are_not_reused", group_ids_are_not_reused),
        ("user_groups_sorted_with_all_members", user_groups_sorted_with_all_members),
        ("user_groups_empty", user_groups_empty),
        ("mailbox_order_and_exactness", mailbox_order_and_exactness),
        ("mailbox_empty", mailbox_empty),
        ("strings_round_trip_byte_for_byte", strings_round_trip_byte_for_byte),
        ("concurrent_create_user_one_wins", concurrent_create_user_one_wins),
        ("concurrent_take_offline_is_exact", concurrent_take_offline_is_exact),
    ];
    for (name, check) in checks {
        eprintln!("store suite: {name}");
        let store = open_fresh();
        check(&*store);
    }
}

// ---------------------------------------------------------------------------------
// Helpers.

fn user(s: &dyn Store, name: &str) -> UserId {
    s.create_user(name, &format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}")).expect("create_user")
}

fn offline(id: UserId, name: &str) -> User {
    User { id, name: name.to_owned(), online: false }
}

fn member(id: UserId, name: &str, online: bool, role: Role) -> Member {
    Member { user: User { id, name: name.to_owned(), online }, role }
}

/// The `online` flag of `id` as seen through a friend list (the only reader of it).
fn online_flag(s: &dyn Store, id: UserId) -> bool {
    let watcher = user(s, &format!("watcher-of-{id}-{}", unique()));
    s.add_friend(watcher, id).unwrap();
    let friends = s.friends(watcher).unwrap();
    assert_eq!(friends.len(), 1);
    friends[0].online
}

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// Users.

fn create_user_and_credentials(s: &dyn Store) {
    let a = s.create_user("alice", "$argon2id$hash-a").unwrap();
    let b = s.create_user("bob", "$argon2id$hash-b").unwrap();
    assert_ne!(a, b);
    assert!(a > 0 && b > 0);
    assert_eq!(
        s.credentials(a).unwrap(),
        Some(Credentials { id: a, name: "alice".into(), password_hash: "$argon2id$hash-a".into() })
    );
    assert_eq!(
        s.credentials(b).unwrap(),
        Some(Credentials { id: b, name: "bob".into(), password_hash: "$argon2id$hash-b".into() })
    );
}

fn create_user_duplicate_name_conflicts(s: &dyn Store) {
    let a = user(s, "alice");
    assert_eq!(s.create_user("alice", "other"), Err(StoreError::Conflict));
    // The first user is untouched and the store is still usable.
    assert_eq!(s.credentials(a).unwrap().unwrap().name, "alice");
    let b = user(s, "bob");
    assert_ne!(a, b);
}

fn credentials_of_missing_user_is_none(s: &dyn Store) {
    assert_eq!(s.credentials(1).unwrap(), None);
    let a = user(s, "alice");
    assert_eq!(s.credentials(a + 1000).unwrap(), None);
    assert_eq!(s.credentials(-1).unwrap(), None);
}

fn user_exists(s: &dyn Store) {
    assert!(!s.user_exists(1).unwrap());
    let a = user(s, "alice");
    assert!(s.user_exists(a).unwrap());
    assert!(!s.user_exists(a + 1000).unwrap());
}

fn set_online_and_offline(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let viewer = user(s, "viewer");
    for f in [a, b, c] {
        s.add_friend(viewer, f).unwrap();
    }
    // New users are offline.
    assert!(s.friends(viewer).unwrap().iter().all(|u| !u.online));

    s.set_online(&[a, c], true).unwrap();
    let states: Vec<bool> = s.friends(viewer).unwrap().iter().map(|u| u.online).collect();
    assert_eq!(states, [true, false, true]);

    s.set_online(&[a], true).unwrap(); // idempotent
    s.set_online(&[c], false).unwrap();
    s.set_online(&[], true).unwrap(); // nothing to do
    s.set_online(&[c + 1000], true).unwrap(); // unknown ids are ignored
    let states: Vec<bool> = s.friends(viewer).unwrap().iter().map(|u| u.online).collect();
    assert_eq!(states, [true, false, false]);
    assert!(online_flag(s, a));
    assert!(!online_flag(s, b));
}

fn set_all_offline(s: &dyn Store) {
    let ids: Vec<UserId> = (0..5).map(|i| user(s, &format!("u{i}"))).collect();
    s.set_online(&ids, true).unwrap();
    assert!(online_flag(s, ids[3]));
    s.set_all_offline().unwrap();
    for &id in &ids {
        assert!(!online_flag(s, id));
    }
    s.set_all_offline().unwrap(); // idempotent
}

// ---------------------------------------------------------------------------------
// Friends.

fn add_friend_is_one_way_and_sorted(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    // Added out of order; listed by id.
    s.add_friend(a, c).unwrap();
    s.add_friend(a, b).unwrap();
    s.set_online(&[c], true).unwrap();
    assert_eq!(s.friends(a).unwrap(), [offline(b, "bob"), User { id: c, name: "carol".into(), online: true }]);
    // One-way: b and c did not get a.
    assert_eq!(s.friends(b).unwrap(), []);
    assert_eq!(s.friends(c).unwrap(), []);
    s.add_friend(b, a).unwrap();
    assert_eq!(s.friends(b).unwrap(), [offline(a, "alice")]);
}

fn add_friend_twice_conflicts(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    s.add_friend(a, b).unwrap();
    assert_eq!(s.add_friend(a, b), Err(StoreError::Conflict));
    // The reverse direction is a different row.
    s.add_friend(b, a).unwrap();
    assert_eq!(s.friends(a).unwrap(), [offline(b, "bob")]);
}

fn del_friend(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    s.add_friend(a, b).unwrap();
    s.add_friend(a, c).unwrap();
    s.add_friend(b, a).unwrap();
    s.del_friend(a, b).unwrap();
    assert_eq!(s.friends(a).unwrap(), [offline(c, "carol")]);
    // Only that direction was removed.
    assert_eq!(s.friends(b).unwrap(), [offline(a, "alice")]);
    // Can be added again.
    s.add_friend(a, b).unwrap();
    assert_eq!(s.friends(a).unwrap(), [offline(b, "bob"), offline(c, "carol")]);
}

fn del_missing_friend_is_not_found(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    assert_eq!(s.del_friend(a, b), Err(StoreError::NotFound));
    s.add_friend(b, a).unwrap();
    assert_eq!(s.del_friend(a, b), Err(StoreError::NotFound));
    s.add_friend(a, b).unwrap();
    s.del_friend(a, b).unwrap();
    assert_eq!(s.del_friend(a, b), Err(StoreError::NotFound));
}

// ---------------------------------------------------------------------------------
// Groups.

fn create_group_makes_creator_member(s: &dyn Store) {
    let a = user(s, "alice");
    let g = s.create_group(a, "rustaceans", "all about rust").unwrap();
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator)]));
    assert_eq!(
        s.user_groups(a).unwrap(),
        [Group {
            id: g,
            name: "rustaceans".into(),
            desc: "all about rust".into(),
            members: vec![member(a, "alice", false, Role::Creator)],
        }]
    );
    let h = s.create_group(a, "second", "").unwrap();
    assert_ne!(g, h);
}

fn create_group_duplicate_name_conflicts(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let g = s.create_group(a, "g", "first").unwrap();
    assert_eq!(s.create_group(b, "g", "second"), Err(StoreError::Conflict));
    // Nothing of the failed creation remains.
    assert_eq!(s.user_groups(b).unwrap(), []);
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator)]));
    assert_eq!(s.user_groups(a).unwrap()[0].desc, "first");
}

fn join_group(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let g = s.create_group(a, "g", "").unwrap();
    s.join_group(g, b).unwrap();
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator), (b, Role::Normal)]));
}

fn join_missing_group_is_not_found(s: &dyn Store) {
    let a = user(s, "alice");
    assert_eq!(s.join_group(1, a), Err(StoreError::NotFound));
    let g = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.join_group(g + 1000, a), Err(StoreError::NotFound));
    // A deleted group is missing too.
    let b = user(s, "bob");
    s.leave_group(g, a).unwrap();
    assert_eq!(s.join_group(g, b), Err(StoreError::NotFound));
    assert_eq!(s.user_groups(b).unwrap(), []);
}

fn join_group_twice_conflicts(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let g = s.create_group(a, "g", "").unwrap();
    s.join_group(g, b).unwrap();
    assert_eq!(s.join_group(g, b), Err(StoreError::Conflict));
    // The creator is already a member.
    assert_eq!(s.join_group(g, a), Err(StoreError::Conflict));
    // Roles are unchanged.
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator), (b, Role::Normal)]));
}

fn group_members_of_missing_group_is_none(s: &dyn Store) {
    assert_eq!(s.group_members(1).unwrap(), None);
    let a = user(s, "alice");
    let g = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.group_members(g + 1000).unwrap(), None);
}

fn group_members_sorted_by_user_id(s: &dyn Store) {
    let ids: Vec<UserId> = (0..6).map(|i| user(s, &format!("u{i}"))).collect();
    // The creator is neither the first nor the last id; others join in reverse.
    let g = s.create_group(ids[2], "g", "").unwrap();
    for &id in ids.iter().rev().filter(|&&id| id != ids[2]) {
        s.join_group(g, id).unwrap();
    }
    let expected: Vec<(UserId, Role)> =
        ids.iter().map(|&id| (id, if id == ids[2] { Role::Creator } else { Role::Normal })).collect();
    assert_eq!(s.group_members(g).unwrap(), Some(expected));
}

fn leave_group_normal_member(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "g", "").unwrap();
    s.join_group(g, b).unwrap();
    s.join_group(g, c).unwrap();
    assert_eq!(s.leave_group(g, b), Ok(Role::Normal));
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator), (c, Role::Normal)]));
    assert_eq!(s.user_groups(b).unwrap(), []);
    assert_eq!(s.leave_group(g, b), Err(StoreError::NotFound));
    // May join again, as a normal member.
    s.join_group(g, b).unwrap();
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator), (b, Role::Normal), (c, Role::Normal)]));
}

fn leave_group_creator_deletes_group(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "doomed", "").unwrap();
    let other = s.create_group(b, "survivor", "").unwrap();
    s.join_group(g, b).unwrap();
    s.join_group(g, c).unwrap();
    s.join_group(other, a).unwrap();

    assert_eq!(s.leave_group(g, a), Ok(Role::Creator));
    assert_eq!(s.group_members(g).unwrap(), None);
    // Gone for every former member; the other group is untouched.
    for id in [a, b, c] {
        assert!(s.user_groups(id).unwrap().iter().all(|grp| grp.id != g));
    }
    assert_eq!(s.group_members(other).unwrap(), Some(vec![(a, Role::Normal), (b, Role::Creator)]));
    assert_eq!(s.leave_group(g, b), Err(StoreError::NotFound));
    assert_eq!(s.leave_group(g, a), Err(StoreError::NotFound));
    assert_eq!(s.join_group(g, c), Err(StoreError::NotFound));
    // The name is free again.
    let again = s.create_group(c, "doomed", "reborn").unwrap();
    assert_eq!(s.group_members(again).unwrap(), Some(vec![(c, Role::Creator)]));
}

fn leave_group_not_found(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    assert_eq!(s.leave_group(1, a), Err(StoreError::NotFound));
    let g = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.leave_group(g + 1000, a), Err(StoreError::NotFound));
    assert_eq!(s.leave_group(g, b), Err(StoreError::NotFound));
    // Failed leaves changed nothing.
    assert_eq!(s.group_members(g).unwrap(), Some(vec![(a, Role::Creator)]));
}

fn group_ids_are_not_reused(s: &dyn Store) {
    let a = user(s, "alice");
    let g1 = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.leave_group(g1, a), Ok(Role::Creator));
    let g2 = s.create_group(a, "g", "").unwrap();
    assert!(g2 > g1, "group id {g1} reused as {g2}");
}

fn user_groups_sorted_with_all_members(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let d = user(s, "dave");
    let g1 = s.create_group(b, "one", "first").unwrap();
    let g2 = s.create_group(c, "two", "second").unwrap();
    let g3 = s.create_group(d, "three", "a's not in it").unwrap();
    let g4 = s.create_group(a, "four", "").unwrap();
    // Join in reverse group order.
    s.join_group(g2, a).unwrap();
    s.join_group(g2, d).unwrap();
    s.join_group(g1, a).unwrap();
    s.join_group(g3, b).unwrap();
    s.set_online(&[b, d], true).unwrap();

    assert_eq!(
        s.user_groups(a).unwrap(),
        [
            Group {
                id: g1,
                name: "one".into(),
                desc: "first".into(),
                members: vec![member(a, "alice", false, Role::Normal), member(b, "bob", true, Role::Creator),],
            },
            Group {
                id: g2,
                name: "two".into(),
                desc: "second".into(),
                members: vec![
                    member(a, "alice", false, Role::Normal),
                    member(c, "carol", false, Role::Creator),
                    member(d, "dave", true, Role::Normal),
                ],
            },
            Group {
                id: g4,
                name: "four".into(),
                desc: "".into(),
                members: vec![member(a, "alice", false, Role::Creator)],
            },
        ]
    );
    let of_b: Vec<_> = s.user_groups(b).unwrap().into_iter().map(|g| g.id).collect();
    assert_eq!(of_b, [g1, g3]);
    let of_d = s.user_groups(d).unwrap();
    assert_eq!(of_d.iter().map(|g| g.id).collect::<Vec<_>>(), [g2, g3]);
    assert_eq!(of_d[1].members, [member(b, "bob", true, Role::Normal), member(d, "dave", true, Role::Creator)]);
}

fn user_groups_empty(s: &dyn Store) {
    let a = user(s, "alice");
    assert_eq!(s.user_groups(a).unwrap(), []);
    assert_eq!(s.user_groups(a + 1000).unwrap(), []);
    let b = user(s, "bob");
    s.create_group(b, "g", "").unwrap();
    assert_eq!(s.user_groups(a).unwrap(), []);
}

// ---------------------------------------------------------------------------------
// Mailbox.

fn mailbox_order_and_exactness(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    s.push_offline(&[(a, "a1".into()), (b, "b1".into()), (a, "a2".into())]).unwrap();
    s.push_offline(&[]).unwrap();
    s.push_offline(&[(a, "a3".into())]).unwrap();
    // Same text twice is two messages.
    s.push_offline(&[(b, "b2".into()), (b, "b2".into())]).unwrap();
    assert_eq!(s.take_offline(a).unwrap(), ["a1", "a2", "a3"]);
    assert_eq!(s.take_offline(a).unwrap(), Vec::<String>::new());
    // Taking a's mail left b's alone.
    s.push_offline(&[(a, "a4".into())]).unwrap();
    assert_eq!(s.take_offline(b).unwrap(), ["b1", "b2", "b2"]);
    assert_eq!(s.take_offline(b).unwrap(), Vec::<String>::new());
    assert_eq!(s.take_offline(a).unwrap(), ["a4"]);

    // A large batch keeps its order.
    let many: Vec<(UserId, String)> = (0..500).map(|i| (a, format!("m{i}"))).collect();
    s.push_offline(&many).unwrap();
    let expected: Vec<String> = many.into_iter().map(|(_, m)| m).collect();
    assert_eq!(s.take_offline(a).unwrap(), expected);
}

fn mailbox_empty(s: &dyn Store) {
    assert_eq!(s.take_offline(1).unwrap(), Vec::<String>::new());
    let a = user(s, "alice");
    assert_eq!(s.take_offline(a).unwrap(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------
// Strings.

const NASTY: &[&str] = &[
    "'; DROP TABLE user; --",
    "\"; DROP TABLE offlinemessage; --",
    "Robert'); DELETE FROM allgroup WHERE ('1'='1",
    "' OR '1'='1",
    "back\\slash \\' \\\" \\\\ \\n",
    "quote ' double \" backtick ` percent % underscore _",
    "emoji 🦀😀👩‍👩‍👧‍👦 𝄞",
    "中文 русский العربية",
    "tab\tnewline\ncr\r",
    "?1 ?2 :name @p $x",
    "e\u{301}", // a combining accent: not normalised
];

fn strings_round_trip_byte_for_byte(s: &dyn Store) {
    let mut ids = Vec::new();
    for (i, text) in NASTY.iter().enumerate() {
        let name = format!("{i}{text}");
        let hash = format!("$argon2id${text}");
        let id = s.create_user(&name, &hash).unwrap();
        let creds = s.credentials(id).unwrap().unwrap();
        assert_eq!(creds.name.as_bytes(), name.as_bytes());
        assert_eq!(creds.password_hash.as_bytes(), hash.as_bytes());
        ids.push((id, name));
    }
    // Names come back the same through friends and groups.
    let viewer = user(s, "viewer");
    for (id, _) in &ids {
        s.add_friend(viewer, *id).unwrap();
    }
    let names: Vec<String> = s.friends(viewer).unwrap().into_iter().map(|u| u.name).collect();
    let expected: Vec<String> = ids.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(names, expected);

    for (i, text) in NASTY.iter().enumerate() {
        let gname = format!("g{i}{text}");
        let g = s.create_group(viewer, &gname, text).unwrap();
        s.join_group(g, ids[i].0).unwrap();
        let groups = s.user_groups(ids[i].0).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, gname);
        assert_eq!(groups[0].desc, *text);
        // Members are sorted by id and the viewer was created last.
        assert_eq!(groups[0].members[0].user.name, ids[i].1);
        assert_eq!(groups[0].members[1].user.name, "viewer");
    }

    let long = "🦀'\\\"".repeat(2000);
    let mut msgs: Vec<(UserId, String)> = NASTY.iter().map(|t| (viewer, (*t).to_owned())).collect();
    msgs.push((viewer, String::new()));
    msgs.push((viewer, long));
    msgs.push((viewer, r#"{"msgid":5,"from":"a'b","msg":"\"hi\" 🦀"}"#.to_owned()));
    s.push_offline(&msgs).unwrap();
    let expected: Vec<String> = msgs.into_iter().map(|(_, m)| m).collect();
    assert_eq!(s.take_offline(viewer).unwrap(), expected);

    // The tables survived the SQL fragments.
    assert!(s.user_exists(viewer).unwrap());
    assert_eq!(s.friends(viewer).unwrap().len(), NASTY.len());
}

// ---------------------------------------------------------------------------------
// Concurrency.

fn concurrent_create_user_one_wins(s: &dyn Store) {
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| s.create_user("contested", "h"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<UserId> = results.iter().filter_map(|r| r.clone().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || *r == Err(StoreError::Conflict)), "{results:?}");
    assert_eq!(s.credentials(winners[0]).unwrap().unwrap().name, "contested");
}

/// One thread pushes while two take: each message is returned exactly once and
/// every taker sees its share in push order; another user's mail, pushed in the same
/// batches, is not taken.
fn concurrent_take_offline_is_exact(s: &dyn Store) {
    const TOTAL: usize = 600;
    let a = user(s, "alice");
    let b = user(s, "bob");
    let done = AtomicBool::new(false);
    let taken: Vec<Vec<String>> = std::thread::scope(|scope| {
        let done = &done;
        let takers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        got.extend(s.take_offline(a).unwrap());
                        if finished {
                            return got;
                        }
                    }
                })
            })
            .collect();
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(3) {
            let batch: Vec<(UserId, String)> =
                chunk.iter().flat_map(|i| [(a, format!("m{i:04}")), (b, format!("other {i}"))]).collect();
            s.push_offline(&batch).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for got in &taken {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
        for m in got {
            assert!(seen.insert(m.clone()), "{m} returned twice");
        }
    }
    assert_eq!(seen.len(), TOTAL, "messages lost");
    assert_eq!(s.take_offline(a).unwrap(), Vec::<String>::new());
    assert_eq!(s.take_offline(b).unwrap().len(), TOTAL, "another user's mail was taken");
}

// ---------------------------------------------------------------------------------
// The SQLite backend.

#[test]
fn sqlite_store_suite() {
    // Removed when the suite ends, also when a check panicked.
    let dirs = RefCell::new(Vec::new());
    run_all(&|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chat.db");
        dirs.borrow_mut().push(dir);
        let store = SqliteStore::open(path.to_str().expect("utf-8 temp path")).expect("open");
        Arc::new(store) as Arc<dyn Store>
    });
}

// ---------------------------------------------------------------------------------
// The MySQL backend: each check on a fresh database of the shared private MariaDB.

#[test]
fn mysql_store_suite() {
    let mariadb = crate::support::services::MariaDb::shared();
    run_all(&|| chat::store::open(&mariadb.create_database()).expect("open a fresh MySQL store"));
}
