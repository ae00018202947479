//! A backend-independent test suite for [`Store`].
//!
//! [`run_all`] takes a function that makes a fresh, empty database and returns its
//! `--db` URL, and runs every check on a store of its own database (the checks of
//! concurrency across servers get two stores on one database). Each backend calls it
//! once (`sqlite_store_suite` and `mysql_store_suite` at the bottom).
//!
//! The checks only rely on what the trait documents: no case sensitivity of names,
//! no trailing spaces (MySQL collations compare those differently), no NUL bytes.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use chat::store::{
    Accepted, Conversation, Credentials, Group, Member, Message, Mid, NewMessage, Role, Store, StoreError, User, UserId,
};

/// One check: gets a fresh, empty store.
type Check = fn(&dyn Store);
/// One check of two servers: gets two stores on one fresh, empty database.
type TwinCheck = fn(&dyn Store, &dyn Store);

/// Runs every check, each on a store of a database whose URL `fresh_db` returns.
pub fn run_all(fresh_db: &dyn Fn() -> String) {
    let open = |url: &str| chat::store::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"));
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
        ("strings_round_trip_byte_for_byte", strings_round_trip_byte_for_byte),
        ("concurrent_create_user_one_wins", concurrent_create_user_one_wins),
        ("append_gives_increasing_mids_in_slice_order", append_gives_increasing_mids_in_slice_order),
        ("cmid_repeats_return_the_first_and_write_nothing", cmid_repeats_return_the_first_and_write_nothing),
        ("inbox_by_user_after_and_limit", inbox_by_user_after_and_limit),
        ("settle_removes_exactly_those", settle_removes_exactly_those),
        ("history_pages_a_pair_in_both_directions", history_pages_a_pair_in_both_directions),
        ("history_of_self_and_of_groups", history_of_self_and_of_groups),
        ("history_of_no_conversation_is_empty", history_of_no_conversation_is_empty),
        ("expire_deletes_old_messages_with_their_inbox_rows", expire_deletes_old_messages_with_their_inbox_rows),
        ("deleting_a_group_deletes_its_log", deleting_a_group_deletes_its_log),
        ("messages_round_trip_byte_for_byte", messages_round_trip_byte_for_byte),
        (
            "concurrent_appends_on_one_store_keep_every_mid_unique",
            concurrent_appends_on_one_store_keep_every_mid_unique,
        ),
    ];
    for (name, check) in checks {
        eprintln!("store suite: {name}");
        let store = open(&fresh_db());
        check(&*store);
    }
    let twin_checks: &[(&str, TwinCheck)] =
        &[("concurrent_cmid_repeats_on_two_servers_make_one_row", concurrent_cmid_repeats_on_two_servers_make_one_row)];
    for (name, check) in twin_checks {
        eprintln!("store suite: {name}");
        let url = fresh_db();
        let (one, two) = (open(&url), open(&url));
        check(&*one, &*two);
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
// Strings.

const NASTY: &[&str] = &[
    "'; DROP TABLE user; --",
    "\"; DROP TABLE message; --",
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

// ---------------------------------------------------------------------------------
// The message log.

/// A message from `sender` (named after its id) to `to`, owed to `recipients`.
fn msg(sender: UserId, to: Conversation, text: &str, recipients: &[UserId]) -> NewMessage {
    NewMessage {
        sender,
        sender_name: format!("name-{sender}"),
        to,
        text: text.into(),
        time: "2026-05-01 12:00:00".to_owned(),
        unix_time: 1_780_000_000,
        cmid: None,
        recipients: recipients.to_vec(),
    }
}

fn with_cmid(mut m: NewMessage, cmid: &str) -> NewMessage {
    m.cmid = Some(cmid.to_owned());
    m
}

fn append_one(s: &dyn Store, m: NewMessage) -> Accepted {
    let mut accepted = s.append(&[m]).unwrap();
    assert_eq!(accepted.len(), 1);
    accepted.remove(0)
}

fn texts(msgs: &[Message]) -> Vec<&str> {
    msgs.iter().map(|m| m.text.as_str()).collect()
}

fn mids(msgs: &[Message]) -> Vec<Mid> {
    msgs.iter().map(|m| m.mid).collect()
}

/// The whole history of a conversation, read in pages of `limit`, oldest first.
fn all_history(s: &dyn Store, me: UserId, conv: Conversation, limit: usize) -> Vec<Message> {
    let mut all: Vec<Message> = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = s.history(me, conv, before, limit).unwrap();
        assert!(page.len() <= limit);
        assert!(page.windows(2).all(|w| w[0].mid < w[1].mid), "page not oldest first");
        if more {
            assert_eq!(page.len(), limit, "`more` on a short page");
        }
        before = page.first().map(|m| m.mid);
        all.splice(0..0, page);
        if !more {
            return all;
        }
    }
}

fn append_gives_increasing_mids_in_slice_order(s: &dyn Store) {
    assert_eq!(s.append(&[]).unwrap(), []);
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "g", "").unwrap();
    s.join_group(g, b).unwrap();
    let mut batch = vec![
        msg(a, Conversation::Peer(b), "1", &[b]),
        msg(b, Conversation::Peer(a), "2", &[a]),
        msg(a, Conversation::Group(g), "3", &[b]),
        msg(c, Conversation::Peer(c), "4", &[]),
        msg(a, Conversation::Peer(b), "5", &[b]),
    ];
    batch[1].time = "2026-05-01 12:00:01".into();
    let accepted = s.append(&batch).unwrap();
    assert_eq!(accepted.len(), batch.len());
    assert!(accepted.windows(2).all(|w| w[0].mid < w[1].mid), "{accepted:?}");
    assert!(accepted.iter().all(|x| x.first && x.mid > 0 && x.mid < 1 << 53));
    assert_eq!(accepted[1].time, "2026-05-01 12:00:01");
    assert_eq!(accepted[0].time, "2026-05-01 12:00:00");
    // A later call gives larger mids; one message at a time too.
    let last = accepted[4].mid;
    let next: Vec<Mid> =
        (0..5).map(|i| append_one(s, msg(a, Conversation::Peer(b), &format!("n{i}"), &[b])).mid).collect();
    assert!(next[0] > last && next.windows(2).all(|w| w[0] < w[1]), "{next:?}");
    // A batch larger than any one statement keeps its order too.
    let many: Vec<NewMessage> = (0..700).map(|i| msg(b, Conversation::Peer(a), &format!("m{i}"), &[a])).collect();
    let accepted = s.append(&many).unwrap();
    assert!(accepted[0].mid > next[4] && accepted.windows(2).all(|w| w[0].mid < w[1].mid));
    let (page, _) = s.history(a, Conversation::Peer(b), None, 100).unwrap();
    assert_eq!(mids(&page), accepted[600..].iter().map(|x| x.mid).collect::<Vec<_>>());
    assert_eq!(page[99].text, "m699");
}

