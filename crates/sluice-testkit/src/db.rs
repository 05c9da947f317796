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
        let sql = match server {
            Server::Postgres => format!("CREATE DATABASE {name}"),
            Server::MySql => format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
        };
        match run_as_admin(server, &admin, &sql).await {
            Ok(()) => {}
            Err(Failed::Connect(e)) => panic!("{} at {admin} ({how}): {e}", server.label()),
            Err(Failed::Run(e)) => panic!("{e}"),
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
                let sql = match server {
                    Server::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    Server::MySql => format!("DROP DATABASE IF EXISTS {name}"),
                };
                let _ = run_as_admin(server, &admin, &sql).await;
            });
        })
        .join();
    }
}

impl Server {
    /// The server's name in messages.
    fn label(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::MySql => "MariaDB/MySQL",
        }
    }
}

/// Why [`run_as_admin`] failed.
enum Failed {
    Connect(sqlx::Error),
    Run(sqlx::Error),
}

/// Runs one statement on a new connection to `server` at `admin`, then closes it.
async fn run_as_admin(server: Server, admin: &str, sql: &str) -> Result<(), Failed> {
    match server {
        Server::Postgres => run_on::<PgConnection>(admin, sql).await,
        Server::MySql => run_on::<MySqlConnection>(admin, sql).await,
    }
}

/// [`run_as_admin`] over a connection of type `C`.
async fn run_on<C>(admin: &str, sql: &str) -> Result<(), Failed>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c>,
{
    let mut conn = C::connect(admin).await.map_err(Failed::Connect)?;
    let ran = conn.execute(sql).await.map(drop).map_err(Failed::Run);
    let _ = conn.close().await;
    ran
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
