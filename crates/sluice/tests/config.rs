//! Config validation (issue #3 acceptance point 10): every mistake is reported
//! with file, line, column and key.

use std::path::PathBuf;
use std::sync::Arc;

use sluice::config::{Env, Source};

const GOOD: &str = r#"[server]
listen = "127.0.0.1:0"

[store]
kind = "memory"
max_bytes = "256MiB"

[[upstream]]
name = "airkorea"
base_url = "http://127.0.0.1:9/B552584/ArpltnInforInqireSvc"
secret_query = { serviceKey = { env = "AIRKOREA_KEY" } }
timeout = "5s"
retries = { max = 2, backoff = "200ms" }
concurrency = 8
rate_limit = { per_second = 10, per_day = 10000 }
ok_when = '.response.header.resultCode == "00"'

[[route]]
path = "/air/{*rest}"
upstream = "airkorea"
ttl = "10m"
stale_while_revalidate = "1m"
stale_if_error = "6h"
key_query = ["sidoName", "pageNo", "numOfRows", "returnType", "ver"]
"#;

fn check(text: &str) -> Result<(), String> {
    crate::support::init_logs();
    let src = Source {
        file: PathBuf::from("sluice.toml"),
        text: text.to_owned(),
    };
    let env = Env {
        var: &|n| (n == "AIRKOREA_KEY").then(|| "k".to_owned()),
        clock: Arc::new(sluice_core::SystemClock),
        secrets_optional: false,
    };
    let raw = src.parse().map_err(|e| e.to_string())?;
    raw.resolve(&src, &env)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_issue_example_is_valid() {
    check(GOOD).unwrap();
}

#[tokio::test]
async fn the_shipped_examples_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let src = Source::read(&path).unwrap();
            let env = Env {
                var: &|_| Some("example-secret-value-123".to_owned()),
                clock: Arc::new(sluice_core::SystemClock),
                secrets_optional: false,
            };
            let settings = src
                .parse()
                .and_then(|r| r.resolve(&src, &env))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let problems = sluice::runtime::check_all(&settings);
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected example configs in {}", dir.display());
}