fn cmid_repeats_return_the_first_and_write_nothing(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "g", "").unwrap();
    // Within one batch: the second is the first's echo, with the first's mid and time.
    let mut again = with_cmid(msg(a, Conversation::Peer(b), "resent", &[b]), "x");
    again.time = "2026-05-01 12:00:09".into();
    let batch = [
        with_cmid(msg(a, Conversation::Peer(b), "first", &[b]), "x"),
        msg(a, Conversation::Peer(b), "plain", &[b]),
        again.clone(),
        // Another sender's "x" is another message.
        with_cmid(msg(c, Conversation::Peer(b), "c's x", &[b]), "x"),
    ];
    let accepted = s.append(&batch).unwrap();
    assert!(accepted[0].first && accepted[1].first && accepted[3].first);
    assert_eq!(accepted[2], Accepted { mid: accepted[0].mid, time: accepted[0].time.clone(), first: false });
    assert_ne!(accepted[3].mid, accepted[0].mid);
    // Across batches, also in another conversation of the same sender.
    assert_eq!(append_one(s, again), accepted[2]);
    assert_eq!(append_one(s, with_cmid(msg(a, Conversation::Group(g), "elsewhere", &[]), "x")), accepted[2]);
    let twice = [
        with_cmid(msg(a, Conversation::Peer(b), "y1", &[b]), "y"),
        with_cmid(msg(a, Conversation::Peer(b), "y2", &[b]), "y"),
    ];
    let first = s.append(&twice).unwrap();
    assert_eq!(s.append(&twice).unwrap(), [first[0].clone(), first[0].clone()].map(|x| Accepted { first: false, ..x }));
    // Nothing of the repeats was written: one row each, one inbox row each.
    let history = all_history(s, a, Conversation::Peer(b), 100);
    assert_eq!(texts(&history), ["first", "plain", "y1"]);
    assert_eq!(all_history(s, a, Conversation::Group(g), 100), []);
    assert_eq!(texts(&s.inbox(b, 0, 100).unwrap()), ["first", "plain", "c's x", "y1"]);
    // Messages without a cmid never collide.
    let plain =
        s.append(&[msg(a, Conversation::Peer(b), "p", &[b]), msg(a, Conversation::Peer(b), "p", &[b])]).unwrap();
    assert!(plain[0].first && plain[1].first && plain[0].mid < plain[1].mid);
}

