//! Property tests over untrusted input: XML → JSON, the body parser, `ok_when`,
//! key canonicalisation, the path checks, upstream URLs and the secret scrubber.
//!
//! Case counts are set per property; `PROPTEST_CASES` overrides them all.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sluice_core::{LocalQuota, Scrubber, Secret, SystemClock};
use sluice_gateway::key::{canonical_path, canonical_query, join_query};
use sluice_upstream::{
    BodyError, MAX_DEPTH, OkWhen, Upstream, UpstreamSpec, parse_json_or_xml, xml_to_json,
};

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A random XML-ish document: nested elements with random names, attributes,
/// text, CDATA and entities, sometimes broken.
fn xmlish() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z]{0,6}".prop_map(|t| t),
        Just("&amp;&lt;&#65;&#x42;".to_owned()),
        Just("<![CDATA[<x>]]>".to_owned()),
        Just("<e/>".to_owned()),
        Just("<e a=\"1\" b='&quot;'/>".to_owned()),
        Just("&bogus;".to_owned()),
        Just("</".to_owned()),
        Just("<".to_owned()),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        (
            "[a-zA-Z_][a-zA-Z0-9_.-]{0,5}",
            prop::collection::vec(inner, 0..4),
            any::<bool>(),
        )
            .prop_map(|(name, kids, attr)| {
                let a = if attr { " k=\"v\"" } else { "" };
                format!("<{name}{a}>{}</{name}>", kids.concat())
            })
    })
}

