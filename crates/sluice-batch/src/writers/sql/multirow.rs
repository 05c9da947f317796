//! Multi-row `INSERT … VALUES (…), (…)` statements with the upsert clause, sized
//! to the bind-parameter (and MySQL packet) limits: SQLite and MySQL always, and
//! PostgreSQL for single items and chunk commits.

use super::*;

/// The multi-row statement path of SQLite and MySQL, which differ only in types:
/// bind the first batch, then run the batches in turn on one held connection, in
/// one transaction when there are several, binding each next batch while the
/// database runs the one before (SQLite runs statements on its own thread).
macro_rules! write_statements {
    ($self:ident, $cells:expr, $extra:expr, $db:ident, $args:ty, $held:ident) => {{
        let cells = $cells;
        let extra = $extra;
        let batches = $self.batches(cells);
        let sqls: Vec<Arc<str>> = batches.iter().map(|b| $self.insert_sql(b.len())).collect();
        let plan = $self.plan.as_ref().ok_or_else(not_planned)?;
        let table = $self.options.table.as_str();
        let bind = |range: &Range<usize>| {
            let mut args = <$args>::default();
            bind_rows::<$db, _>(&mut args, plan, cells, range.clone())
                .map_err(|e| encode_error(table, e))
                .map(|()| args)
        };
        let first = bind(&batches[0])?;
        let held = $self.held.$held.take();
        let Some(Db::$db(pool)) = &$self.pool else {
            return Err(not_open());
        };
        let mut conn = $self.acquire(pool, held).await?;
        let err = |e| map_sqlx_error(table, e);
        let mut ran = 0;
        let result = async {
            if batches.len() == 1 && extra.is_empty() {
                // One statement is atomic on its own (SQLite; InnoDB in autocommit): no
                // BEGIN/COMMIT round trips.
                ran += 1;
                sqlx::query_with(&sqls[0], first)
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
                return Ok(());
            }
            let mut tx = conn.begin().await.map_err(err)?;
            let mut next = Some(first);
            for (i, sql) in sqls.iter().enumerate() {
                let Some(args) = next.take() else { break };
                ran += 1;
                // The statement is sent first (`join!` polls in order), then the
                // next batch is bound while it runs.
                let (done, bound) =
                    tokio::join!(sqlx::query_with(sql, args).execute(&mut *tx), async {
                        batches.get(i + 1).map(&bind)
                    },);
                done.map_err(err)?;
                next = bound.transpose()?;
            }
            run_extra::<$db>(&mut tx, extra, table, |r| r.rows_affected())
                .await
                .map_err(err)??;
            tx.commit().await.map_err(err)
        }
        .await;
        $self.held.$held = Self::keep(&result, conn);
        $self.statements += ran;
        result
    }};
}

impl SqlWriter {
    /// The conflict clause of an upsert, or an empty string.
    pub(super) fn conflict_clause(&self, plan: &Plan) -> String {
        let keys: Vec<&str> = plan
            .upsert_key
            .iter()
            .map(|&i| plan.cols[i].quoted.as_str())
            .collect();
        let updates: Vec<&str> = plan
            .cols
            .iter()
            .enumerate()
            .filter(|(i, _)| !plan.upsert_key.contains(i))
            .map(|(_, c)| c.quoted.as_str())
            .collect();
        sluice_sql::upsert_clause(self.kind, &keys, &updates)
    }

