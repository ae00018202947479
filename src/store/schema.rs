//! The one schema of both stores: `sql/chat.sql` (MariaDB's dialect), compiled in, and
//! SQLite's DDL derived from it mechanically.
//!
//! Runs once per store open, on the thread that opens it. The derivation understands the
//! small subset of MySQL that `sql/chat.sql` is written in and refuses anything else, so
//! a table added there either comes out the same in SQLite or stops the server (and the
//! unit tests below) with the line it did not understand. The mapping:
//!
//! | MySQL | SQLite |
//! |---|---|
//! | `BIGINT` | `INTEGER` |
//! | `VARCHAR(n)`, `TEXT`, `MEDIUMTEXT` | `TEXT` (BINARY collation: bytes, like `utf8mb4_nopad_bin`) |
//! | `ENUM('a', 'b')` | `TEXT CHECK (col IN ('a', 'b'))` |
//! | `col BIGINT NOT NULL AUTO_INCREMENT` + `PRIMARY KEY (col)` | `col INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT` (the rowid; never reused) |
//! | any other `PRIMARY KEY (...)` | the same, and the table is `WITHOUT ROWID` (clustered by it, as in InnoDB) |
//! | `UNIQUE KEY name (...)` | `UNIQUE (...)` |
//! | `KEY name (...)` | `CREATE INDEX IF NOT EXISTS name ON table (...)` |
//! | `ENGINE = ...`, `CHARSET`, `COLLATE` | dropped |

/// The schema in MySQL's dialect; the same file operators load by hand.
pub(super) const MYSQL: &str = include_str!("../../sql/chat.sql");

/// The statements of [`MYSQL`]: `-- ` comments stripped, split at semicolons.
pub(super) fn mysql_statements() -> Vec<String> {
    let text: String = MYSQL
        .lines()
        .map(|line| match line.find("--") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';').map(|s| normalize(s)).filter(|s| !s.is_empty()).collect()
}

/// SQLite's statements for the same schema, in order: each table, then its indexes.
pub(super) fn sqlite_statements() -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for statement in mysql_statements() {
        out.extend(sqlite_table(&statement).map_err(|why| format!("sql/chat.sql: {why} in: {statement}"))?);
    }
    Ok(out)
}

/// Whitespace runs (newlines included) become one space, outside string literals too:
/// the schema has no literal with two spaces in a row.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One `CREATE TABLE IF NOT EXISTS name (...) options` as SQLite statements.
fn sqlite_table(statement: &str) -> Result<Vec<String>, String> {
    let rest = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ").ok_or("not a CREATE TABLE IF NOT EXISTS")?;
    let open = rest.find('(').ok_or("no column list")?;
    let close = rest.rfind(')').ok_or("no column list")?;
    let table = rest[..open].trim();
    if !is_identifier(table) || !rest[close + 1..].trim_start().starts_with("ENGINE") {
        return Err("expected `name (...) ENGINE = ...`".into());
    }
    let items = split_top_level(&rest[open + 1..close], ',');

    let mut columns = Vec::new();
    let mut primary_key: Option<String> = None;
    let mut auto_increment: Option<String> = None;
    let mut constraints = Vec::new();
    let mut indexes = Vec::new();
    for item in items.iter().map(|i| i.trim()) {
        if let Some(cols) = item.strip_prefix("PRIMARY KEY ") {
            primary_key = Some(column_list(cols)?);
        } else if let Some(key) = item.strip_prefix("UNIQUE KEY ") {
            let (_, cols) = named_key(key)?;
            constraints.push(format!("UNIQUE {cols}"));
        } else if let Some(key) = item.strip_prefix("KEY ") {
            let (name, cols) = named_key(key)?;
            indexes.push(format!("CREATE INDEX IF NOT EXISTS {name} ON {table} {cols}"));
        } else {
            let (column, auto) = sqlite_column(item)?;
            if auto {
                let name = column.split(' ').next().unwrap_or_default().to_owned();
                if auto_increment.replace(name).is_some() {
                    return Err("two AUTO_INCREMENT columns".into());
                }
            }
            columns.push(column);
        }
    }

    let mut without_rowid = false;
    match (&primary_key, &auto_increment) {
        (Some(pk), Some(auto)) if *pk == format!("({auto})") => {
            let column = columns.iter_mut().find(|c| c.split(' ').next() == Some(auto.as_str()));
            let column = column.ok_or("AUTO_INCREMENT column missing")?;
            column.push_str(" PRIMARY KEY AUTOINCREMENT");
        }
        (_, Some(_)) => return Err("AUTO_INCREMENT on a column that is not the whole primary key".into()),
        (Some(pk), None) => {
            constraints.insert(0, format!("PRIMARY KEY {pk}"));
            without_rowid = true;
        }
        (None, None) => {}
    }

    let body: Vec<String> = columns.into_iter().chain(constraints).collect();
    let mut create = format!("CREATE TABLE IF NOT EXISTS {table} (\n    {}\n)", body.join(",\n    "));
    if without_rowid {
        create.push_str(" WITHOUT ROWID");
    }
    Ok(std::iter::once(create).chain(indexes).collect())
}

