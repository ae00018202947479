-- The chat database: the one schema definition of both stores.
--
-- MariaDB (10.3 or later): ChatServer applies this file itself when it starts on a
-- `mysql://` database (it is compiled in): every statement is idempotent, so starting
-- any number of servers on one database, at once or one after the other, is safe. It
-- can also be loaded by hand:
--   mariadb chat < sql/chat.sql
--
-- SQLite: the server derives its DDL from this file at every open (src/store/schema.rs):
-- BIGINT becomes INTEGER, the character types TEXT (SQLite's BINARY collation compares
-- bytes, as utf8mb4_nopad_bin does), ENUM a TEXT with a CHECK, an AUTO_INCREMENT primary
-- key an INTEGER PRIMARY KEY AUTOINCREMENT (the rowid; never reused after deletes),
-- a table whose primary key is not such a column a WITHOUT ROWID table (clustered by its
-- primary key, as InnoDB clusters every table), UNIQUE KEY a UNIQUE constraint and KEY a
-- CREATE INDEX; ENGINE, CHARSET and COLLATE are dropped. Only that subset of MySQL is
-- understood here: anything else fails the server's start and the unit tests.
-- Durability of SQLite (WAL): see README.md; `sqlite://PATH` survives kill -9 of the
-- server (synchronous=NORMAL), `sqlite://PATH?sync=full` also a power loss.
--
-- The tables and columns of the seeds are the C++ seeds' (`user`, `friend`, `allgroup`,
-- `groupuser`), with what the seeds got wrong fixed:
-- - `user.password` holds an argon2id PHC string, never the password itself.
-- - `groupuser` is keyed by (groupid, userid): one membership per user and group.
-- - `allgroup.groupname` is unique, as `user.name` is.
-- - utf8mb4 throughout, so 4-byte characters (emoji) survive. Names compare byte for
--   byte (utf8mb4_nopad_bin): 'a' and 'A' are different names, and so are 'a' and 'a '
--   (the PAD SPACE collations, utf8mb4_bin included, would call those equal).
--   On MySQL 8, which lacks utf8mb4_nopad_bin, use utf8mb4_0900_bin.
-- - The indexes the queries need (see src/store/mysql.rs and src/store/sqlite.rs).
-- The message log (`message`, `inbox`) is new: see below. It replaces the seeds'
-- `offlinemessage` table (a copy of each push per recipient): what a user is owed is
-- their `inbox` rows. A database that has an `offlinemessage` table keeps it; nothing
-- reads or writes it any more.
--
-- Text columns are wider than the protocol allows (names 50 characters, descriptions 200,
-- messages 4000): the server enforces the protocol's limits, and MariaDB rejects (strict
-- mode) rather than truncates anything longer than the column.
--
-- The server strips `-- ` comments and splits the rest at semicolons, so no string
-- literal here may hold either.

CREATE TABLE IF NOT EXISTS user (
    id       BIGINT       NOT NULL AUTO_INCREMENT,
    name     VARCHAR(128) NOT NULL,
    password VARCHAR(255) NOT NULL,                           -- argon2id PHC string
    state    ENUM('online', 'offline') NOT NULL DEFAULT 'offline',
    PRIMARY KEY (id),
    UNIQUE KEY user_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- One-way: `friendid` is in `userid`'s list.
CREATE TABLE IF NOT EXISTS friend (
    userid   BIGINT NOT NULL,
    friendid BIGINT NOT NULL,
    PRIMARY KEY (userid, friendid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS allgroup (
    id        BIGINT        NOT NULL AUTO_INCREMENT,
    groupname VARCHAR(128)  NOT NULL,
    groupdesc VARCHAR(1024) NOT NULL DEFAULT '',
    PRIMARY KEY (id),
    UNIQUE KEY allgroup_groupname (groupname)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- The primary key serves "members of a group", the second index "groups of a user".
CREATE TABLE IF NOT EXISTS groupuser (
    groupid   BIGINT NOT NULL,
    userid    BIGINT NOT NULL,
    grouprole ENUM('creator', 'normal') NOT NULL,
    PRIMARY KEY (groupid, userid),
    KEY groupuser_userid (userid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- The message log: one row per accepted ONE_CHAT or GROUP_CHAT, however many recipients
-- it has. `mid` is the message's id (protocol section 7): the auto-increment is the
-- cluster's allocator, so a mid is unique across servers and never reused.
-- A conversation is the pair (convlo, convhi): one-to-one, the two user ids, smaller
-- first (a user's notes to self: (id, id)); a group, (0, groupid). So one index serves
-- "the messages between a and b, both directions", and a page of history is a short
-- range of `message_conv` read backwards: the same cost at the millionth message as at
-- the first. `cmid` is the sender's own id for the message (section 8): (sender, cmid)
-- is unique, and rows without one (NULL) never collide. `time` is the stamp pushes carry,
-- `unixtime` (seconds) what --history-days compares.
CREATE TABLE IF NOT EXISTS message (
    mid        BIGINT       NOT NULL AUTO_INCREMENT,
    sender     BIGINT       NOT NULL,
    sendername VARCHAR(128) NOT NULL,
    convlo     BIGINT       NOT NULL,
    convhi     BIGINT       NOT NULL,
    msg        TEXT         NOT NULL,
    time       VARCHAR(32)  NOT NULL,
    unixtime   BIGINT       NOT NULL,
    cmid       VARCHAR(64),
    PRIMARY KEY (mid),
    UNIQUE KEY message_sender_cmid (sender, cmid),
    KEY message_conv (convlo, convhi, mid),
    KEY message_unixtime (unixtime)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- What each user is owed: one row per message and recipient, written in the message's
-- transaction, deleted when the message was handed over (v1) or confirmed (v2), or
-- when the message goes. A user's inbox is their rows in mid order.
CREATE TABLE IF NOT EXISTS inbox (
    userid BIGINT NOT NULL,
    mid    BIGINT NOT NULL,
    PRIMARY KEY (userid, mid),
    KEY inbox_mid (mid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