fn inbox_by_user_after_and_limit(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.inbox(b, 0, 10).unwrap(), []);
    let accepted = s
        .append(&[
            msg(a, Conversation::Peer(b), "a>b", &[b]),
            msg(a, Conversation::Group(g), "a>g", &[b, c, b]),
            msg(c, Conversation::Peer(b), "c>b", &[b]),
            msg(b, Conversation::Peer(a), "b>a", &[a]),
            msg(a, Conversation::Peer(c), "a>c", &[c]),
        ])
        .unwrap();
    let mid = |i: usize| accepted[i].mid;
    let of_b = s.inbox(b, 0, 10).unwrap();
    assert_eq!(
        of_b,
        [
            Message {
                mid: mid(0),
                sender: a,
                sender_name: format!("name-{a}"),
                to: Conversation::Peer(b),
                text: "a>b".into(),
                time: "2026-05-01 12:00:00".into(),
            },
            Message {
                mid: mid(1),
                sender: a,
                sender_name: format!("name-{a}"),
                to: Conversation::Group(g),
                text: "a>g".into(),
                time: "2026-05-01 12:00:00".into(),
            },
            Message {
                mid: mid(2),
                sender: c,
                sender_name: format!("name-{c}"),
                to: Conversation::Peer(b),
                text: "c>b".into(),
                time: "2026-05-01 12:00:00".into(),
            },
        ]
    );
    assert_eq!(texts(&s.inbox(c, 0, 10).unwrap()), ["a>g", "a>c"]);
    assert_eq!(texts(&s.inbox(a, 0, 10).unwrap()), ["b>a"]);
    assert_eq!(s.inbox(a, 0, 10).unwrap()[0].to, Conversation::Peer(a));
    // after and limit.
    assert_eq!(texts(&s.inbox(b, mid(0), 10).unwrap()), ["a>g", "c>b"]);
    assert_eq!(texts(&s.inbox(b, mid(1), 10).unwrap()), ["c>b"]);
    assert_eq!(texts(&s.inbox(b, mid(2), 10).unwrap()), Vec::<&str>::new());
    assert_eq!(texts(&s.inbox(b, 0, 2).unwrap()), ["a>b", "a>g"]);
    assert_eq!(texts(&s.inbox(b, 0, 0).unwrap()), Vec::<&str>::new());
    // Reading does not take: the inbox is the same until settled.
    assert_eq!(s.inbox(b, 0, 10).unwrap(), of_b);
    let g_msgs = all_history(s, a, Conversation::Group(g), 10);
    assert_eq!(g_msgs.len(), 1, "a group message is one row");
}

