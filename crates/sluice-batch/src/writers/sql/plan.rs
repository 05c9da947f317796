//! Planning the target: the table's DDL (created when asked), the column types
//! read back from the catalog, and the [`Plan`] of columns every statement uses.

use super::*;

impl SqlWriter {
    pub(super) async fn check_table_exists(&self) -> Result<(), WriteError> {
        let sql = format!("SELECT * FROM {} WHERE 1 = 0", self.table_q);
        self.exec_ddl(&sql).await
    }

    pub(super) async fn exec_ddl(&self, sql: &str) -> Result<(), WriteError> {
        let Some(db) = self.pool.as_ref() else {
            return Err(not_open());
        };
        let res = on_db!(db, p => p.execute(sql).await.map(drop));
        res.map_err(|e| self.err(e))
    }

    /// Fixes the columns: creates the table when asked, reads PostgreSQL's column
    /// types and builds the plan.
    pub(super) async fn make_plan(&mut self, cols: Vec<Column>) -> Result<(), WriteError> {
        if self.options.create {
            for sql in self.create_sql(&cols) {
                self.exec_ddl(&sql).await?;
            }
        } else {
            self.check_table_exists().await?;
        }
        if let Some(Db::Postgres(pool)) = &self.pool {
            let rows = sqlx::query(
                "SELECT a.attname::text, \
                   CASE t.typname WHEN 'bpchar' THEN 'bpchar' WHEN 'bit' THEN 'varbit' \
                     ELSE format_type(a.atttypid, NULL) END, \
                   t.typname IN ('json', 'jsonb') \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(&self.table_q)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            self.pg_types = rows
                .into_iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        (r.get::<String, _>(1), r.get::<bool, _>(2)),
                    )
                })
                .collect();
        }
        if let Some(Db::Sqlite(pool)) = &self.pool {
            let (schema, table) = match self.table_parts.as_slice() {
                [schema, table] => (schema.as_str(), table.as_str()),
                parts => ("main", parts.last().map_or("", String::as_str)),
            };
            let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?1, ?2)")
                .bind(table)
                .bind(schema)
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            self.sqlite_types = rows
                .into_iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
                .collect();
        }
        let kind = self.kind;
        let plan_cols: Vec<PlanCol> = cols
            .iter()
            .map(|c| {
                let declared_json = c.sql_type.trim().to_ascii_uppercase().starts_with("JSON");
                let (cast, json) = match self.pg_types.get(&c.name) {
                    Some((t, j)) => (t.clone(), *j),
                    None => (c.sql_type.trim().to_owned(), declared_json),
                };
                // SQLite's first affinity rule: a declared type containing "INT".
                let int_affinity = self
                    .sqlite_types
                    .get(&c.name)
                    .is_some_and(|t| t.to_ascii_uppercase().contains("INT"));
                PlanCol {
                    name: c.name.clone(),
                    quoted: quote(kind, &c.name),
                    cast,
                    json,
                    int_affinity,
                }
            })
            .collect();
        let upsert_key = if self.options.mode == WriteMode::Upsert {
            self.options
                .key
                .iter()
                .map(|k| {
                    plan_cols.iter().position(|c| &c.name == k).ok_or_else(|| {
                        fatal(format!(
                            "table {}: key column {k:?} is not among the columns",
                            self.options.table
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        self.plan = Some(Plan {
            cols: plan_cols,
            upsert_key,
            inserts: HashMap::new(),
            unnest: Mutex::new(HashMap::new()),
        });
        Ok(())
    }

    /// `CREATE TABLE IF NOT EXISTS` and `CREATE INDEX IF NOT EXISTS` statements.
    pub(super) fn create_sql(&self, cols: &[Column]) -> Vec<String> {
        let kind = self.kind;
        let key = &self.options.key;
        let indexed = |name: &str| {
            key.iter().any(|k| k == name)
                || self.options.indexes.iter().flatten().any(|c| c == name)
        };
        let single_int_key = key.len() == 1;
        let mut defs: Vec<String> = cols
            .iter()
            .map(|c| {
                let mut ty = c.sql_type.trim().to_owned();
                if kind == DbKind::MySql && indexed(&c.name) && ty.eq_ignore_ascii_case("TEXT") {
                    // MySQL cannot index TEXT without a prefix length.
                    ty = "VARCHAR(255)".into();
                }
                if kind == DbKind::Sqlite
                    && single_int_key
                    && key[0] == c.name
                    && ty.to_ascii_uppercase().contains("INT")
                {
                    // `INTEGER PRIMARY KEY` is SQLite's rowid: no separate key index.
                    ty = "INTEGER".into();
                }
                let not_null = !c.nullable || key.iter().any(|k| k == &c.name);
                format!(
                    "{} {ty}{}",
                    quote(kind, &c.name),
                    if not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        if !key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", self.quoted_list(key)));
        }
        let table_name = self
            .table_parts
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        let index_name =
            |cols: &[String]| derived_name(table_name, &format!("{}_idx", cols.join("_")));
        if kind == DbKind::MySql {
            for idx in &self.options.indexes {
                defs.push(format!(
                    "INDEX {} ({})",
                    quote(kind, &index_name(idx)),
                    self.quoted_list(idx)
                ));
            }
        }
        let mut create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table_q,
            defs.join(", ")
        );
        if kind == DbKind::MySql {
            create.push_str(" DEFAULT CHARSET = utf8mb4");
        }
        let mut out = vec![create];
        if kind != DbKind::MySql {
            for idx in &self.options.indexes {
                let name = index_name(idx);
                let (name_q, on) = match (kind, self.table_parts.as_slice()) {
                    (DbKind::Sqlite, [schema, table]) => (
                        format!("{}.{}", quote(kind, schema), quote(kind, &name)),
                        quote(kind, table),
                    ),
                    _ => (quote(kind, &name), self.table_q.clone()),
                };
                out.push(format!(
                    "CREATE INDEX IF NOT EXISTS {name_q} ON {on} ({})",
                    self.quoted_list(idx)
                ));
            }
        }
        out
    }

    pub(super) fn quoted_list(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| quote(self.kind, n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
