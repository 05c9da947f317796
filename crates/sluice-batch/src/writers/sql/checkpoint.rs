//! The step's checkpoint in the target database: the `sluice_checkpoint` table
//! ([`CHECKPOINT_TABLE`]), one row per job, instance and step, updated in every
//! chunk's transaction and fenced by the execution id, so that `sql_append` and
//! `sql_upsert` into a database other than the repository's are exactly once
//! across a crash (see [`CheckpointStore`]).
//!
//! ```text
//! sluice_checkpoint (job_name, job_instance_id, step_name) primary key,
//!                   execution_id  the execution that holds the row (fencing token)
//!                   commits       the chunk sequence (the step's commit count)
//!                   counts        the step's counts after that chunk (JSON)
//!                   checkpoint    {"reader": …, "writer": …} after that chunk (JSON)
//! ```

use sluice_sql::{Arg, Statement, Tx, dialect};

use super::*;
use crate::api::{CheckpointKey, CheckpointStore, TargetCheckpoint};
use crate::model::StepCounts;

/// The table in the target database where a SQL writer keeps the step's
/// checkpoint (in the connection's default schema), created when missing.
pub const CHECKPOINT_TABLE: &str = "sluice_checkpoint";

/// `CREATE TABLE IF NOT EXISTS sluice_checkpoint …` for `kind`.
fn create_sql(kind: DbKind) -> String {
    let text = match kind {
        DbKind::MySql => "MEDIUMTEXT",
        DbKind::Sqlite | DbKind::Postgres => "TEXT",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (\
         job_name VARCHAR(200) NOT NULL, \
         job_instance_id BIGINT NOT NULL, \
         step_name VARCHAR(200) NOT NULL, \
         execution_id BIGINT NOT NULL, \
         commits BIGINT NOT NULL, \
         counts {text} NOT NULL, \
         checkpoint {text} NOT NULL, \
         PRIMARY KEY (job_name, job_instance_id, step_name))"
    )
}

/// The key columns' condition and its arguments.
const WHERE_KEY: &str = "job_name = ? AND job_instance_id = ? AND step_name = ?";

