//! Keys with scopes, and tenants that cannot see each other: `thermo standalone` with a key file
//! (its ingest API and every read endpoint on one port), every endpoint tried with every key.

use crate::support::stack::{single, Standalone};
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The key file: a key of each scope for tenants acme and globex.
const KEYS: &str = "\
# key   tenant  scope
a-rw    acme    read,write
a-r     acme    read
a-w     acme    write
g-rw    globex  read,write
g-r     globex  read
g-w     globex  write
";

/// Every key tried, and no key at all.
const TRIED: [Option<&str>; 8] = [
    None,
    Some("nope"),
    Some("a-rw"),
    Some("a-r"),
    Some("a-w"),
    Some("g-rw"),
    Some("g-r"),
    Some("g-w"),
];

/// What is read, its URL and its query parameters.
type Endpoint<'a> = (&'a str, String, Vec<(&'a str, String)>);

fn tenant_of(key: &str) -> &'static str {
    if key.starts_with("a-") {
        "acme"
    } else {
        "globex"
    }
}

fn send(req: reqwest::blocking::RequestBuilder, key: Option<&str>) -> (u16, String) {
    let req = match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    };
    let r = req.send().expect("request");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// One counter series-minute `orders{site,via,<site>_zone}` (and `<site>.only`) written with
/// `key`: the tenant's name is in its metric names, tag keys and tag values alike.
fn ingest(base: &str, key: Option<&str>, minute: i64, value: f64) -> (u16, String) {
    let site = key.map_or("none", tenant_of);
    let via = key.unwrap_or("none");
    let body = json!({"series": [
        {"metric": "orders", "tags": {"site": site, "via": via, format!("{site}_zone"): "z1"}, "time": minute, "type": "counter", "value": value},
        {"metric": format!("{site}.only"), "tags": {"via": via}, "time": minute, "type": "counter", "value": 1},
    ]});
    send(
        http().post(format!("{base}/api/v1/ingest")).json(&body),
        key,
    )
}