/// `name TYPE attributes` as SQLite's column definition, and whether it is
/// AUTO_INCREMENT.
fn sqlite_column(item: &str) -> Result<(String, bool), String> {
    let words = split_top_level(item, ' ');
    let (name, ty) = match words.as_slice() {
        [name, ty, ..] if is_identifier(name) => (name.as_str(), ty.as_str()),
        _ => return Err(format!("not a column: {item}")),
    };
    let mut out = vec![name.to_owned()];
    let mut check = None;
    if ty == "BIGINT" {
        out.push("INTEGER".into());
    } else if ty == "TEXT" || ty == "MEDIUMTEXT" || (ty.starts_with("VARCHAR(") && ty.ends_with(')')) {
        out.push("TEXT".into());
    } else if let Some(values) = ty.strip_prefix("ENUM") {
        column_values(values)?;
        out.push("TEXT".into());
        check = Some(format!("CHECK ({name} IN {values})"));
    } else {
        return Err(format!("unknown type {ty}"));
    }
    let mut auto = false;
    let mut rest = words[2..].iter();
    while let Some(word) = rest.next() {
        match word.as_str() {
            "NOT" | "NULL" => out.push(word.clone()),
            "DEFAULT" => {
                let value = rest.next().ok_or("DEFAULT without a value")?;
                if !is_literal(value) {
                    return Err(format!("DEFAULT {value} is not a plain literal"));
                }
                out.push(format!("DEFAULT {value}"));
            }
            "AUTO_INCREMENT" => auto = true,
            other => return Err(format!("unknown column attribute {other}")),
        }
    }
    out.extend(check);
    Ok((out.join(" "), auto))
}

/// `name (a, b)` → (`name`, `(a, b)`).
fn named_key(key: &str) -> Result<(&str, String), String> {
    let (name, cols) = key.split_once(' ').ok_or_else(|| format!("not `name (columns)`: {key}"))?;
    if !is_identifier(name) {
        return Err(format!("bad index name {name}"));
    }
    Ok((name, column_list(cols)?))
}

/// `(a, b)` with identifiers only, normalised to `(a, b)`.
fn column_list(cols: &str) -> Result<String, String> {
    let inner = cols.trim().strip_prefix('(').and_then(|c| c.strip_suffix(')')).ok_or("not `(columns)`")?;
    let names: Vec<&str> = inner.split(',').map(str::trim).collect();
    if names.iter().any(|n| !is_identifier(n)) {
        return Err(format!("bad column list {cols}"));
    }
    Ok(format!("({})", names.join(", ")))
}

/// `('a', 'b')`: string literals only.
fn column_values(values: &str) -> Result<(), String> {
    let inner = values.strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or("ENUM without (values)")?;
    if inner.split(',').map(str::trim).all(|v| v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'')) {
        Ok(())
    } else {
        Err(format!("ENUM{values} is not a list of string literals"))
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_literal(s: &str) -> bool {
    (s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') && !s[1..s.len() - 1].contains('\''))
        || s.parse::<i64>().is_ok()
}