/// Exact: the whole message is compared; otherwise its beginning.
enum Want {
    Exact(&'static str),
    Starts(&'static str),
}

#[test]
fn each_mistake_is_located_by_file_line_column_and_key() {
    use Want::{Exact, Starts};
    for (case, from, to, want) in [
        (
            "unknown key",
            "concurrency = 8",
            "concurency = 8",
            Starts("sluice.toml:14:1: upstream[0].concurency: unknown field `concurency`"),
        ),
        (
            "bad duration",
            "timeout = \"5s\"",
            "timeout = \"5 parsecs\"",
            Starts("sluice.toml:12:11: upstream[0].timeout: invalid duration \"5 parsecs\""),
        ),
        (
            "bad size",
            "\"256MiB\"",
            "\"256 lots\"",
            Starts("sluice.toml:6:13: store.max_bytes: invalid size"),
        ),
        (
            "missing environment variable",
            "AIRKOREA_KEY",
            "NO_SUCH_VAR",
            Exact(
                "sluice.toml:11:39: upstream[0].secret_query.serviceKey: environment variable NO_SUCH_VAR is not set",
            ),
        ),
        (
            "unknown upstream",
            "upstream = \"airkorea\"",
            "upstream = \"airkorae\"",
            Exact(
                "sluice.toml:20:12: route[0].upstream: unknown upstream \"airkorae\"; defined upstreams: airkorea",
            ),
        ),
        (
            "invalid jq predicate",
            "== \"00\"'",
            "== '",
            Starts("sluice.toml:16:11: upstream[0].ok_when: invalid jq expression"),
        ),
    ] {
        assert!(GOOD.contains(from), "{case}: GOOD has no {from:?}");
        let e = check(&GOOD.replace(from, to)).unwrap_err();
        match want {
            Exact(w) => assert_eq!(e, w, "{case}"),
            Starts(w) => assert!(e.starts_with(w), "{case}: {e}"),
        }
    }
}

#[test]
fn several_errors_are_reported_together() {
    let bad = GOOD
        .replace("AIRKOREA_KEY", "NO_SUCH_VAR")
        .replace("upstream = \"airkorea\"", "upstream = \"x\"");
    let e = check(&bad).unwrap_err();
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn other_mistakes_are_named() {
    for (from, to, needle) in [
        (
            "kind = \"memory\"",
            "kind = \"disk\"",
            "store.kind: unknown variant `disk`",
        ),
        (
            "http://127.0.0.1:9/",
            "ftp://127.0.0.1:9/",
            "base_url: base_url must be an http",
        ),
        (
            "ttl = \"10m\"",
            "ttl = \"forever\"",
            "route[0].ttl: invalid duration",
        ),
        (
            "per_day = 10000 }",
            "per_day = 10000, timezone = \"Mars/Olympus\" }",
            "unknown time zone",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"localhost\"",
            "server.listen: invalid address",
        ),
        (
            "path = \"/air/{*rest}\"",
            "path = \"air\"",
            "must start with '/'",
        ),
    ] {
        let e = check(&GOOD.replace(from, to)).unwrap_err();
        assert!(e.contains(needle), "{to}: {e}");
        assert!(e.starts_with("sluice.toml:"), "{e}");
    }
}

/// Asserts that `e` has exactly one line per entry of `each`, and a line
/// containing each entry (in any order).
fn reports(e: &str, each: &[&str]) {
    assert_eq!(e.lines().count(), each.len(), "{e}");
    for want in each {
        assert!(
            e.lines().any(|l| l.contains(want)),
            "wanted {want:?} in\n{e}"
        );
    }
}

/// GOOD with `store` as its `[store]` keys (GOOD's `max_bytes` is the memory
/// store's: each kind gets its own keys only).
fn store(keys: &str) -> String {
    GOOD.replace("kind = \"memory\"\nmax_bytes = \"256MiB\"", keys)
}

#[tokio::test]
async fn store_and_cluster_mistakes_are_named() {
    for (text, needle) in [
        (
            store("kind = \"redis\""),
            "store.url: store kind \"redis\" needs url",
        ),
        (
            store("kind = \"redis\"\nurl = \"memcache://127.0.0.1:11211\""),
            "store.url: memcache://127.0.0.1:11211 is not a Redis URL",
        ),
        (
            store("kind = \"memcached\"\nurl = \"redis://127.0.0.1:6379\""),
            "a memcached store needs url = \"memcache://host:port\"",
        ),
        (
            store("kind = \"memcached\"\nurl = \"memcache://nowhere\""),
            "must be memcache://host:port",
        ),
        (
            store("kind = \"redis\"\nurls = [\"redis://a:1\", \"redis://b:2\"]"),
            "store.urls: several Redis URLs need cluster = true",
        ),
        (
            store("kind = \"redis\"\nurl = \"redis://a:1\"\nurls = [\"redis://b:2\"]"),
            "give either url or urls, not both",
        ),
        (
            store("kind = \"tiered\"\nurl = \"redis://a:1\"\nnamespace = \"two words\""),
            "store.namespace: namespace \"two words\" must be",
        ),
        (
            store("kind = \"memory\"\nurl = \"redis://a:1\""),
            "store.url: unknown field `url`",
        ),
        (
            format!("{GOOD}\n[cluster]\ncoalesce = true\n"),
            "cluster.coalesce: needs a Redis",
        ),
        (
            format!(
                "{}\n[cluster]\nlock_ttl = \"10ms\"\n",
                store("kind = \"redis\"\nurl = \"redis://a:1\"")
            ),
            "cluster.lock_ttl: lock_ttl must be at least 100ms",
        ),
        (
            store("kind = \"redis\"\nurl = \"redis://a:1\"\npassword = { env = \"NO_SUCH_VAR\" }"),
            "store.password: environment variable NO_SUCH_VAR is not set",
        ),
        (
            store(
                "kind = \"redis\"\ncluster = true\nurls = [\"redis://u:hunter2@a:1\", \"http://u:hunter2@b:2\"]",
            ),
            "http://u:***@b:2 is not a Redis URL",
        ),
    ] {
        let e = check(&text).unwrap_err();
        assert!(e.contains(needle), "{needle}\n---\n{e}");
        assert!(e.starts_with("sluice.toml:"), "{e}");
        assert!(!e.contains("hunter2"), "a password leaked: {e}");
    }
    // The good shared configurations resolve (connections are lazy: no server needed).
    for ok in [
        store("kind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nnamespace = \"prod\""),
        store("kind = \"redis\"\ncluster = true\nurls = [\"redis://a:1\", \"redis://b:2\"]"),
        store("kind = \"memcached\"\nurl = \"memcache://127.0.0.1:1\"\nmax_item_size = \"1MiB\""),
        store("kind = \"tiered\"\nurl = \"rediss://user:pw@127.0.0.1:1\"\nl1_ttl = \"2s\""),
        format!(
            "{}\n[cluster]\nredis_url = \"redis://127.0.0.1:1\"\nlock_ttl = \"3s\"\n",
            store("kind = \"tiered\"\nurl = \"memcache://127.0.0.1:1\"")
        ),
    ] {
        check(&ok).unwrap_or_else(|e| panic!("{ok}\n---\n{e}"));
    }
}

#[tokio::test]
async fn a_key_of_another_store_kind_is_refused_where_it_is() {
    for (text, expected) in [
        (
            store("kind = \"redis\"\nurl = \"redis://a:1\"\npool_size = 4"),
            "sluice.toml:7:1: store.pool_size: unknown field `pool_size`",
        ),
        (
            store("kind = \"memory\"\nl1_ttl = \"5s\""),
            "sluice.toml:6:1: store.l1_ttl: unknown field `l1_ttl`",
        ),
        // Without `kind`, the store is memory.
        (
            store("max_bytes = \"1MiB\"\nurl = \"redis://a:1\""),
            "sluice.toml:6:1: store.url: unknown field `url`",
        ),
        (
            store("kind = \"memcached\"\nurl = \"memcache://a:1\"\ncluster = true"),
            "sluice.toml:7:1: store.cluster: unknown field `cluster`",
        ),
        (
            store("kind = \"disk\""),
            "sluice.toml:5:8: store.kind: unknown variant `disk`",
        ),
    ] {
        let e = check(&text).unwrap_err();
        assert!(e.starts_with(expected), "{expected}\n---\n{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // The kinds' own keys, `kind` left out, and no [store] at all.
    for ok in [
        store("max_bytes = \"1MiB\"\nmax_body = \"1KiB\""),
        store(""),
        GOOD.replace("[store]\nkind = \"memory\"\nmax_bytes = \"256MiB\"\n", ""),
        store(
            "kind = \"tiered\"\nurl = \"memcache://127.0.0.1:1\"\nmax_bytes = \"1MiB\"\nl1_ttl = \"1s\"\nmax_body = \"1KiB\"\nnamespace = \"t\"\ntimeout = \"1s\"\nmax_item_size = \"1MiB\"\npool_size = 2\n\n[cluster]\nredis_url = \"redis://127.0.0.1:1\"",
        ),
        store(
            "kind = \"memcached\"\nurl = \"memcache://127.0.0.1:1\"\nnamespace = \"m\"\ntimeout = \"1s\"\npool_size = 2\npassword = { env = \"AIRKOREA_KEY\" }\n\n[cluster]\nredis_url = \"redis://127.0.0.1:1\"",
        ),
    ] {
        check(&ok).unwrap_or_else(|e| panic!("{ok}\n---\n{e}"));
    }
}

#[test]
fn trigger_and_queue_mistakes_are_named() {
    let job = |trigger: &str| {
        format!(
            "[[job]]\nname = \"j\"\n[[job.step]]\nname = \"s\"\ntasklet = {{ kind = \"shell\", command = \"true\" }}\n[[job.trigger]]\n{trigger}\n"
        )
    };
    let cases = [
        (
            job("kind = \"cron\"\ncron = \"61 * * * *\""),
            "job[0].trigger[0].cron",
            "61 * * * *",
        ),
        (
            job("kind = \"cron\"\ncron = \"0 20 * * * *\"\ntimezone = \"Asia/Seol\""),
            "job[0].trigger[0].timezone",
            "Asia/Seoul",
        ),
        (
            job("kind = \"every\"\nevery = \"15m\"\ncron = \"@daily\""),
            "job[0].trigger[0].cron",
            "unknown field `cron`",
        ),
        (
            job("kind = \"every\"\nevery = \"0s\""),
            "job[0].trigger[0].every",
            "0s",
        ),
        (
            job("kind = \"at\"\nat = \"tomorrow\""),
            "job[0].trigger[0].at",
            "tomorrow",
        ),
        (
            job("cron = \"0 * * * *\""),
            "job[0].trigger[0].kind",
            "add kind = \"cron\"",
        ),
        (
            job("kind = \"hourly\""),
            "job[0].trigger[0].kind",
            "unknown trigger kind \"hourly\"",
        ),
        (
            job("kind = \"every\"\nevery = \"1m\"\nmisfire = \"sometimes\""),
            "job[0].trigger[0].misfire",
            "sometimes",
        ),
        (
            job("kind = \"every\"\nevery = \"1m\"\noverlap = \"maybe\""),
            "job[0].trigger[0].overlap",
            "maybe",
        ),
        (
            job("kind = \"every\"\nevery = \"1m\"\ntimezone = \"UTC\""),
            "job[0].trigger[0].timezone",
            "unknown field `timezone`",
        ),
        (
            format!(
                "[queue]\nurl = \"mysql://root@localhost/x\"\n{}",
                job("kind = \"every\"\nevery = \"1m\"")
            ),
            "queue.url",
            "must start with sqlite://, postgres://, redis://",
        ),
        (
            format!(
                "[queue]\nconcurrency = {{ jobs = 0 }}\n{}",
                job("kind = \"every\"\nevery = \"1m\"")
            ),
            "queue.concurrency.jobs",
            "1 to 10000",
        ),
    ];
    for (text, key, what) in cases {
        let e = check(&text).unwrap_err();
        assert!(e.contains(key) && e.contains(what), "{text}\n→ {e}");
        assert!(e.contains("sluice.toml:"), "located: {e}");
    }
    // Partitions only where the reader can be split.
    let e = check(
        "[[job]]\nname = \"p\"\n[[job.step]]\nname = \"s\"\npartitions = 4\nreader = { kind = \"json\", path = \"a.json\" }\nwriter = { kind = \"jsonl\", path = \"b.jsonl\" }\n",
    )
    .unwrap_err();
    assert!(e.contains("partitions") && e.contains("\"json\""), "{e}");
}

/// GOOD with `extra` added to its route and the upstream given a secret header.
fn route_with(extra: &str) -> String {
    GOOD.replace(
        "timeout = \"5s\"",
        "secret_headers = { \"X-Api-Key\" = { env = \"AIRKOREA_KEY\" } }\ntimeout = \"5s\"",
    )
    .replace(
        "key_query = [\"sidoName\", \"pageNo\", \"numOfRows\", \"returnType\", \"ver\"]",
        extra,
    )
}

#[test]
fn routes_that_let_clients_steer_the_upstream_are_refused() {
    for (extra, want) in [
        (
            "key_query = [\"sidoName\", \"SERVICEKEY\"]",
            "route[0].key_query: \"SERVICEKEY\" is a secret parameter of upstream airkorea",
        ),
        (
            "query = { servicekey = \"x\" }",
            "route[0].query: \"servicekey\" is a secret parameter",
        ),
        (
            "vary = [\"Accept\", \"X-API-KEY\"]",
            "sluice.toml:25:19: route[0].vary: \"x-api-key\" is a secret header",
        ),
        (
            "vary = [\"Host\"]",
            "route[0].vary: \"host\" is a hop-by-hop or framing header",
        ),
        ("vary = [\"connection\"]", "\"connection\" is a hop-by-hop"),
        (
            "vary = [\"Transfer-Encoding\"]",
            "\"transfer-encoding\" is a hop-by-hop",
        ),
        (
            "vary = [\"Content-Length\"]",
            "\"content-length\" is a hop-by-hop",
        ),
        ("vary = [\"TE\"]", "\"te\" is a hop-by-hop"),
        ("vary = [\"Upgrade\"]", "\"upgrade\" is a hop-by-hop"),
        ("vary = [\"Keep-Alive\"]", "\"keep-alive\" is a hop-by-hop"),
        (
            "vary = [\"Proxy-Authorization\"]",
            "\"proxy-authorization\" is a hop-by-hop",
        ),
        (
            "upstream_path = \"/x/{id}\"",
            "sluice.toml:25:17: route[0].upstream_path: {id} is not a parameter of the route path \"/air/{*rest}\" (it has: rest)",
        ),
        (
            "upstream_path = \"/x/../{rest}\"",
            "route[0].upstream_path: \"/x/../{rest}\" has a '.' or '..' segment",
        ),
        (
            "upstream_path = \"/x/%2e/{rest}\"",
            "has a '.' or '..' segment",
        ),
        ("upstream_path = \"/x/{rest\"", "has a '{' without a '}'"),
    ] {
        let e = check(&route_with(extra)).unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
    // Harmless neighbours are accepted.
    check(&route_with(
        "vary = [\"Accept-Language\"]\nupstream_path = \"/get/{rest}\"\nquery = { returnType = \"json\" }",
    ))
    .unwrap();
}

#[test]
fn routes_on_reserved_paths_are_refused() {
    for path in [
        "/admin/{*rest}",
        "/api/x",
        "/api",
        "/metrics",
        "/healthz/{id}",
        "/readyz",
        "/ui/{*rest}",
    ] {
        let e = check(&GOOD.replace("/air/{*rest}", path)).unwrap_err();
        assert!(
            e.contains("route[0].path:") && e.contains("which sluice serves itself"),
            "{path}: {e}"
        );
    }
    for ok in ["/apix/{*rest}", "/{*rest}", "/uix"] {
        check(&GOOD.replace("/air/{*rest}", ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn inline_secrets_are_refused_without_repeating_them() {
    for inline in [
        "\"my-inline-key-123\"",
        "12345678",
        "true",
        "[\"my-inline-key-123\"]",
    ] {
        let e = check(&GOOD.replace(
            "{ serviceKey = { env = \"AIRKOREA_KEY\" } }",
            &format!("{{ serviceKey = {inline} }}"),
        ))
        .unwrap_err();
        assert!(
            e.starts_with(
                "sluice.toml:11:31: upstream[0].secret_query: a secret is never written inline"
            ),
            "{inline}: {e}"
        );
        assert!(
            e.contains("{ env = \"NAME\" } or { file = \"PATH\" }"),
            "{e}"
        );
        assert!(
            !e.contains("my-inline-key") && !e.contains("12345678"),
            "{e}"
        );
    }
}

#[test]
fn parse_errors_name_the_table_they_are_in() {
    // A missing field is reported at the table's header, as that table.
    let e = check(&GOOD.replace("path = \"/air/{*rest}\"\n", "")).unwrap_err();
    assert_eq!(e, "sluice.toml:18:1: route[0]: missing field `path`");
    // The second of two routes is route[1].
    let two =
        format!("{GOOD}\n[[route]]\npath = \"/b/{{*rest}}\"\nupstream = \"airkorea\"\nttl = 5\n");
    let e = check(&two).unwrap_err();
    assert!(e.starts_with("sluice.toml:29:7: route[1].ttl:"), "{e}");
}

#[test]
fn a_broken_upstream_does_not_cascade_into_its_routes() {
    let e = check(&GOOD.replace("http://127.0.0.1:9/B552584/ArpltnInforInqireSvc", "ftp://x"))
        .unwrap_err();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("upstream[0].base_url"), "{e}");
    assert!(!e.contains("unknown upstream"), "{e}");
}

#[test]
fn three_broken_places_give_three_located_lines() {
    // A bad duration in the upstream, an unknown key in the route, a zero
    // concurrency in the queue: three parts, each reported, each located.
    let bad = format!(
        "{}\n[queue]\nconcurrency = {{ jobs = 0 }}\n",
        GOOD.replace("timeout = \"5s\"", "timeout = \"5 parsecs\"")
            .replace("ttl = \"10m\"", "ttl = \"10m\"\ncolour = 1")
    );
    let e = check(&bad).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    for want in [
        "sluice.toml:12:11: upstream[0].timeout: invalid duration",
        "sluice.toml:22:1: route[0].colour: unknown field `colour`",
        "queue.concurrency.jobs: concurrency must be 1 to 10000",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}\n---\n{e}");
    }
    for l in &lines {
        let at = l.strip_prefix("sluice.toml:").unwrap_or("");
        let mut parts = at.splitn(3, ':');
        assert!(
            parts.next().is_some_and(|n| n.parse::<usize>().is_ok())
                && parts.next().is_some_and(|n| n.parse::<usize>().is_ok()),
            "not located: {l}"
        );
    }
}

#[test]
fn tables_inside_steps_and_triggers_are_each_reported_with_their_key() {
    let text = "[[job]]\nname = \"a\"\n[[job.step]]\nname = \"s\"\ntasklet = { kind = \"shell\", command = \"true\" }\n\
                [[job]]\nname = \"b\"\n[[job.step]]\nname = \"s\"\ntasklet = { kind = \"shell\", command = \"true\" }\n\
                [[job.step]]\nname = \"t\"\nchunk = \"big\"\n[[job.trigger]]\nkind = \"every\"\nevery = \"1m\"\nsoon = true\n";
    let e = check(text).unwrap_err();
    reports(
        &e,
        &[
            "sluice.toml:13:9: job[1].step[1].chunk: invalid type",
            "sluice.toml:17:1: job[1].trigger[0].soon: unknown field `soon`",
        ],
    );
}

#[test]
fn a_trigger_without_kind_or_with_a_key_of_another_kind_is_located() {
    let head = "[[job]]\nname = \"a\"\n[[job.step]]\nname = \"s\"\ntasklet = { kind = \"shell\", command = \"true\" }\n";
    let e = check(&format!(
        "{head}[[job.trigger]]\ncron = \"0 * * * *\"\n[[job.trigger]]\nkind = \"every\"\nevery = \"1m\"\ntimezone = \"UTC\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.lines().count(), 2, "{e}");
    // The trigger's table is where the key is missing.
    assert!(
        e.contains("sluice.toml:6:1: job[0].trigger[0].kind: missing `kind`: add kind = \"cron\""),
        "{e}"
    );
    assert!(
        e.contains("sluice.toml:11:1: job[0].trigger[1].timezone: unknown field `timezone`"),
        "{e}"
    );
    // Checks of a kind's values, once every trigger of the job parses.
    let e = check(&format!(
        "{head}[[job.trigger]]\nkind = \"watch\"\nwatch = \"/tmp\"\nsettle = \"soon\"\noverlap = \"queue\"\n"
    ))
    .unwrap_err();
    reports(
        &e,
        &[
            "sluice.toml:9:10: job[0].trigger[0].settle: trigger a#0: invalid settle \"soon\"",
            "job[0].trigger[0].overlap: trigger a#0: overlap applies to cron, every and at, not watch",
        ],
    );
}

#[test]
fn semantic_checks_are_located() {
    for (from, to, want) in [
        (
            "concurrency = 8",
            "concurrency = 0",
            "sluice.toml:14:15: upstream[0].concurrency: concurrency must be at least 1",
        ),
        (
            "timeout = \"5s\"",
            "secret_headers = { \"bad header\" = { env = \"AIRKOREA_KEY\" } }",
            "sluice.toml:12:35: upstream[0].secret_headers.bad header: \"bad header\" is not a valid header name",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nadmin_token = { env = \"AIRKOREA_KEY\" }",
            "sluice.toml:3:15: server.admin_token: the admin token must be at least 16 characters",
        ),
    ] {
        let e = check(&GOOD.replace(from, to)).unwrap_err();
        assert_eq!(e, want);
    }
}

#[test]
fn an_upstream_that_does_not_parse_does_not_cascade_either() {
    // The inline secret breaks upstream[0] while parsing; its route says nothing.
    let e = check(&GOOD.replace(
        "{ serviceKey = { env = \"AIRKOREA_KEY\" } }",
        "{ serviceKey = \"inline-key-123\" }",
    ))
    .unwrap_err();
    reports(&e, &["{ env = \"NAME\" } or { file = \"PATH\" }"]);
    // A missing route path is a route[N] error, and the second route keeps its
    // index when the first is broken.
    let two = format!(
        "{}\n[[route]]\npath = \"/b/{{*rest}}\"\nupstream = \"nope\"\nttl = \"1m\"\n",
        GOOD.replace("path = \"/air/{*rest}\"\n", "")
    );
    let e = check(&two).unwrap_err();
    assert!(e.contains("route[0]: missing field `path`"), "{e}");
    assert!(
        e.contains("route[1].upstream: unknown upstream \"nope\""),
        "{e}"
    );
    assert_eq!(e.lines().count(), 2, "{e}");
}