    pub(super) fn column_list(plan: &Plan) -> String {
        plan.cols
            .iter()
            .map(|c| c.quoted.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The multi-row `INSERT` for `rows` rows (cached).
    pub(super) fn insert_sql(&mut self, rows: usize) -> Arc<str> {
        let Some(plan) = self.plan.as_ref() else {
            return Arc::from("");
        };
        if let Some(sql) = plan.inserts.get(&rows) {
            return sql.clone();
        }
        let ncols = plan.cols.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table_q,
            Self::column_list(plan)
        );
        sql.reserve(rows * ncols * 12);
        let mut n = 0usize;
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for (i, c) in plan.cols.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                n += 1;
                sluice_sql::push_placeholder(&mut sql, self.kind, n);
                if self.kind == DbKind::Postgres {
                    sql.push_str("::");
                    sql.push_str(&c.cast);
                }
            }
            sql.push(')');
        }
        sql.push_str(&self.conflict_clause(plan));
        let sql: Arc<str> = Arc::from(sql);
        if let Some(plan) = self.plan.as_mut() {
            // Chunks are usually all the same size: a few entries suffice.
            if plan.inserts.len() >= 16 {
                plan.inserts.clear();
            }
            plan.inserts.insert(rows, sql.clone());
        }
        sql
    }

    /// Splits `n` rows into statements under the parameter (and byte) limits.
    pub(super) fn batches(&self, cells: &Cells<'_>) -> Vec<Range<usize>> {
        let ncols = self.plan.as_ref().map_or(1, |p| p.cols.len().max(1));
        let mut per_stmt = (self.max_params / ncols).max(1);
        if self.kind == DbKind::Sqlite {
            // Several statements per chunk, so that binding one overlaps running
            // the one before.
            per_stmt = per_stmt.min(SQLITE_STATEMENT_ROWS);
        }
        let nrows = cells.rows();
        let mut out = Vec::new();
        if self.max_bytes == usize::MAX {
            let mut start = 0;
            while start < nrows {
                let end = (start + per_stmt).min(nrows);
                out.push(start..end);
                start = end;
            }
            return out;
        }
        let mut start = 0;
        let mut bytes = 0usize;
        for i in 0..nrows {
            let size: usize = cells
                .row(i)
                .iter()
                .map(|v| 16 + v.map_or(0, Cell::text_len))
                .sum();
            if i > start && (i - start >= per_stmt || bytes + size > self.max_bytes) {
                out.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < nrows {
            out.push(start..nrows);
        }
        out
    }
}

/// Runs `extra` in `tx`; `Ok(Err(..))` when a `must_affect` statement affected
/// nothing (the caller drops the transaction: everything rolls back).
pub(super) async fn run_extra<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    extra: &[SqlStatement],
    table: &str,
    rows: fn(&<DB as Database>::QueryResult) -> u64,
) -> Result<Result<(), WriteError>, sqlx::Error>
where
    DB: Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'e> &'e mut <DB as Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    for st in extra {
        let done = sluice_sql::build_query::<DB>(&st.sql, &st.args)
            .execute(&mut **tx)
            .await?;
        if st.must_affect && rows(&done) == 0 {
            return Ok(Err(WriteError::Fatal(format!(
                "table {table}: this execution lost its lease on the job, or a newer execution superseded it; the chunk was rolled back"
            ))));
        }
    }
    Ok(Ok(()))
}

/// Binds the values of rows `range` of `cells` with their JSON types, row by row,
/// column by column (text from [`Rows`] as a JSON string).
pub(super) fn bind_rows<'q, DB, A>(
    args: &mut A,
    plan: &Plan,
    cells: &Cells<'q>,
    range: Range<usize>,
) -> Result<(), BoxDynError>
where
    DB: Database,
    A: Arguments<'q, Database = DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
{
    args.reserve(
        range.len() * plan.cols.len(),
        range.len() * plan.cols.len() * 16,
    );
    for r in range {
        for (c, v) in plan.cols.iter().zip(cells.row(r)) {
            match *v {
                None => args.add(None::<String>)?,
                Some(v) if c.json => args.add(v.json_text())?,
                Some(v @ (Cell::Text(_) | Cell::Json(Value::String(_)))) => {
                    let s = v.as_str().unwrap_or_default();
                    match canonical_int(s).filter(|_| c.int_affinity) {
                        Some(i) => args.add(i)?,
                        None => args.add(s)?,
                    }
                }
                Some(Cell::Json(Value::Bool(b))) => args.add(*b)?,
                Some(Cell::Json(Value::Number(n))) => {
                    if let Some(i) = n.as_i64() {
                        args.add(i)?;
                    } else if n.is_u64() {
                        // Beyond i64: as text, for the database to cast where it can.
                        args.add(n.to_string())?;
                    } else {
                        args.add(n.as_f64().unwrap_or(f64::NAN))?;
                    }
                }
                Some(Cell::Json(v)) => args.add(v.to_string())?,
            }
        }
    }
    Ok(())
}

/// `s` as an integer when it is one written exactly as that integer prints: an
/// optional `-`, digits without a leading zero (but `0`), within `i64`. (Not
/// `+1`, `01`, `-0` or ` 1`, which a database may store differently from the
/// integer's text.)
pub(super) fn canonical_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let b = digits.as_bytes();
    let canonical = !b.is_empty()
        && b.len() <= 19
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || (b.len() == 1 && digits.len() == s.len()));
    if canonical { s.parse().ok() } else { None }
}