#[test]
fn every_endpoint_answers_every_key_as_documented() {
    let keys_dir = TempDir::new("auth-keys");
    let key_file = keys_dir.path().join("keys");
    std::fs::write(&key_file, KEYS).expect("write key file");
    let sa = Standalone::start_with(
        "auth",
        &["--api-key-file", key_file.to_str().expect("utf-8 path")],
    );
    let base = format!("http://127.0.0.1:{}", sa.http);
    let minute = thermo_core::window::minute_start(now_s()) - 600;

    // Writes: a write scope writes into its own tenant; a read-only key is 403, none or an
    // unknown one 401, and nothing of theirs is stored.
    let values = [("a-rw", 2.0), ("a-w", 3.0), ("g-rw", 20.0), ("g-w", 30.0)];
    for key in TRIED {
        let value = values
            .iter()
            .find(|(k, _)| Some(*k) == key)
            .map_or(1000.0, |(_, v)| *v);
        let (status, body) = ingest(&base, key, minute, value);
        let want = match key {
            None | Some("nope") => 401,
            Some(k) if k.ends_with("-r") => 403,
            _ => 200,
        };
        assert_eq!(status, want, "ingest with {key:?}: {body}");
        if want == 403 {
            assert!(body.contains("may not write"), "{body}");
        }
    }
    let (status, body) = post_json(&format!("{base}/flush"));
    assert_eq!(status, 200, "{body}");
    let (from, to) = (minute, minute + 60);
    let orders = |key: &str| {
        let url = format!("{base}/api/v1/query?metric=orders&from={from}&to={to}&group_by=via");
        let (status, body) = send(http().get(&url), Some(key));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("json")
    };
    wait_until("both tenants' orders", Duration::from_secs(60), || {
        orders("a-r")["series"].as_array().map_or(0, Vec::len) == 2
            && orders("g-r")["series"].as_array().map_or(0, Vec::len) == 2
    });

    // Reads: every endpoint holding tenant data, with every key.
    let prom = format!("{base}/prometheus/api/v1");
    let all = r#"{__name__=~".+"}"#.to_string();
    let (t, from_s, to_s) = (to.to_string(), from.to_string(), to.to_string());
    let endpoints: Vec<Endpoint> = vec![
        ("metrics", format!("{base}/api/v1/metrics"), vec![]),
        (
            "native query",
            format!("{base}/api/v1/query"),
            vec![
                ("metric", "orders".into()),
                ("from", from_s.clone()),
                ("to", to_s.clone()),
                ("group_by", "*".into()),
            ],
        ),
        (
            "prometheus query",
            format!("{prom}/query"),
            vec![("query", "orders".into()), ("time", t.clone())],
        ),
        (
            "prometheus query_range",
            format!("{prom}/query_range"),
            vec![
                ("query", all.clone()),
                ("start", t.clone()),
                ("end", t.clone()),
                ("step", "60".into()),
            ],
        ),
        (
            "prometheus series",
            format!("{prom}/series"),
            vec![("match[]", all)],
        ),
        ("prometheus labels", format!("{prom}/labels"), vec![]),
        (
            "prometheus label values",
            format!("{prom}/label/site/values"),
            vec![],
        ),
        ("prometheus metadata", format!("{prom}/metadata"), vec![]),
    ];
    for key in TRIED {
        for (what, url, params) in &endpoints {
            let (status, body) = send(http().get(url).query(params), key);
            let want = match key {
                None | Some("nope") => 401,
                Some(k) if k.ends_with("-w") => 403,
                _ => 200,
            };
            assert_eq!(status, want, "{what} with {key:?}: {body}");
            let Some(k) = key.filter(|_| want == 200) else {
                if want == 403 {
                    assert!(body.contains("may not read"), "{what}: {body}");
                }
                continue;
            };
            let (own, foreign) = match tenant_of(k) {
                "acme" => ("acme", "globex"),
                _ => ("globex", "acme"),
            };
            assert!(
                body.contains(own) && !body.contains(foreign),
                "{what} with {k} shows {foreign}'s data or not its own: {body}"
            );
        }
        // Usage: one's own tenant only.
        for t in ["acme", "globex"] {
            let (status, body) = send(http().get(format!("{base}/api/v1/tenants/{t}/usage")), key);
            let want = match key {
                None | Some("nope") => 401,
                Some(k) if k.ends_with("-w") => 403,
                Some(k) if tenant_of(k) != t => 403,
                _ => 200,
            };
            assert_eq!(status, want, "usage of {t} with {key:?}: {body}");
        }
    }

    // Exact answers: each tenant's own orders, written by its two write keys.
    for (key, via) in [
        ("a-r", [("a-rw", 2.0), ("a-w", 3.0)]),
        ("g-rw", [("g-rw", 20.0), ("g-w", 30.0)]),
    ] {
        let answer = orders(key);
        for (v, value) in via {
            assert_eq!(single(&answer, &[("via", v)]), value, "{key}: {answer}");
        }
    }
    let (_, body) = send(
        http()
            .get(format!("{prom}/query"))
            .query(&[("query", "sum(orders)"), ("time", &t)]),
        Some("g-r"),
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"]["result"][0]["value"][1], "50", "{body}");

    // SIGHUP reads the file again: a-r revoked, a-new added.
    std::fs::write(
        &key_file,
        KEYS.replace("a-r     acme    read\n", "a-new acme read\n"),
    )
    .expect("rewrite key file");
    let pid = sa.proc.child.as_ref().expect("running").id();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let metrics_with = |key: &str| send(http().get(format!("{base}/api/v1/metrics")), Some(key)).0;
    wait_until("the key file read again", Duration::from_secs(10), || {
        metrics_with("a-r") == 401 && metrics_with("a-new") == 200
    });
    assert_eq!(metrics_with("a-rw"), 200);
    // A broken file keeps the keys in use.
    std::fs::write(&key_file, "a-new acme\n").expect("break key file");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    wait_until("the broken file logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&sa.proc.log)
            .unwrap_or_default()
            .contains("the keys in use stay")
    });
    assert_eq!(metrics_with("a-new"), 200);
    assert_eq!(metrics_with("g-w"), 403);
}
