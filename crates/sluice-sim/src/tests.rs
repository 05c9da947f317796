//! Tests that drive the simulator over real TCP with a minimal HTTP/1.1 client.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::*;

/// A parsed HTTP response.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        h.map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the response to EOF.
async fn send(addr: SocketAddr, method: &str, target: &str, body: &str) -> io::Result<Resp> {
    let s = TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = req.as_bytes();
    while !out.is_empty() {
        s.writable().await?;
        match s.try_write(out) {
            Ok(n) => out = &out[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let (mut raw, mut chunk) = (Vec::new(), [0u8; 8192]);
    loop {
        s.readable().await?;
        match s.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response head"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_owned(),
    })
}

async fn get(addr: SocketAddr, target: &str) -> Resp {
    send(addr, "GET", target, "").await.unwrap()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// The data-path target with the key encoded once, plus `extra` query parameters.
fn air(extra: &str) -> String {
    let key = enc(&SimConfig::default().service_key);
    format!("/B552584/ArpltnInforInqireSvc/{AIR_OPERATION}?serviceKey={key}&{extra}")
}

fn seoul(extra: &str) -> String {
    air(&format!("sidoName={}&returnType=json&{extra}", enc("서울")))
}

async fn sim(cfg: SimConfig) -> SimUpstream {
    SimUpstream::start(SimConfig {
        latency: Duration::ZERO,
        ..cfg
    })
    .await
    .unwrap()
}

fn gateway_code(r: &Resp) -> &str {
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with("<OpenAPI_ServiceResponse>"),
        "{}",
        r.body
    );
    let code = r.body.split("<returnReasonCode>").nth(1).unwrap();
    code.split('<').next().unwrap()
}

fn result_code(r: &Resp) -> String {
    assert_eq!(r.status, 200);
    r.json()["response"]["header"]["resultCode"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn json_success_paging_and_values() {
    let s = sim(SimConfig::default()).await;
    let r = get(s.addr(), &seoul("pageNo=2&numOfRows=10")).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(r.header("cache-control"), None);
    let v = r.json();
    let header = &v["response"]["header"];
    assert_eq!(header["resultCode"], "00");
    assert_eq!(header["resultMsg"], "NORMAL_SERVICE");
    let body = &v["response"]["body"];
    assert_eq!(
        (body["numOfRows"].as_u64(), body["pageNo"].as_u64()),
        (Some(10), Some(2))
    );
    assert_eq!(body["totalCount"].as_u64(), Some(40));
    let items = body["items"]["item"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert!(items[0]["stationName"].as_str().unwrap().ends_with("11"));
    assert_eq!(items[0]["sidoName"], "서울");
    assert_eq!(items[0]["dataTime"], "2024-05-01 14:00");
    for item in items {
        let obj = item.as_object().unwrap();
        assert!(obj.values().all(Value::is_string), "{item}");
        assert!(item["pm10Value"].as_str().unwrap().parse::<u32>().is_ok());
        assert!(item["o3Value"].as_str().unwrap().parse::<f64>().is_ok());
    }
    // Row 14 (index 13) is the 7th-row communication failure.
    assert_eq!(items[3]["pm25Value"], "-");
    assert_eq!(items[3]["pm25Flag"], "통신장애");
    assert!(
        items[2]["pm25Value"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .is_ok()
    );

    // Deterministic across calls; a partial last page.
    let again = get(s.addr(), &seoul("pageNo=2&numOfRows=10")).await;
    assert_eq!(again.body, r.body);
    let last = get(s.addr(), &seoul("pageNo=3&numOfRows=15")).await.json();
    assert_eq!(
        last["response"]["body"]["items"]["item"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // Defaults: page 1 of 10; numOfRows capped at 1000.
    let v = get(s.addr(), &seoul("")).await.json();
    assert_eq!(v["response"]["body"]["pageNo"].as_u64(), Some(1));
    assert_eq!(v["response"]["body"]["numOfRows"].as_u64(), Some(10));
    let v = get(s.addr(), &seoul("numOfRows=5000")).await.json();
    assert_eq!(v["response"]["body"]["numOfRows"].as_u64(), Some(1000));
}

#[tokio::test]
async fn empty_single_flat_and_xml_shapes() {
    let s = sim(SimConfig {
        rows_per_sido: 21,
        cache_control: Some("max-age=60".into()),
        ..SimConfig::default()
    })
    .await;
    let empty = get(s.addr(), &seoul("pageNo=9")).await;
    let body = &empty.json()["response"]["body"];
    assert_eq!(body["items"], "");
    assert_eq!(body["totalCount"].as_u64(), Some(21));

    let single = get(s.addr(), &seoul("pageNo=3&numOfRows=10")).await;
    assert_eq!(single.header("cache-control"), Some("max-age=60"));
    let item = &single.json()["response"]["body"]["items"]["item"];
    assert!(item.is_object(), "{item}");
    assert_eq!(item["pm25Value"], "-");

    // XML by default (no returnType), escaped and well formed enough to find fields.
    let xml = get(
        s.addr(),
        &air(&format!("sidoName={}&numOfRows=2", enc("A&B"))),
    )
    .await;
    assert_eq!(xml.header("content-type"), Some("text/xml;charset=UTF-8"));
    assert!(
        xml.body
            .contains("<resultCode>00</resultCode><resultMsg>NORMAL_SERVICE</resultMsg>")
    );
    assert!(xml.body.contains("<sidoName>A&amp;B</sidoName>"));
    assert_eq!(xml.body.matches("<item>").count(), 2);
    assert!(xml.body.ends_with(
        "<numOfRows>2</numOfRows><pageNo>1</pageNo><totalCount>21</totalCount></body></response>"
    ));

    let flat = sim(SimConfig {
        items_shape: ItemsShape::Flat,
        ..SimConfig::default()
    })
    .await;
    let v = get(flat.addr(), &seoul("numOfRows=1")).await.json();
    assert_eq!(v["response"]["body"]["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn key_is_decoded_exactly_once() {
    let s = sim(SimConfig::default()).await;
    let path = format!("/B552584/ArpltnInforInqireSvc/{AIR_OPERATION}");
    let rest = format!("sidoName={}&returnType=json", enc("서울"));
    for target in [
        format!("{path}?{rest}"),                           // missing
        format!("{path}?serviceKey=nope&{rest}"),           // wrong
        format!("{path}?serviceKey=sim+Key/with==&{rest}"), // raw: + → space
        format!("{path}?serviceKey={}&{rest}", enc(&enc("sim+Key/with=="))), // double
    ] {
        let r = get(s.addr(), &target).await;
        assert_eq!(gateway_code(&r), "30", "{target}");
        assert!(r.body.contains("SERVICE_KEY_IS_NOT_REGISTERED_ERROR"));
        assert!(r.header("content-type").unwrap().starts_with("text/xml"));
    }
    assert_eq!((s.calls(), s.quota_used()), (4, 0));
    let ok = get(
        s.addr(),
        &format!("{path}?serviceKey={}&{rest}", enc("sim+Key/with==")),
    )
    .await;
    assert_eq!(result_code(&ok), "00");
    let rec = s.last_request().unwrap();
    assert!(
        rec.query.starts_with("serviceKey=sim%2BKey%2Fwith%3D%3D&"),
        "{}",
        rec.query
    );
    assert_eq!(rec.param("serviceKey").as_deref(), Some("sim+Key/with=="));
    assert_eq!(
        (rec.method.as_str(), rec.path.as_str()),
        ("GET", path.as_str())
    );
    assert!(rec.header("host").is_some());
}

#[tokio::test]
async fn quota_and_service_errors() {
    let s = sim(SimConfig {
        daily_quota: Some(5),
        ..SimConfig::default()
    })
    .await;
    let missing = get(s.addr(), &air("returnType=json")).await;
    assert_eq!(result_code(&missing), "11");
    let bad = get(s.addr(), &seoul("numOfRows=abc")).await;
    assert_eq!(result_code(&bad), "10");
    let other = get(
        s.addr(),
        "/B552584/ArpltnInforInqireSvc/getNope?returnType=json&serviceKey=sim%2BKey%2Fwith%3D%3D",
    )
    .await;
    assert_eq!(result_code(&other), "12");
    assert_eq!(
        other.json()["response"]["header"]["resultMsg"],
        "NO_OPENAPI_SERVICE_ERROR"
    );
    assert_eq!(get(s.addr(), "/elsewhere").await.status, 404);
    // A wrong key does not spend quota.
    assert_eq!(
        gateway_code(&get(s.addr(), &air("").replace("serviceKey=sim", "serviceKey=x")).await),
        "30"
    );
    assert_eq!(s.quota_used(), 3);
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "00");
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "00");
    for _ in 0..2 {
        let spent = get(s.addr(), &seoul("")).await;
        assert_eq!(gateway_code(&spent), "22");
        assert!(
            spent
                .body
                .contains("LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR")
        );
    }
    assert_eq!((s.quota_used(), s.calls()), (5, 9));
}

#[tokio::test]
async fn faults() {
    let s = sim(SimConfig::default()).await;
    s.set_fault_for(Fault::Status(503), 2);
    assert_eq!(get(s.addr(), &seoul("")).await.status, 503);
    assert_eq!(get(s.addr(), &seoul("")).await.status, 503);
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "00");

    s.set_fault(Fault::ResultCode("01".into()));
    let r = get(s.addr(), &seoul("")).await.json();
    assert_eq!(r["response"]["header"]["resultMsg"], "APPLICATION_ERROR");
    s.set_fault(Fault::GatewayError(22));
    assert_eq!(gateway_code(&get(s.addr(), &seoul("")).await), "22");
    for f in [Fault::Garbage, Fault::Truncated] {
        s.set_fault(f);
        let r = get(s.addr(), &seoul("")).await;
        assert_eq!(
            (r.status, r.header("content-type")),
            (200, Some("application/json;charset=UTF-8"))
        );
        assert!(
            serde_json::from_str::<Value>(&r.body).is_err(),
            "{}",
            r.body
        );
    }
    s.set_fault(Fault::Hang);
    let hung = tokio::time::timeout(Duration::from_millis(300), get(s.addr(), &seoul(""))).await;
    assert!(hung.is_err(), "a hung call must not answer");
    assert_eq!(s.quota_used(), 1);

    // The same through the control endpoints, which are not counted.
    let (calls, addr) = (s.calls(), s.addr());
    let post = |path: &'static str, body: &'static str| async move {
        send(addr, "POST", path, body).await.unwrap().status
    };
    assert_eq!(
        post(
            "/__sim/fault",
            r#"{"fault":"status","status":502,"count":1}"#
        )
        .await,
        200
    );
    assert_eq!(get(s.addr(), &seoul("")).await.status, 502);
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "00");
    assert_eq!(
        post("/__sim/fault", r#"{"fault":"result_code","code":"05"}"#).await,
        200
    );
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "05");
    assert_eq!(
        post("/__sim/fault", r#"{"fault":"gateway_error","code":31}"#).await,
        200
    );
    assert_eq!(gateway_code(&get(s.addr(), &seoul("")).await), "31");
    assert_eq!(post("/__sim/fault", r#"{"fault":"none"}"#).await, 200);
    assert_eq!(post("/__sim/fault", r#"{"fault":"nope"}"#).await, 400);
    assert_eq!(post("/__sim/latency", r#"{"ms":120}"#).await, 200);
    let t = Instant::now();
    assert_eq!(result_code(&get(s.addr(), &seoul("")).await), "00");
    assert!(t.elapsed() >= Duration::from_millis(120));
    let stats = get(s.addr(), "/__sim/stats").await.json();
    assert_eq!(stats["calls"].as_u64(), Some(calls + 5));
    assert_eq!(stats["quota_used"].as_u64(), Some(s.quota_used()));
    assert_eq!(post("/__sim/reset", "").await, 200);
    assert_eq!((s.calls(), s.requests().len()), (0, 0));
}

#[tokio::test]
async fn counting_concurrency_and_shutdown() {
    let s = sim(SimConfig::default()).await;
    s.set_latency(Duration::from_millis(100));
    let addr = s.addr();
    let tasks: Vec<_> = (0..200)
        .map(|i| tokio::spawn(async move { get(addr, &seoul(&format!("pageNo={i}"))).await }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(
        (s.calls(), s.requests().len(), s.quota_used()),
        (200, 200, 200)
    );
    s.reset_calls();
    assert_eq!((s.calls(), s.last_request()), (0, None));
    assert!(
        s.base_url()
            .ends_with(&format!("{addr}/B552584/ArpltnInforInqireSvc"))
    );

    // Shutdown releases a hung request at once and frees the port for a restart.
    s.set_fault(Fault::Hang);
    let hung = tokio::spawn(async move { send(addr, "GET", &seoul(""), "").await });
    while s.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.shutdown().await;
    let res = tokio::time::timeout(Duration::from_secs(2), hung).await;
    assert!(
        res.expect("released").unwrap().is_err(),
        "no answer after shutdown"
    );
    assert!(TcpStream::connect(addr).await.is_err());
    let again = SimUpstream::start_on(addr, SimConfig::default())
        .await
        .unwrap();
    assert_eq!(again.addr(), addr);
}

#[test]
fn helpers() {
    assert_eq!(result_message("00"), "NORMAL_SERVICE");
    assert_eq!(
        result_message("22"),
        "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"
    );
    assert_eq!(result_message("zz"), "UNKNOWN_ERROR");
}