fn settle_removes_exactly_those(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let batch: Vec<NewMessage> = (0..6).map(|i| msg(a, Conversation::Peer(b), &format!("{i}"), &[b, c])).collect();
    let m: Vec<Mid> = s.append(&batch).unwrap().into_iter().map(|x| x.mid).collect();
    s.settle(&[(b, vec![])]).unwrap();
    // Unknown mids, mids owed to someone else, and repeats are ignored.
    s.settle(&[(b, vec![m[1], m[3], m[3], m[5] + 1000, -1])]).unwrap();
    assert_eq!(texts(&s.inbox(b, 0, 10).unwrap()), ["0", "2", "4", "5"]);
    assert_eq!(texts(&s.inbox(c, 0, 10).unwrap()), ["0", "1", "2", "3", "4", "5"]);
    s.settle(&[(a, m.clone())]).unwrap();
    assert_eq!(s.inbox(c, 0, 10).unwrap().len(), 6);
    s.settle(&[(b, vec![m[1]])]).unwrap(); // already settled
    s.settle(&[(c, vec![m[0], m[5]]), (b, vec![m[0], m[2]]), (c, vec![m[2]])]).unwrap();
    assert_eq!(texts(&s.inbox(b, 0, 10).unwrap()), ["4", "5"]);
    assert_eq!(texts(&s.inbox(c, 0, 10).unwrap()), ["1", "3", "4"]);
    s.settle(&[]).unwrap();
    // Settling is not deleting: the messages stay in history.
    assert_eq!(all_history(s, b, Conversation::Peer(a), 100).len(), 6);
}

fn history_pages_a_pair_in_both_directions(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let mut expected = Vec::new();
    for i in 0..23 {
        let (from, to) = if i % 3 == 0 { (b, a) } else { (a, b) };
        let noise = [
            msg(a, Conversation::Peer(c), "a-c", &[c]),
            msg(c, Conversation::Peer(b), "c-b", &[b]),
            msg(a, Conversation::Peer(a), "a-a", &[]),
        ];
        s.append(&noise[i % 3..i % 3 + 1]).unwrap();
        let text = format!("{i}");
        append_one(s, msg(from, Conversation::Peer(to), &text, &[to]));
        expected.push((from, to, text));
    }
    for limit in [1, 5, 10, 23, 100] {
        for (me, peer) in [(a, b), (b, a)] {
            let all = all_history(s, me, Conversation::Peer(peer), limit);
            let got: Vec<(UserId, Conversation, String)> =
                all.iter().map(|m| (m.sender, m.to, m.text.clone())).collect();
            let want: Vec<(UserId, Conversation, String)> =
                expected.iter().map(|(f, t, x)| (*f, Conversation::Peer(*t), x.clone())).collect();
            assert_eq!(got, want, "limit {limit}");
        }
    }
    // The newest page, then before/limit/more by hand.
    let (page, more) = s.history(a, Conversation::Peer(b), None, 5).unwrap();
    assert_eq!(texts(&page), ["18", "19", "20", "21", "22"]);
    assert!(more);
    let (older, more) = s.history(a, Conversation::Peer(b), Some(page[0].mid), 5).unwrap();
    assert_eq!(texts(&older), ["13", "14", "15", "16", "17"]);
    assert!(more);
    let (exclusive, _) = s.history(b, Conversation::Peer(a), Some(page[1].mid), 1).unwrap();
    assert_eq!(texts(&exclusive), ["18"]);
    let all = all_history(s, a, Conversation::Peer(b), 100);
    let (oldest, more) = s.history(a, Conversation::Peer(b), Some(all[1].mid), 5).unwrap();
    assert_eq!((texts(&oldest), more), (vec!["0"], false));
    assert_eq!(s.history(a, Conversation::Peer(b), Some(all[0].mid), 5).unwrap(), (vec![], false));
    // Exactly `limit` left: no more.
    let (last, more) = s.history(a, Conversation::Peer(b), Some(all[5].mid), 5).unwrap();
    assert_eq!((last.len(), more), (5, false));
    // A limit of 0 returns nothing, but says whether there is anything.
    assert_eq!(s.history(a, Conversation::Peer(b), None, 0).unwrap(), (vec![], true));
    assert_eq!(s.history(a, Conversation::Peer(b), Some(all[0].mid), 0).unwrap(), (vec![], false));
}

