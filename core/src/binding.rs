//! Re-targets the extension's SQL at an application's own tables (`quota.attach(schema)`).

/// `sql` with every `quota.<table>` whose table is in `tables` replaced by
/// `<quoted_schema>.<table>`; other names of schema quota (the catalog, settings) stay.
pub fn retarget(sql: &str, quoted_schema: &str, tables: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find("quota.") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let name = &after["quota.".len()..];
        let len =
            name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(name.len());
        let table = &name[..len];
        if tables.contains(&table) {
            out.push_str(quoted_schema);
            out.push('.');
        } else {
            out.push_str("quota.");
        }
        out.push_str(table);
        rest = &name[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: [&str; 2] = ["user_usage", "usage_records"];

    #[test]
    fn only_whole_names_of_the_listed_tables_move() {
        let sql = "SELECT 1 FROM quota.user_usage u, quota.user_usage_x, quota.features f
                   WHERE EXISTS (SELECT FROM quota.usage_records\n) AND quota.user_usage.x";
        assert_eq!(
            retarget(sql, "\"App\"", &TABLES),
            "SELECT 1 FROM \"App\".user_usage u, quota.user_usage_x, quota.features f
                   WHERE EXISTS (SELECT FROM \"App\".usage_records\n) AND \"App\".user_usage.x"
        );
    }

    #[test]
    fn text_without_the_schema_is_unchanged() {
        assert_eq!(
            retarget("SELECT pg_catalog.now()", "public", &TABLES),
            "SELECT pg_catalog.now()"
        );
        assert_eq!(retarget("quota.", "public", &TABLES), "quota.");
    }
}