fn key_args(key: &CheckpointKey) -> [Arg; 3] {
    [
        Arg::Text(key.job.clone()),
        Arg::I64(key.instance_id),
        Arg::Text(key.step.clone()),
    ]
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A claim error: never an item error (there is no item), transient when the
/// database says so.
fn claim_error(e: sqlx::Error) -> WriteError {
    match map_sqlx_error(CHECKPOINT_TABLE, e) {
        WriteError::Item(m) => WriteError::Fatal(m),
        other => other,
    }
}

impl SqlWriter {
    /// Claims the row in one write transaction: reads it (locked), then inserts,
    /// resets or takes it over.
    async fn claim_row(
        &self,
        tx: &mut Tx,
        key: &CheckpointKey,
        fresh: bool,
    ) -> Result<Option<TargetCheckpoint>, WriteError> {
        let kind = self.kind;
        let lock = if kind == DbKind::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        let select = dialect(
            kind,
            &format!(
                "SELECT execution_id, commits, counts, checkpoint FROM {CHECKPOINT_TABLE} \
                 WHERE {WHERE_KEY}{lock}"
            ),
        );
        let mut st = Statement::new(select);
        st.args.extend(key_args(key));
        let row = tx.fetch_optional(&st).await.map_err(claim_error)?;
        let Some(row) = row else {
            let insert = dialect(
                kind,
                &format!(
                    "INSERT INTO {CHECKPOINT_TABLE} (job_name, job_instance_id, step_name, \
                     execution_id, commits, counts, checkpoint) VALUES (?, ?, ?, ?, 0, ?, 'null')"
                ),
            );
            let mut st = Statement::new(insert);
            st.args.extend(key_args(key));
            st.args.push(Arg::I64(key.execution_id));
            st.args.push(Arg::Text(counts_json(&StepCounts::default())));
            tx.execute(&st).await.map_err(claim_error)?;
            return Ok(None);
        };
        let holder: i64 = row.get("execution_id").map_err(claim_error)?;
        let commits: i64 = row.get("commits").map_err(claim_error)?;
        let counts: String = row.get("counts").map_err(claim_error)?;
        let checkpoint: String = row.get("checkpoint").map_err(claim_error)?;
        if fresh {
            // A fresh start owes nothing to what the row holds (a completed run's
            // last chunk, or a row of another repository's instance).
            let reset = dialect(
                kind,
                &format!(
                    "UPDATE {CHECKPOINT_TABLE} SET execution_id = ?, commits = 0, counts = ?, \
                     checkpoint = 'null' WHERE {WHERE_KEY}"
                ),
            );
            let mut st = Statement::new(reset)
                .bind(key.execution_id)
                .bind(counts_json(&StepCounts::default()));
            st.args.extend(key_args(key));
            tx.execute(&st).await.map_err(claim_error)?;
            return Ok(None);
        }
        if holder > key.execution_id {
            return Err(fenced(key, holder));
        }
        let take = dialect(
            kind,
            &format!("UPDATE {CHECKPOINT_TABLE} SET execution_id = ? WHERE {WHERE_KEY}"),
        );
        let mut st = Statement::new(take).bind(key.execution_id);
        st.args.extend(key_args(key));
        tx.execute(&st).await.map_err(claim_error)?;
        if commits <= 0 {
            return Ok(None);
        }
        let bad = |what: &str, e: serde_json::Error| {
            WriteError::Fatal(format!(
                "{CHECKPOINT_TABLE}: the {what} of job {} instance {} step {} is not valid JSON: {e}",
                key.job, key.instance_id, key.step
            ))
        };
        let counts: StepCounts = serde_json::from_str(&counts).map_err(|e| bad("counts", e))?;
        let checkpoint: Value =
            serde_json::from_str(&checkpoint).map_err(|e| bad("checkpoint", e))?;
        Ok(Some(TargetCheckpoint { counts, checkpoint }))
    }
}

fn counts_json(counts: &StepCounts) -> String {
    serde_json::to_string(counts).unwrap_or_else(|_| "{}".into())
}

fn fenced(key: &CheckpointKey, holder: i64) -> WriteError {
    WriteError::Fatal(format!(
        "{CHECKPOINT_TABLE}: execution {holder} of job {} (instance {}) holds step {}; \
         execution {} is stale and writes nothing",
        key.job, key.instance_id, key.step, key.execution_id
    ))
}

#[async_trait]
impl CheckpointStore for SqlWriter {
    async fn claim(
        &mut self,
        key: &CheckpointKey,
        fresh: bool,
    ) -> Result<Option<TargetCheckpoint>, WriteError> {
        // The kept connection back to the pool (of one, on SQLite).
        self.held = Held::default();
        self.connect().await?;
        let db = self.pool.as_ref().ok_or_else(not_open)?;
        if !self.checkpoint_table {
            match db.execute_script(&create_sql(self.kind)).await {
                Ok(_) => {}
                // Two writers creating it at once (PostgreSQL): it exists.
                Err(e) if sluice_sql::is_already_exists(&e) => {}
                Err(e) => {
                    let hint = "the SQL writer keeps the step's checkpoint in this table of \
                                the target database: let its user create it, or create it \
                                ahead (docs/batch-repository.md)";
                    return Err(match claim_error(e) {
                        WriteError::Fatal(m) => WriteError::Fatal(format!("{m} ({hint})")),
                        other => other,
                    });
                }
            }
            self.checkpoint_table = true;
        }
        let mut tx = db.begin_write().await.map_err(claim_error)?;
        let claimed = self.claim_row(&mut tx, key, fresh).await?;
        tx.commit().await.map_err(claim_error)?;
        Ok(claimed)
    }

    fn store_statements(
        &self,
        key: &CheckpointKey,
        checkpoint: &TargetCheckpoint,
    ) -> Vec<SqlStatement> {
        let sql = dialect(
            self.kind,
            &format!(
                "UPDATE {CHECKPOINT_TABLE} SET commits = ?, counts = ?, checkpoint = ? \
                 WHERE {WHERE_KEY} AND execution_id = ?"
            ),
        );
        let mut args = vec![
            Arg::I64(to_i64(checkpoint.counts.commits)),
            Arg::Text(counts_json(&checkpoint.counts)),
            Arg::Text(checkpoint.checkpoint.to_string()),
        ];
        args.extend(key_args(key));
        args.push(Arg::I64(key.execution_id));
        vec![SqlStatement {
            sql,
            args,
            must_affect: true,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(
            dialect(DbKind::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(dialect(DbKind::MySql, "a = ? AND b = ?"), "a = ? AND b = ?");
        assert!(create_sql(DbKind::MySql).contains("MEDIUMTEXT"));
        assert!(
            create_sql(DbKind::Sqlite).starts_with("CREATE TABLE IF NOT EXISTS sluice_checkpoint")
        );
    }
}
