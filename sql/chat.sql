-- The chat database for MariaDB (10.3 or later).
--
-- ChatServer applies this file itself when it starts on a `mysql://` database (it is
-- compiled in): every statement is idempotent, so starting any number of servers on one
-- database, at once or one after the other, is safe. It can also be loaded by hand:
--   mariadb chat < sql/chat.sql
--
-- The tables and columns are the C++ seeds' (`user`, `friend`, `allgroup`, `groupuser`,
-- `offlinemessage`), with what the seeds got wrong fixed:
-- - `user.password` holds an argon2id PHC string, never the password itself.
-- - `groupuser` is keyed by (groupid, userid): one membership per user and group.
-- - `offlinemessage` has an auto-increment `id` that orders each mailbox (oldest first).
-- - `allgroup.groupname` is unique, as `user.name` is.
-- - utf8mb4 throughout, so 4-byte characters (emoji) survive. Names compare byte for
--   byte (utf8mb4_nopad_bin): 'a' and 'A' are different names, and so are 'a' and 'a '
--   (the PAD SPACE collations, utf8mb4_bin included, would call those equal).
--   On MySQL 8, which lacks utf8mb4_nopad_bin, use utf8mb4_0900_bin.
-- - The indexes the queries need (see src/store/mysql.rs).
--
-- Text columns are wider than the protocol allows (names 50 characters, descriptions 200,
-- messages 4000 plus their JSON envelope): the server enforces the protocol's limits, and
-- the store rejects (strict mode) rather than truncates anything longer than the column.
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

-- A mailbox is the rows of one `userid` in `id` order, and `message` is the JSON push.
CREATE TABLE IF NOT EXISTS offlinemessage (
    id      BIGINT     NOT NULL AUTO_INCREMENT,
    userid  BIGINT     NOT NULL,
    message MEDIUMTEXT NOT NULL,
    PRIMARY KEY (id),
    KEY offlinemessage_userid_id (userid, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
