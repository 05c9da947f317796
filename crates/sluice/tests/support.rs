//! Test harness: a simulated upstream and a gateway built from TOML, on free
//! ports, with a manual clock and captured logs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sluice::config::{Env, Source};
use sluice::serve::{self, Running};
use sluice_core::ManualClock;
use sluice_testkit::{SimConfig, SimUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The raw service key every harness uses; tests grep for it.
pub(crate) const KEY: &str = "tEsT+sEcReT/kEy==";
/// The key as the upstream must receive it: percent-encoded exactly once.
pub(crate) const KEY_ENCODED: &str = "tEsT%2BsEcReT%2FkEy%3D%3D";
/// The admin token.
pub(crate) const ADMIN: &str = "admin-token-0123456789";
/// A header secret (`{ env = "HEADER_KEY" }`), beside the query secret `KEY`.
pub(crate) const HEADER_KEY: &str = "hdr/Secret+Value==0123";

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of the test process (debug level) for secret greps.
pub(crate) fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,reqwest=info,h2=info")
            .with_writer(move || w.clone())
            .with_ansi(false)
            .try_init();
        sluice::init_tls();
        buf
    })
    .clone()
}

/// Everything logged so far.
pub(crate) fn logs() -> String {
    String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned()
}

/// A running simulated upstream and a gateway node in front of it (the node's
/// fields and methods are the harness's: `h.base`, `h.get(…)`).
pub(crate) struct Harness {
    pub(crate) sim: SimUpstream,
    pub(crate) node: Node,
}

impl std::ops::Deref for Harness {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// Default pieces of the config; `{SIM}` is replaced by the sim's base URL and
/// `{ORIGIN}` by `http://127.0.0.1:PORT`.
pub(crate) const UPSTREAM: &str = r#"
[[upstream]]
name = "airkorea"
base_url = "{SIM}"
secret_query = { serviceKey = { env = "AIRKOREA_KEY" } }
timeout = "2s"
retries = { max = 0, backoff = "10ms" }
concurrency = 64
ok_when = '.response.header.resultCode == "00"'
"#;

pub(crate) const ROUTE: &str = r#"
[[route]]
name = "air"
path = "/air/{*rest}"
upstream = "airkorea"
ttl = "10m"
stale_while_revalidate = "1m"
stale_if_error = "6h"
key_query = ["sidoName", "pageNo", "numOfRows", "returnType", "ver"]
"#;

/// An `[[upstream]]` table: `name` at `base_url`, no retries, `timeout`, then
/// the `extra` lines (secrets, `ok_when`).
pub(crate) fn upstream_toml(name: &str, base_url: &str, timeout: &str, extra: &str) -> String {
    format!(
        "\n[[upstream]]\nname = \"{name}\"\nbase_url = \"{base_url}\"\ntimeout = \"{timeout}\"\n\
         retries = {{ max = 0, backoff = \"10ms\" }}\n{extra}"
    )
}

/// A `[[route]]` table: `name` serves `path` from `upstream`, fresh for `ttl`,
/// then the `extra` lines.
pub(crate) fn route_toml(name: &str, path: &str, upstream: &str, ttl: &str, extra: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"{upstream}\"\nttl = \"{ttl}\"\n{extra}"
    )
}

impl Harness {
    /// Starts a sim with `sim_cfg` (its key forced to [`KEY`]) and a gateway
    /// configured by `config` (a TOML text with `{SIM}` placeholders).
    pub(crate) async fn start(mut sim_cfg: SimConfig, config: &str) -> Harness {
        init_logs();
        sim_cfg.service_key = KEY.into();
        let sim = SimUpstream::start(sim_cfg).await.unwrap();
        let node = Node::start(&sim, config).await;
        Harness { sim, node }
    }

    /// The default sim (10 ms latency) behind `UPSTREAM` + `ROUTE` + `extra`.
    pub(crate) async fn default_with(extra: &str) -> Harness {
        Self::start(fast_sim(), &format!("{UPSTREAM}{ROUTE}{extra}")).await
    }

    /// The default sim behind `UPSTREAM` + `ROUTE`, with `server` (lines of the
    /// `[server]` table) before them.
    pub(crate) async fn with_server(server: &str) -> Harness {
        Self::start(fast_sim(), &format!("{server}\n{UPSTREAM}{ROUTE}")).await
    }
}