/// Splits at `sep` outside parentheses and string literals.
fn split_top_level(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut depth, mut quoted) = (0usize, false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ if c == sep && depth == 0 && !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// (table, unique, columns) of every key in the MySQL text, in order; the primary
    /// key counts as unique.
    fn mysql_keys() -> Vec<(String, bool, Vec<String>)> {
        let mut keys = Vec::new();
        for statement in mysql_statements() {
            let rest = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ").unwrap();
            let table = rest.split(' ').next().unwrap().to_owned();
            let body = &rest[rest.find('(').unwrap() + 1..rest.rfind(')').unwrap()];
            for item in split_top_level(body, ',') {
                let (unique, cols) = if let Some(c) = item.strip_prefix("PRIMARY KEY ") {
                    (true, c.to_owned())
                } else if let Some(k) = item.strip_prefix("UNIQUE KEY ") {
                    (true, named_key(k).unwrap().1)
                } else if let Some(k) = item.strip_prefix("KEY ") {
                    (false, named_key(k).unwrap().1)
                } else {
                    continue;
                };
                let cols = cols.trim_matches(|c| c == '(' || c == ')').split(", ").map(str::to_owned).collect();
                keys.push((table.clone(), unique, cols));
            }
        }
        keys
    }

    fn mysql_columns(table: &str) -> Vec<String> {
        let statement = mysql_statements()
            .into_iter()
            .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (")))
            .unwrap();
        let body = &statement[statement.find('(').unwrap() + 1..statement.rfind(')').unwrap()];
        split_top_level(body, ',')
            .into_iter()
            .filter(|i| !i.starts_with("PRIMARY KEY") && !i.starts_with("UNIQUE KEY") && !i.starts_with("KEY "))
            .map(|i| i.split(' ').next().unwrap().to_owned())
            .collect()
    }

    /// The tables a database has, and every index as (table, unique, columns); the
    /// rowid primary key counts as a unique key on its column.
    fn sqlite_keys(conn: &Connection) -> (Vec<String>, Vec<(String, bool, Vec<String>)>) {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let mut keys = Vec::new();
        for table in &tables {
            let mut list = conn.prepare("SELECT name, \"unique\" FROM pragma_index_list(?1)").unwrap();
            let indexes: Vec<(String, bool)> =
                list.query_map([table], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
            for (index, unique) in indexes {
                // Key columns only (a WITHOUT ROWID table's index also carries its key).
                let mut info =
                    conn.prepare("SELECT name FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno").unwrap();
                let cols: Vec<String> = info.query_map([&index], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
                keys.push((table.clone(), unique, cols));
            }
            let mut pk = conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 AND type = 'INTEGER' ORDER BY pk")
                .unwrap();
            let pk: Vec<String> = pk.query_map([table], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            let rowid_alias = pk.len() == 1
                && !conn
                    .query_row("SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_master WHERE name = ?1", [table], |r| {
                        r.get::<_, bool>(0)
                    })
                    .unwrap();
            if rowid_alias {
                keys.push((table.clone(), true, pk));
            }
        }
        (tables, keys)
    }

    #[test]
    fn the_derived_schema_creates_every_table_column_and_index() {
        let conn = Connection::open_in_memory().unwrap();
        for statement in sqlite_statements().unwrap() {
            conn.execute_batch(&statement).unwrap_or_else(|e| panic!("{e}: {statement}"));
        }
        let (tables, mut got) = sqlite_keys(&conn);
        let mut want = mysql_keys();
        let mut want_tables: Vec<String> = want.iter().map(|k| k.0.clone()).collect();
        want_tables.sort();
        want_tables.dedup();
        assert_eq!(tables, want_tables);
        got.sort();
        want.sort();
        assert_eq!(got, want);
        for table in &tables {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid").unwrap();
            let cols: Vec<String> = stmt.query_map([table], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            assert_eq!(cols, mysql_columns(table), "columns of {table}");
        }
        // Applying it again changes nothing.
        for statement in sqlite_statements().unwrap() {
            conn.execute_batch(&statement).unwrap();
        }
        assert_eq!(sqlite_keys(&conn).0, tables);
    }

    #[test]
    fn the_derived_schema_keeps_the_rules_of_the_mysql_one() {
        let conn = Connection::open_in_memory().unwrap();
        for statement in sqlite_statements().unwrap() {
            conn.execute_batch(&statement).unwrap();
        }
        // ENUM: only its values; DEFAULT kept.
        conn.execute("INSERT INTO user (name, password) VALUES ('a', 'h')", []).unwrap();
        let state: String = conn.query_row("SELECT state FROM user", [], |r| r.get(0)).unwrap();
        assert_eq!(state, "offline");
        assert!(conn.execute("UPDATE user SET state = 'away'", []).is_err());
        // NOT NULL kept; a NULL cmid never collides, a repeated one does.
        assert!(conn.execute("INSERT INTO user (name) VALUES ('b')", []).is_err());
        let msg = "INSERT INTO message (sender, sendername, convlo, convhi, msg, time, unixtime, cmid)
                   VALUES (1, 'a', 1, 2, 'm', 't', 0, ?1)";
        conn.execute(msg, [None::<&str>]).unwrap();
        conn.execute(msg, [None::<&str>]).unwrap();
        conn.execute(msg, [Some("c")]).unwrap();
        assert!(conn.execute(msg, [Some("c")]).is_err());
        // AUTOINCREMENT: a deleted highest id is not handed out again.
        let last: i64 = conn.query_row("SELECT max(mid) FROM message", [], |r| r.get(0)).unwrap();
        conn.execute("DELETE FROM message WHERE mid = ?1", [last]).unwrap();
        conn.execute(msg, [None::<&str>]).unwrap();
        assert_eq!(conn.last_insert_rowid(), last + 1);
    }

    #[test]
    fn the_derivation_refuses_what_it_does_not_know() {
        let table = |body: &str| format!("CREATE TABLE IF NOT EXISTS t ( {body} ) ENGINE = InnoDB");
        assert!(sqlite_table(&table("id BIGINT NOT NULL AUTO_INCREMENT, PRIMARY KEY (id)")).is_ok());
        for bad in [
            "id BIGINT UNSIGNED NOT NULL",
            "id INT NOT NULL",
            "id BIGINT NOT NULL COMMENT 'x'",
            "d BIGINT DEFAULT now()",
            "id BIGINT NOT NULL AUTO_INCREMENT, x BIGINT, PRIMARY KEY (id, x)",
            "x BIGINT, FULLTEXT KEY f (x)",
            "x BIGINT, KEY k (x(10))",
        ] {
            assert!(sqlite_table(&table(bad)).is_err(), "accepted {bad}");
        }
        assert!(sqlite_table("CREATE TABLE t (x BIGINT) ENGINE = InnoDB").is_err());
        assert!(sqlite_table("CREATE INDEX i ON t (x)").is_err());
    }

    #[test]
    fn derived_ddl_of_a_keyed_table() {
        let got = sqlite_table(
            "CREATE TABLE IF NOT EXISTS t ( a BIGINT NOT NULL, s ENUM('x', 'y') NOT NULL DEFAULT 'x', \
             PRIMARY KEY (a, s), UNIQUE KEY t_s (s), KEY t_a (a) ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "CREATE TABLE IF NOT EXISTS t (\n    a INTEGER NOT NULL,\n    \
                 s TEXT NOT NULL DEFAULT 'x' CHECK (s IN ('x', 'y')),\n    PRIMARY KEY (a, s),\n    UNIQUE (s)\n) \
                 WITHOUT ROWID",
                "CREATE INDEX IF NOT EXISTS t_a ON t (a)",
            ]
        );
    }
}
