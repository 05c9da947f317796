//! Scratch databases for tests: one per test on the PostgreSQL and MariaDB/MySQL
//! servers named by `SLUICE_TEST_POSTGRES_URL` / `SLUICE_TEST_MYSQL_URL` (defaults
//! `postgres://postgres@127.0.0.1:5432/postgres` and
//! `mysql://root@127.0.0.1:3306/test`; `scripts/test` starts both), dropped when the
//! value is dropped, even if the test panics. A server that cannot be reached fails
//! the test with a message saying how to reach one; nothing is skipped.

use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// The server of a [`ServerDb`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL at `SLUICE_TEST_POSTGRES_URL`.
    Postgres,
    /// MariaDB or MySQL at `SLUICE_TEST_MYSQL_URL`.
    MySql,
}

/// A database created for one test.
pub struct ServerDb {
    /// URL of the test's own database.
    pub url: String,
    server: Server,
    admin: String,
    name: String,
}

impl ServerDb {
    /// A fresh database named `{prefix}_{random}`.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached, saying how to reach one.
    pub async fn new(server: Server, prefix: &str) -> ServerDb {
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let admin = admin_url(server);
        let how = "set SLUICE_TEST_POSTGRES_URL / SLUICE_TEST_MYSQL_URL, or run scripts/test";
        match server {
            Server::Postgres => {
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} ({how}): {e}"));
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let _ = conn.close().await;
            }
            Server::MySql => {
                let mut conn = MySqlConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("MariaDB/MySQL at {admin} ({how}): {e}"));
                conn.execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str())
                    .await
                    .unwrap();
                let _ = conn.close().await;
            }
        }
        ServerDb {
            url: with_database(&admin, &name),
            server,
            admin,
            name,
        }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let (server, admin, name) = (self.server, self.admin.clone(), self.name.clone());
        // Drop may run inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                match server {
                    Server::Postgres => {
                        if let Ok(mut conn) = PgConnection::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = conn.execute(sql.as_str()).await;
                            let _ = conn.close().await;
                        }
                    }
                    Server::MySql => {
                        if let Ok(mut conn) = MySqlConnection::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name}");
                            let _ = conn.execute(sql.as_str()).await;
                            let _ = conn.close().await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

/// The admin URL of `server`, from the environment or its default.
pub fn admin_url(server: Server) -> String {
    match server {
        Server::Postgres => std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Server::MySql => std::env::var("SLUICE_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
    }
}

/// `url` with its database (path) replaced by `db`, keeping any query.
pub fn with_database(url: &str, db: &str) -> String {
    let auth = url.find("://").map_or(0, |i| i + 3);
    let (base, rest) = match url[auth..].find('/') {
        Some(i) => url.split_at(auth + i),
        None => match url[auth..].find('?') {
            Some(i) => url.split_at(auth + i),
            None => (url, ""),
        },
    };
    let query = rest.find('?').map_or("", |i| &rest[i..]);
    format!("{base}/{db}{query}")
}