fn history_of_self_and_of_groups(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "g", "").unwrap();
    let h = s.create_group(b, "h", "").unwrap();
    append_one(s, msg(a, Conversation::Peer(a), "note 1", &[]));
    append_one(s, msg(a, Conversation::Group(g), "g1", &[b]));
    append_one(s, msg(b, Conversation::Group(g), "g2", &[a]));
    append_one(s, msg(b, Conversation::Group(h), "h1", &[c]));
    append_one(s, msg(a, Conversation::Peer(b), "a-b", &[b]));
    append_one(s, msg(c, Conversation::Group(g), "g3", &[a, b]));
    append_one(s, msg(a, Conversation::Peer(a), "note 2", &[]));
    append_one(s, msg(b, Conversation::Peer(b), "b's note", &[]));

    let notes = all_history(s, a, Conversation::Peer(a), 1);
    assert_eq!(texts(&notes), ["note 1", "note 2"]);
    assert!(notes.iter().all(|m| m.sender == a && m.to == Conversation::Peer(a)));
    assert_eq!(texts(&all_history(s, b, Conversation::Peer(b), 10)), ["b's note"]);
    assert_eq!(texts(&all_history(s, a, Conversation::Peer(b), 10)), ["a-b"]);
    // A group's history is the same for everyone (who may read it is the caller's rule).
    for me in [a, b, c] {
        let group = all_history(s, me, Conversation::Group(g), 2);
        assert_eq!(texts(&group), ["g1", "g2", "g3"]);
        assert!(group.iter().all(|m| m.to == Conversation::Group(g)));
        assert_eq!(group.iter().map(|m| m.sender).collect::<Vec<_>>(), [a, b, c]);
    }
    assert_eq!(texts(&all_history(s, a, Conversation::Group(h), 10)), ["h1"]);
}

fn history_of_no_conversation_is_empty(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    assert_eq!(s.history(a, Conversation::Peer(b), None, 50).unwrap(), (vec![], false));
    assert_eq!(s.history(a, Conversation::Group(1), None, 50).unwrap(), (vec![], false));
    append_one(s, msg(a, Conversation::Peer(b), "x", &[b]));
    // Ids no user or group can have name no conversation.
    for conv in [Conversation::Peer(0), Conversation::Peer(-b), Conversation::Group(0), Conversation::Group(-1)] {
        assert_eq!(s.history(a, conv, None, 50).unwrap(), (vec![], false), "{conv:?}");
    }
    assert_eq!(s.history(0, Conversation::Peer(a), None, 50).unwrap(), (vec![], false));
}

fn expire_deletes_old_messages_with_their_inbox_rows(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let g = s.create_group(a, "g", "").unwrap();
    assert_eq!(s.expire(i64::MAX).unwrap(), 0);
    // 2,500 old messages (more than one expiry batch), some owed, then 3 new ones.
    let old: Vec<NewMessage> = (0..2500)
        .map(|i| {
            let mut m = if i % 2 == 0 {
                msg(a, Conversation::Peer(b), &format!("old{i}"), &[b])
            } else {
                msg(b, Conversation::Group(g), &format!("old{i}"), &[a])
            };
            m.unix_time = 1_000 + i64::from(i) % 7;
            m
        })
        .collect();
    let old_mids: Vec<Mid> = s.append(&old).unwrap().into_iter().map(|x| x.mid).collect();
    let mut new = vec![
        msg(a, Conversation::Peer(b), "new1", &[b]),
        msg(b, Conversation::Group(g), "new2", &[a]),
        msg(a, Conversation::Peer(b), "new3", &[b]),
    ];
    for (i, m) in new.iter_mut().enumerate() {
        m.unix_time = 2_000 + i64::try_from(i).unwrap();
    }
    s.append(&new).unwrap();
    // Settled ones go as well as owed ones.
    s.settle(&[(b, old_mids[..10].to_vec())]).unwrap();

    assert_eq!(s.expire(1_000).unwrap(), 0, "strictly before");
    assert_eq!(s.expire(2_000).unwrap(), 2500);
    assert_eq!(s.expire(2_000).unwrap(), 0);
    assert_eq!(texts(&all_history(s, a, Conversation::Peer(b), 100)), ["new1", "new3"]);
    assert_eq!(texts(&all_history(s, b, Conversation::Group(g), 100)), ["new2"]);
    assert_eq!(texts(&s.inbox(b, 0, 10_000).unwrap()), ["new1", "new3"]);
    assert_eq!(texts(&s.inbox(a, 0, 10_000).unwrap()), ["new2"]);
    // Deleted mids are not handed out again.
    assert_eq!(s.expire(i64::MAX).unwrap(), 3);
    let next = append_one(s, msg(a, Conversation::Peer(b), "after", &[b]));
    assert!(next.mid > *old_mids.last().unwrap() + 3, "{next:?}");
}

