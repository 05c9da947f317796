//! PostgreSQL: `COPY` first for new keys, one `MERGE` (or `INSERT … ON
//! CONFLICT`) over `UNNEST`ed typed arrays when keys exist, and the back-off
//! between the two.

use super::*;

/// The type of one column's array in a PostgreSQL `UNNEST` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ArrayType {
    /// `int8[]`: an integer column whose values are all integers or null.
    Int8,
    /// `float8[]`: a floating-point column whose values are all numbers or null.
    Float8,
    /// `bool[]`: a boolean column whose values are all booleans or null.
    Bool,
    /// `text[]`, cast to the column's type by the server.
    Text,
}

impl ArrayType {
    /// The array type for column `c` in this chunk: binary where every value
    /// fits, else text.
    pub(super) fn of<'a>(c: &PlanCol, mut values: impl Iterator<Item = Option<Cell<'a>>>) -> Self {
        let mut all =
            |f: fn(&Value) -> bool| values.all(|v| v.is_none_or(|v| v.json().is_some_and(f)));
        match c.cast.as_str() {
            "bigint" | "integer" | "smallint" if all(Value::is_i64) => Self::Int8,
            "double precision" | "real" if all(Value::is_number) => Self::Float8,
            "boolean" if all(Value::is_boolean) => Self::Bool,
            _ => Self::Text,
        }
    }

    pub(super) fn pg_name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Float8 => "float8",
            Self::Bool => "bool",
            Self::Text => "text",
        }
    }
}

impl SqlWriter {
    pub(super) async fn write_postgres(
        &mut self,
        mut cells: Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        if !plan.upsert_key.is_empty() {
            // `ON CONFLICT DO UPDATE` and `MERGE` cannot touch a row twice in one
            // statement: keep the last item of each key, as writing them in turn would.
            cells = cells.dedupe_last(plan);
        }
        let bulk_min = self
            .options
            .pg_bulk_min_rows
            .unwrap_or(DEFAULT_PG_BULK_MIN_ROWS);
        if !extra.is_empty() && plan.upsert_key.is_empty() {
            // Appends with a commit (the repository's, or the checkpoint in
            // `sluice_checkpoint`): the COPY and the commit in one transaction.
            return self.pg_copy_with(&cells, extra).await;
        }
        if !extra.is_empty() && cells.rows() >= bulk_min {
            // Upserts with a commit: the bulk upsert and the commit in one
            // transaction.
            return self.pg_upsert_with(&cells, extra).await;
        }
        if !extra.is_empty() {
            // A single item with a commit: one transaction of a multi-row statement
            // and the commit.
            return self.pg_multirow(&cells, extra).await;
        }
        if plan.upsert_key.is_empty() {
            // Append, or upsert without a key: plain inserts, streamed.
            return self.pg_copy(&cells).await.map_err(|e| self.err(e));
        }
        if cells.rows() < bulk_min {
            return self.pg_multirow(&cells, &[]).await;
        }
        // New keys are most often new rows: COPY them, the fastest way in. If a key
        // exists, the COPY fails as a whole and the chunk is upserted instead.
        if self.pg_copy_skip == 0 {
            match self.pg_copy(&cells).await {
                Ok(()) => {
                    self.pg_copy_backoff = 1;
                    return Ok(());
                }
                Err(e) if is_unique_violation(&e) => {
                    // Try COPY first again only after a few chunks, more each time
                    // it fails in a row (when most keys exist it would always fail).
                    self.pg_copy_skip = self.pg_copy_backoff;
                    self.pg_copy_backoff = (self.pg_copy_backoff * 2).min(64);
                }
                Err(e) => return Err(self.err(e)),
            }
        } else {
            self.pg_copy_skip -= 1;
        }
        self.pg_unnest(&cells).await
    }