impl Node {
    /// Starts one `GET` per path, all at once, and returns their tasks.
    pub(crate) fn spawn_gets(
        &self,
        paths: impl IntoIterator<Item = String>,
    ) -> Vec<tokio::task::JoinHandle<Resp>> {
        paths
            .into_iter()
            .map(|path| {
                let c = self.client.clone();
                let url = format!("{}{path}", self.base);
                tokio::spawn(async move { Resp::from(c.get(url).send().await.unwrap()).await })
            })
            .collect()
    }

    /// `GET base + path` with headers.
    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut r = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Resp::from(r.send().await.unwrap()).await
    }

    /// A `method` request for `base + path`.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// `method base + path` with `token` as bearer (or none) and a JSON `body`
    /// (or none), read.
    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let mut r = self.request(method, path);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        Resp::from(r.send().await.unwrap()).await
    }

    /// `POST /admin/purge` with a JSON `body` and `token` (or none), read.
    pub(crate) async fn purge(&self, body: &str, token: Option<&str>) -> Resp {
        self.admin(reqwest::Method::POST, "/admin/purge", token, Some(body))
            .await
    }
}

/// One gateway node, configured by a TOML text with `{SIM}`/`{ORIGIN}`
/// placeholders, in front of a sim that other nodes may share.
pub(crate) struct Node {
    pub(crate) gw: Running,
    pub(crate) gateway: sluice_gateway::Gateway,
    pub(crate) base: String,
    pub(crate) clock: ManualClock,
    pub(crate) client: reqwest::Client,
}

impl Node {
    pub(crate) async fn start(sim: &SimUpstream, config: &str) -> Node {
        Self::start_for(&sim.base_url(), &format!("http://{}", sim.addr()), config).await
    }

    /// A node whose `{SIM}` is `base_url` and `{ORIGIN}` is `origin`, for
    /// upstreams other than the simulator.
    pub(crate) async fn start_for(base_url: &str, origin: &str, config: &str) -> Node {
        init_logs();
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}")
            .replace("{SIM}", base_url)
            .replace("{ORIGIN}", origin);
        let clock = ManualClock::starting_now();
        let src = Source {
            file: PathBuf::from("test.toml"),
            text,
        };
        let env = Env {
            var: &|n| match n {
                "AIRKOREA_KEY" => Some(KEY.to_owned()),
                "ADMIN_TOKEN" => Some(ADMIN.to_owned()),
                "HEADER_KEY" => Some(HEADER_KEY.to_owned()),
                _ => None,
            },
            clock: Arc::new(clock.clone()),
            secrets_optional: false,
        };
        let settings = src
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
            .resolve(&src, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        let gateway = settings.gateway.clone();
        let gw = serve::start(settings).await.unwrap();
        let base = format!("http://{}", gw.addr);
        // Redirects reach the test as they are: the gateway passes them through.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Node {
            gw,
            gateway,
            base,
            clock,
            client,
        }
    }

    /// `GET base + path`.
    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.get_with(path, &[]).await
    }

    /// Asserts that `/metrics` contains `needle` (the page in the message).
    pub(crate) async fn expect_metric(&self, needle: &str) {
        let m = self.get("/metrics").await.body;
        assert!(m.contains(needle), "{m}");
    }
}

/// A sim answering in 10 ms.
pub(crate) fn fast_sim() -> SimConfig {
    SimConfig {
        latency: Duration::from_millis(10),
        ..Default::default()
    }
}

/// A read response.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn cache_status(&self) -> String {
        self.header("cache-status")
    }

    /// Asserts that `Cache-Status` contains `needle`; the message is `what` and
    /// the header.
    #[track_caller]
    pub(crate) fn expect_cache_status(&self, needle: &str, what: &str) {
        let cs = self.cache_status();
        assert!(cs.contains(needle), "{what}{cs}");
    }

    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Every header and the body as one text, for secret greps.
    pub(crate) fn everything(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
        }
        s.push_str(&self.body);
        s
    }
}

/// Sends raw bytes and returns the status code of the answer.
pub(crate) async fn raw_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// The air-quality path for a province.
pub(crate) fn air(sido: &str) -> String {
    format!("/air/getCtprvnRltmMesureDnsty?sidoName={sido}&returnType=json&numOfRows=10&pageNo=1")
}

/// Asserts a text holds no form of the secret.
pub(crate) fn assert_no_secret(what: &str, text: &str) {
    for form in [
        KEY,
        KEY_ENCODED,
        "tEsT+sEcReT",
        "sEcReT/kEy",
        "tEsT%2BsEcReT",
        "tEsT sEcReT",
    ] {
        assert!(
            !text.contains(form),
            "{what} contains the secret ({form}):\n{text}"
        );
    }
}
