//! Validation of SQL identifiers and type names (quoting is sluice-sql's
//! [`quote_ident`](sluice_sql::quote_ident)).
//!
//! Nothing a user or an item supplies is interpolated into SQL unless it passed
//! these checks; values are always bound as parameters (or streamed through COPY).

/// The longest identifier accepted (PostgreSQL truncates at 63 bytes, MySQL at 64).
pub(crate) const MAX_IDENT_LEN: usize = 63;

/// Checks one identifier: ASCII letters, digits and `_`, not starting with a
/// digit, 1 to 63 characters.
pub(crate) fn check_ident(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first
        || name.len() > MAX_IDENT_LEN
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "invalid {what} name {name:?}: use 1 to {MAX_IDENT_LEN} ASCII letters, digits and \
             underscores, not starting with a digit"
        ));
    }
    Ok(())
}

/// Checks a table name, `table` or `schema.table`, and returns its parts.
pub(crate) fn check_table(name: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "invalid table name {name:?}: use `table` or `schema.table`"
        ));
    }
    for p in &parts {
        check_ident("table", p).map_err(|_| {
            format!(
                "invalid table name {name:?}: use `table` or `schema.table`, each part 1 to \
                 {MAX_IDENT_LEN} ASCII letters, digits and underscores, not starting with a digit"
            )
        })?;
    }
    Ok(parts.into_iter().map(str::to_owned).collect())
}

/// Checks a column type as written in `CREATE TABLE`: letters, digits, spaces,
/// `_`, parentheses, commas and `[]` (`BIGINT`, `DOUBLE PRECISION`,
/// `VARCHAR(40)`, `NUMERIC(10, 2)`, `TEXT[]`).
pub(crate) fn check_type(column: &str, ty: &str) -> Result<(), String> {
    let t = ty.trim();
    let balanced = {
        let mut depth = 0i32;
        t.chars().all(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth >= 0
        }) && depth == 0
    };
    if t.is_empty()
        || t.len() > 64
        || !t.starts_with(|c: char| c.is_ascii_alphabetic())
        || !balanced
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),[]".contains(c))
    {
        return Err(format!(
            "invalid SQL type {ty:?} for column {column:?}: use a type name such as BIGINT, \
             TEXT, DOUBLE PRECISION, VARCHAR(40) or NUMERIC(10,2)"
        ));
    }
    Ok(())
}

/// A stable 32-bit FNV-1a hash, to shorten generated names.
pub(crate) fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A generated identifier `{base}_{suffix}`, shortened with a hash when it would
/// pass [`MAX_IDENT_LEN`].
pub(crate) fn derived_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}_{suffix}");
    if full.len() <= MAX_IDENT_LEN {
        return full;
    }
    let hash = format!("{:08x}", fnv32(&full));
    let keep = MAX_IDENT_LEN - hash.len() - 1;
    // `full` is ASCII (checked identifiers), so byte slicing is safe.
    format!("{}_{hash}", &full[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_ident("column", "pm10").is_ok());
        assert!(check_ident("column", "_x9").is_ok());
        for bad in [
            "",
            "9a",
            "a b",
            "a;b",
            "a\"b",
            "a`b",
            "측정소",
            "a-b",
            &"x".repeat(64),
        ] {
            assert!(check_ident("column", bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_table("s.t").unwrap(), vec!["s", "t"]);
        assert!(check_table("a.b.c").is_err());
        assert!(check_table("t; DROP TABLE x").is_err());
        assert!(check_table(".t").is_err());
    }

    #[test]
    fn types() {
        for ok in [
            "BIGINT",
            "DOUBLE PRECISION",
            "VARCHAR(40)",
            "NUMERIC(10, 2)",
            "TEXT[]",
            "timestamp with time zone",
        ] {
            assert!(check_type("c", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "TEXT; DROP",
            "TEXT)",
            "INT -- x",
            "'x'",
            "(INT)",
            "TEXT DEFAULT 'a'",
        ] {
            assert!(check_type("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_names_fit() {
        assert_eq!(derived_name("t", "a_idx"), "t_a_idx");
        let long = derived_name(&"t".repeat(60), "a_b_idx");
        assert_eq!(long.len(), MAX_IDENT_LEN);
        assert!(check_ident("index", &long).is_ok());
    }
}