    /// `COPY … FROM STDIN` of the chunk, in text format: one statement, atomic on
    /// its own.
    pub(super) async fn pg_copy(&mut self, cells: &Cells<'_>) -> Result<(), sqlx::Error> {
        let Some(plan) = self.plan.as_ref() else {
            return Err(sqlx::Error::Protocol("sql writer: no plan".into()));
        };
        let statement = self.copy_sql(plan);
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg).await?;
        self.statements += 1;
        let result = copy_in(&mut conn, &statement, plan, cells).await.map(drop);
        if let Ok(()) | Err(sqlx::Error::Database(_)) = &result {
            // The server answered: the connection is fine.
            self.held.pg = Some(conn);
        }
        result
    }

    /// `COPY … FROM STDIN` of the chunk and `extra`, in one transaction.
    pub(super) async fn pg_copy_with(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let statement = self.copy_sql(plan);
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| self.err(e))?;
        self.statements += 1;
        let table = self.options.table.clone();
        let result = async {
            let mut tx = conn.begin().await?;
            copy_in(&mut tx, &statement, plan, cells).await?;
            commit_with_extra(tx, extra, &table).await
        }
        .await
        .map_err(|e| map_sqlx_error(&table, e))
        .and_then(|r| r);
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// A bulk upsert of the chunk and `extra` in one transaction: `COPY` first
    /// (under a savepoint, as [`write_postgres`](Self::write_postgres) backs off
    /// from it), else `INSERT … SELECT … FROM UNNEST(…) ON CONFLICT`, which also
    /// handles a key a concurrent writer inserts meanwhile.
    pub(super) async fn pg_upsert_with(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        let try_copy = self.pg_copy_skip == 0;
        if !try_copy {
            self.pg_copy_skip -= 1;
        }
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let copy_statement = self.copy_sql(plan);
        let sig: Vec<ArrayType> = (0..plan.cols.len())
            .map(|c| ArrayType::of(&plan.cols[c], cells.column(c)))
            .collect();
        let insert_sql = self.unnest_sql(plan, &sig, false);
        let table = self.options.table.clone();
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| map_sqlx_error(&table, e))?;
        let mut ran = 0;
        let mut copy_failed = false;
        let result = async {
            let mut tx = conn.begin().await?;
            let mut copied = false;
            if try_copy {
                ran += 1;
                let mut savepoint = tx.begin().await?;
                match copy_in(&mut savepoint, &copy_statement, plan, cells).await {
                    Ok(_) => {
                        savepoint.commit().await?;
                        copied = true;
                    }
                    Err(e) if is_unique_violation(&e) => {
                        savepoint.rollback().await?;
                        copy_failed = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !copied {
                ran += 1;
                let args = unnest_args(plan, &sig, cells).map_err(sqlx::Error::Encode)?;
                sqlx::query_with(&insert_sql, args)
                    .execute(&mut *tx)
                    .await?;
            }
            commit_with_extra(tx, extra, &table).await
        }
        .await
        .map_err(|e| match e {
            sqlx::Error::Encode(e) => encode_error(&table, e),
            e => map_sqlx_error(&table, e),
        })
        .and_then(|r| r);
        self.statements += ran;
        if copy_failed {
            self.pg_copy_skip = self.pg_copy_backoff;
            self.pg_copy_backoff = (self.pg_copy_backoff * 2).min(64);
        } else if try_copy && result.is_ok() {
            self.pg_copy_backoff = 1;
        }
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// Multi-row `INSERT … VALUES … ON CONFLICT`, split at the parameter limit,
    /// in one transaction when split.
    pub(super) async fn pg_multirow(
        &mut self,
        cells: &Cells<'_>,
        extra: &[SqlStatement],
    ) -> Result<(), WriteError> {
        // PostgreSQL has no byte budget: statements of as many rows as the
        // parameters allow.
        let batches = self.batches(cells);
        let sqls: Vec<Arc<str>> = batches.iter().map(|b| self.insert_sql(b.len())).collect();
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let mut stmts = Vec::with_capacity(batches.len());
        for (range, sql) in batches.iter().zip(sqls) {
            let mut args = PgArguments::default();
            for r in range.clone() {
                for (c, v) in plan.cols.iter().zip(cells.row(r)) {
                    args.add(pg_text(*v, c.json))
                        .map_err(|e| self.encode_err(e))?;
                }
            }
            stmts.push((sql, args));
        }
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| self.err(e))?;
        let mut ran = 0;
        let table = self.options.table.clone();
        let result = async {
            if stmts.len() == 1 && extra.is_empty() {
                // One statement is atomic on its own: no BEGIN/COMMIT round trips.
                let (sql, args) = stmts.pop().expect("one statement");
                ran += 1;
                sqlx::query_with(&sql, args).execute(&mut *conn).await?;
                return Ok(Ok(()));
            }
            let mut tx = conn.begin().await?;
            for (sql, args) in stmts {
                ran += 1;
                sqlx::query_with(&sql, args).execute(&mut *tx).await?;
            }
            commit_with_extra(tx, extra, &table).await
        }
        .await
        .map_err(|e| self.err(e))
        .and_then(|r| r);
        self.statements += ran;
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// An upsert of the whole chunk in one statement whose rows come from one
    /// array per column: `MERGE … USING (SELECT … FROM UNNEST($1, …))` on
    /// PostgreSQL 15 and later, `INSERT … SELECT … FROM UNNEST(…) ON CONFLICT`
    /// before (and when a concurrent insert makes the `MERGE` hit the key).
    pub(super) async fn pg_unnest(&mut self, cells: &Cells<'_>) -> Result<(), WriteError> {
        let plan = self.plan.as_ref().ok_or_else(not_planned)?;
        let sig: Vec<ArrayType> = (0..plan.cols.len())
            .map(|c| ArrayType::of(&plan.cols[c], cells.column(c)))
            .collect();
        let merge_sql = self.pg_merge.then(|| self.unnest_sql(plan, &sig, true));
        let insert_sql = self.unnest_sql(plan, &sig, false);
        let table = self.options.table.as_str();
        let build = || unnest_args(plan, &sig, cells).map_err(|e| encode_error(table, e));
        let args = build()?;
        let mut conn = pg_acquire(&self.pool, &mut self.held.pg)
            .await
            .map_err(|e| map_sqlx_error(table, e))?;
        let mut ran = 1;
        let result = match &merge_sql {
            None => sqlx::query_with(&insert_sql, args)
                .execute(&mut *conn)
                .await
                .map(drop),
            Some(merge_sql) => match sqlx::query_with(merge_sql, args).execute(&mut *conn).await {
                Err(e) if is_unique_violation(&e) => {
                    // A row with the key appeared since MERGE looked (a concurrent
                    // writer): ON CONFLICT handles that race.
                    ran += 1;
                    match build() {
                        Ok(args) => sqlx::query_with(&insert_sql, args)
                            .execute(&mut *conn)
                            .await
                            .map(drop),
                        Err(e) => {
                            self.held.pg = Some(conn);
                            return Err(e);
                        }
                    }
                }
                other => other.map(drop),
            },
        };
        self.statements += ran;
        let result = result.map_err(|e| map_sqlx_error(table, e));
        self.held.pg = Self::keep(&result, conn);
        result
    }

    /// `COPY <table> (<columns>) FROM STDIN` for `plan`'s columns.
    fn copy_sql(&self, plan: &Plan) -> String {
        format!(
            "COPY {} ({}) FROM STDIN",
            self.table_q,
            Self::column_list(plan)
        )
    }

    /// The `UNNEST` statement for one combination of array types (cached).
    pub(super) fn unnest_sql(&self, plan: &Plan, sig: &[ArrayType], merge: bool) -> Arc<str> {
        let cache_key = (sig.to_vec(), merge);
        if let Some(sql) = plan
            .unnest
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).cloned())
        {
            return sql;
        }
        let arrays = join(
            sig.iter()
                .enumerate()
                .map(|(i, ty)| format!("${}::{}[]", i + 1, ty.pg_name())),
            ", ",
        );
        let aliases = join((0..sig.len()).map(|i| format!("c{i}")), ", ");
        let select = join(
            (plan.cols.iter().enumerate())
                .map(|(i, c)| format!("u.c{i}::{} AS {}", c.cast, c.quoted)),
            ", ",
        );
        let source = format!("SELECT {select} FROM UNNEST({arrays}) AS u({aliases})");
        let columns = Self::column_list(plan);
        let sql = if merge {
            let on = join(
                plan.upsert_key
                    .iter()
                    .map(|&i| format!("sluice_t.{0} = sluice_s.{0}", plan.cols[i].quoted)),
                " AND ",
            );
            let updates = join(
                plan.cols
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !plan.upsert_key.contains(i))
                    .map(|(_, c)| format!("{0} = sluice_s.{0}", c.quoted)),
                ", ",
            );
            let values = join(
                plan.cols.iter().map(|c| format!("sluice_s.{}", c.quoted)),
                ", ",
            );
            let mut sql = format!(
                "MERGE INTO {} AS sluice_t USING ({source}) AS sluice_s ON {on}",
                self.table_q
            );
            if !updates.is_empty() {
                sql.push_str(" WHEN MATCHED THEN UPDATE SET ");
                sql.push_str(&updates);
            }
            sql.push_str(&format!(
                " WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
            ));
            sql
        } else {
            format!(
                "INSERT INTO {} ({columns}) {source}{}",
                self.table_q,
                self.conflict_clause(plan)
            )
        };
        let sql: Arc<str> = Arc::from(sql);
        if let Ok(mut m) = plan.unnest.lock() {
            if m.len() >= 16 {
                m.clear();
            }
            m.insert(cache_key, sql.clone());
        }
        sql
    }
}