fn deleting_a_group_deletes_its_log(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let c = user(s, "carol");
    let g = s.create_group(a, "doomed", "").unwrap();
    let h = s.create_group(b, "kept", "").unwrap();
    for x in [g, h] {
        s.join_group(x, c).unwrap();
    }
    s.join_group(g, b).unwrap();
    for i in 0..30 {
        append_one(s, msg(c, Conversation::Group(g), &format!("g{i}"), &[a, b]));
        append_one(s, msg(c, Conversation::Group(h), &format!("h{i}"), &[b]));
    }
    append_one(s, msg(a, Conversation::Peer(b), "a-b", &[b]));
    // A normal member leaving deletes nothing.
    assert_eq!(s.leave_group(g, c), Ok(Role::Normal));
    assert_eq!(all_history(s, a, Conversation::Group(g), 100).len(), 30);
    assert_eq!(s.leave_group(g, a), Ok(Role::Creator));
    assert_eq!(all_history(s, a, Conversation::Group(g), 100), []);
    assert_eq!(all_history(s, b, Conversation::Group(h), 100).len(), 30);
    assert_eq!(s.inbox(a, 0, 1000).unwrap(), []);
    let of_b = s.inbox(b, 0, 1000).unwrap();
    assert_eq!(of_b.len(), 31);
    assert!(of_b.iter().all(|m| m.to != Conversation::Group(g)));
    assert_eq!(texts(&all_history(s, b, Conversation::Peer(a), 100)), ["a-b"]);
}

fn messages_round_trip_byte_for_byte(s: &dyn Store) {
    let a = s.create_user("名前 🦀 ' \"", "h").unwrap();
    let b = user(s, "bob");
    let long = "🦀'\\\"".repeat(1000);
    let mut batch: Vec<NewMessage> = NASTY
        .iter()
        .chain([&"", &long.as_str()])
        .enumerate()
        .map(|(i, text)| {
            let mut m = with_cmid(
                msg(a, Conversation::Peer(b), text, &[b]),
                &format!("{i}{}", text.chars().take(20).collect::<String>()),
            );
            m.sender_name = format!("名前 🦀 ' \"{}", text.chars().take(40).collect::<String>());
            m
        })
        .collect();
    batch[0].cmid = Some("🦀".repeat(64));
    let accepted = s.append(&batch).unwrap();
    assert!(accepted.iter().all(|x| x.first));
    let got = all_history(s, b, Conversation::Peer(a), 100);
    assert_eq!(got.len(), batch.len());
    for (m, want) in got.iter().zip(&batch) {
        assert_eq!(m.text.as_bytes(), want.text.as_bytes());
        assert_eq!(m.sender_name.as_bytes(), want.sender_name.as_bytes());
    }
    assert_eq!(s.inbox(b, 0, 100).unwrap(), got);
    // The cmids are matched byte for byte too.
    assert_eq!(
        s.append(&batch).unwrap(),
        accepted.iter().map(|x| Accepted { first: false, ..x.clone() }).collect::<Vec<_>>()
    );
    let mut case = batch[0].clone();
    case.cmid = Some("🦀".repeat(63) + " ");
    assert!(append_one(s, case).first);
}