fn nested(n: usize) -> String {
    format!("{}x{}", "<a>".repeat(n), "</a>".repeat(n))
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn xml_to_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = xml_to_json(&bytes);
        let _ = parse_json_or_xml(&bytes, None);
        let _ = parse_json_or_xml(&bytes, Some(b"application/json"));
    }

    #[test]
    fn xml_to_json_never_panics_on_xmlish(doc in xmlish()) {
        if let Ok(v) = xml_to_json(doc.as_bytes()) {
            prop_assert!(v.is_object());
        }
    }

    #[test]
    fn ok_when_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let ok = OkWhen::compile(r#".response.header.resultCode == "00""#).unwrap();
        let _ = ok.check(&bytes);
    }

    #[test]
    fn canonical_paths_are_idempotent_and_safe(raw in "/[ -~]{0,40}") {
        if let Ok(p) = canonical_path(&raw) {
            prop_assert_eq!(canonical_path(&p).unwrap(), p.clone());
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains("//"), "{}", p);
            prop_assert!(!p.contains('\\'));
            prop_assert!(!p.contains('@'));
            prop_assert!(!p.contains(' '));
            for seg in p.split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", p);
                let upper = seg.to_ascii_uppercase();
                prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{}", p);
            }
        }
    }

    #[test]
    fn percent_encoding_variants_give_one_path(seg in "[a-zA-Z0-9~._-]{1,12}") {
        prop_assume!(seg != "." && seg != "..");
        let encoded: String = seg.bytes().map(|b| format!("%{b:02X}")).collect();
        let lower = encoded.to_ascii_lowercase();
        let a = canonical_path(&format!("/r/{seg}")).unwrap();
        prop_assert_eq!(&canonical_path(&format!("/r/{encoded}")).unwrap(), &a);
        prop_assert_eq!(&canonical_path(&format!("/r/{lower}")).unwrap(), &a);
    }

    #[test]
    fn dot_segments_are_refused_in_every_encoding(
        dots in prop_oneof![Just("."), Just("..")],
        upper in any::<bool>(),
        before in "[a-z]{0,3}",
    ) {
        let enc: String = dots
            .chars()
            .map(|_| if upper { "%2E" } else { "%2e" })
            .collect();
        for form in [dots.to_owned(), enc] {
            let p = if before.is_empty() { format!("/{form}/x") } else { format!("/{before}/{form}/x") };
            prop_assert!(canonical_path(&p).is_err(), "{} was accepted", p);
        }
    }

    #[test]
    fn canonical_queries_ignore_order_and_encoding(
        pairs in prop::collection::vec(("[a-zA-Z0-9 +%/=&]{1,8}", "[ -~]{0,10}"), 0..6),
        rot in 0usize..6,
    ) {
        let enc = |s: &str| sluice_upstream::encode_component(s);
        let pieces: Vec<String> = pairs.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
        let a = canonical_query(Some(&pieces.join("&"))).unwrap();
        let mut rotated = pieces.clone();
        if !rotated.is_empty() {
            let k = rot % rotated.len();
            rotated.rotate_left(k);
        }
        let b = canonical_query(Some(&rotated.join("&"))).unwrap();
        prop_assert_eq!(&a, &b);
        // Canonical output is a fixed point and never holds a separator.
        let joined = join_query(&a);
        prop_assert_eq!(&canonical_query(Some(&joined)).unwrap(), &a);
        for p in &a {
            prop_assert!(!p.name.contains(['&', '=', ' ', '+']));
            prop_assert!(!p.value.contains(['&', '=', ' ', '+']));
        }
    }

    #[test]
    fn upstream_urls_never_leave_the_origin(raw in "/[ -~]{0,40}", q in "[ -~]{0,30}") {
        let up = upstream();
        if let (Ok(p), Ok(params)) = (canonical_path(&raw), canonical_query(Some(&q))) {
            let url = up.url_for(&p, &join_query(&params)).unwrap();
            prop_assert_eq!(url.host_str(), Some("127.0.0.1"));
            prop_assert_eq!(url.port(), Some(9));
            prop_assert!(url.path().starts_with("/base"), "{}", url);
            prop_assert!(url.username().is_empty());
        }
    }

    #[test]
    fn every_form_of_a_secret_is_scrubbed(
        secret in "[ -~]{8,24}",
        forms in prop::collection::vec(0u8..5, 24),
        before in "[a-z ]{0,10}",
        after in "[a-z ]{0,10}",
    ) {
        // Each byte raw, %XX upper, %xx lower, %25XX, or (for '/') JSON-escaped.
        let mut wire = String::new();
        for (b, f) in secret.bytes().zip(forms.iter().cycle()) {
            match f {
                0 => wire.push(b as char),
                1 => wire.push_str(&format!("%{b:02X}")),
                2 => wire.push_str(&format!("%{b:02x}")),
                3 => wire.push_str(&format!("%25{b:02X}")),
                _ if b == b'/' => wire.push_str("\\/"),
                _ if b == b' ' => wire.push('+'),
                _ => wire.push(b as char),
            }
        }
        let s = Scrubber::new([secret.as_str()]);
        let text = format!("{before}{wire}{after}");
        let out = s.scrub(&text);
        prop_assert!(out.contains("[redacted]"), "{} -> {}", text, out);
        prop_assert!(!s.contains(out.as_bytes()), "{} -> {}", text, out);
        prop_assert!(!out.contains(&secret));
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn depth_decides_xml_and_json(n in 1usize..20_000) {
        let r = xml_to_json(nested(n).as_bytes());
        prop_assert_eq!(r.is_ok(), n <= MAX_DEPTH, "xml depth {}", n);
        if n > MAX_DEPTH {
            let deep = matches!(r, Err(BodyError::TooDeep { .. }));
            prop_assert!(deep, "depth {} gave {:?}", n, r.err());
        }
        let json = format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let r = parse_json_or_xml(json.as_bytes(), None);
        // serde_json counts the outermost array as level 1 of 128.
        prop_assert_eq!(r.is_ok(), n <= MAX_DEPTH, "json depth {}", n);
    }
}

fn upstream() -> Upstream {
    Upstream::new(UpstreamSpec {
        name: "p".into(),
        base_url: "http://127.0.0.1:9/base".parse().unwrap(),
        secret_query: vec![("serviceKey".into(), Secret::new("k+y/=="))],
        secret_headers: Vec::new(),
        timeout: Duration::from_secs(1),
        retries: Default::default(),
        concurrency: 1,
        quota: Arc::new(LocalQuota::new(
            None,
            None,
            chrono_tz::UTC,
            Arc::new(SystemClock),
        )),
        ok_when: None,
        retry_codes: Vec::new(),
        quota_codes: Vec::new(),
        max_response_bytes: 1 << 20,
        preset: None,
        normalize: false,
        code_meanings: Default::default(),
    })
    .unwrap()
}