/// `parts` joined with `sep`.
fn join(parts: impl Iterator<Item = String>, sep: &str) -> String {
    parts.collect::<Vec<_>>().join(sep)
}

/// A value in PostgreSQL's text form (`None`: NULL).
pub(super) fn pg_text(v: Option<Cell<'_>>, json: bool) -> Option<Cow<'_, str>> {
    match v? {
        v if json => Some(Cow::Owned(v.json_text())),
        Cell::Text(s) => Some(Cow::Borrowed(s)),
        Cell::Json(Value::Null) => None,
        Cell::Json(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
        Cell::Json(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Cell::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
        Cell::Json(v) => Some(Cow::Owned(v.to_string())),
    }
}

/// One column's values as a typed array (`None` for NULL, and for a value that
/// is not of the type, which [`ArrayType::of`] rules out).
fn typed<'a, T>(
    values: impl Iterator<Item = Option<Cell<'a>>>,
    get: fn(&Value) -> Option<T>,
) -> Vec<Option<T>> {
    values
        .map(|v| v.and_then(Cell::json).and_then(get))
        .collect()
}

/// The arguments of an `UNNEST` statement: one array per column.
pub(super) fn unnest_args(
    plan: &Plan,
    sig: &[ArrayType],
    cells: &Cells<'_>,
) -> Result<PgArguments, BoxDynError> {
    let mut args = PgArguments::default();
    for (i, (c, ty)) in plan.cols.iter().zip(sig).enumerate() {
        let values = cells.column(i);
        match ty {
            ArrayType::Int8 => args.add(typed(values, Value::as_i64))?,
            ArrayType::Float8 => args.add(typed(values, Value::as_f64))?,
            ArrayType::Bool => args.add(typed(values, Value::as_bool))?,
            ArrayType::Text => args.add(
                values
                    .map(|v| pg_text(v, c.json))
                    .collect::<Vec<Option<Cow<'_, str>>>>(),
            )?,
        }
    }
    Ok(args)
}

/// Whether a database error is a unique (or primary key) violation.
/// Runs `extra` in `tx`, then commits it; `Ok(Err(…))` (and `tx` rolled back)
/// when a statement that must affect a row affects none.
async fn commit_with_extra(
    mut tx: sqlx::Transaction<'_, Postgres>,
    extra: &[SqlStatement],
    table: &str,
) -> Result<Result<(), WriteError>, sqlx::Error> {
    let rows = |r: &sqlx::postgres::PgQueryResult| r.rows_affected();
    if let Err(e) = run_extra::<Postgres>(&mut tx, extra, table, rows).await? {
        return Ok(Err(e));
    }
    tx.commit().await.map(Ok)
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    ErrorClass::of(e) == ErrorClass::UniqueViolation
}

/// The held PostgreSQL connection, or a new one from the pool.
pub(super) async fn pg_acquire(
    pool: &Option<Db>,
    held: &mut Option<PoolConnection<Postgres>>,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    if let Some(c) = held.take() {
        return Ok(c);
    }
    match pool {
        Some(Db::Postgres(p)) => p.acquire().await,
        _ => Err(sqlx::Error::PoolClosed),
    }
}