/// Threads appending at once on one store: every mid unique, each call's in order.
fn concurrent_appends_on_one_store_keep_every_mid_unique(s: &dyn Store) {
    let a = user(s, "alice");
    let b = user(s, "bob");
    let per_thread: Vec<Vec<Mid>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                scope.spawn(move || {
                    let mut got = Vec::new();
                    for round in 0..25 {
                        let batch: Vec<NewMessage> = (0..8)
                            .map(|i| msg(a, Conversation::Peer(b), &format!("t{t} r{round} i{i}"), &[b]))
                            .collect();
                        got.extend(s.append(&batch).unwrap().into_iter().map(|x| x.mid));
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for mids in &per_thread {
        assert!(mids.windows(2).all(|w| w[0] < w[1]), "one thread's mids not increasing");
        all.extend(mids.iter().copied());
    }
    assert_eq!(all.len(), 4 * 25 * 8);
    assert_eq!(all_history(s, a, Conversation::Peer(b), 100).len(), all.len());
    assert_eq!(s.inbox(b, 0, 10_000).unwrap().len(), all.len());
}

/// Two servers (two stores on one database) append the same cmids at once, in
/// opposite orders and in batches: each cmid ends as one row, and both got its mid.
fn concurrent_cmid_repeats_on_two_servers_make_one_row(one: &dyn Store, two: &dyn Store) {
    const CMIDS: usize = 300;
    let a = user(one, "alice");
    let b = user(one, "bob");
    assert!(two.user_exists(a).unwrap());
    let send = |s: &dyn Store, reverse: bool| -> Vec<(usize, Accepted)> {
        let mut order: Vec<usize> = (0..CMIDS).collect();
        if reverse {
            order.reverse();
        }
        let mut got = Vec::new();
        for chunk in order.chunks(7) {
            let batch: Vec<NewMessage> = chunk
                .iter()
                .map(|&i| with_cmid(msg(a, Conversation::Peer(b), &format!("{i}"), &[b]), &format!("c{i}")))
                .collect();
            got.extend(chunk.iter().copied().zip(s.append(&batch).unwrap()));
        }
        got
    };
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| send(one, false));
        let y = scope.spawn(|| send(two, true));
        (x.join().unwrap(), y.join().unwrap())
    });
    let mut by_cmid: Vec<Vec<Accepted>> = vec![Vec::new(); CMIDS];
    for (i, accepted) in x.into_iter().chain(y) {
        by_cmid[i].push(accepted);
    }
    for (i, pair) in by_cmid.iter().enumerate() {
        assert_eq!(pair.len(), 2);
        assert_eq!((pair[0].mid, &pair[0].time), (pair[1].mid, &pair[1].time), "cmid c{i}: {pair:?}");
        assert_eq!(pair.iter().filter(|x| x.first).count(), 1, "cmid c{i}: {pair:?}");
    }
    for s in [one, two] {
        let history = all_history(s, b, Conversation::Peer(a), 100);
        assert_eq!(history.len(), CMIDS);
        let mut seen: Vec<&str> = texts(&history);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), CMIDS);
        assert_eq!(s.inbox(b, 0, 10_000).unwrap(), history);
    }
}

// ---------------------------------------------------------------------------------
// The SQLite backend.

#[test]
fn sqlite_store_suite() {
    // Removed when the suite ends, also when a check panicked.
    let dirs = RefCell::new(Vec::new());
    run_all(&|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").to_str().expect("utf-8 temp path"));
        dirs.borrow_mut().push(dir);
        url
    });
}

// ---------------------------------------------------------------------------------
// The MySQL backend: each check on a fresh database of the shared private MariaDB.

#[test]
fn mysql_store_suite() {
    let mariadb = crate::support::services::MariaDb::shared();
    run_all(&|| mariadb.create_database());
}
