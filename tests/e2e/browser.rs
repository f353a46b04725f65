//! The dashboard in a real browser: `thermo standalone --demo`, then headless Chromium (Debian's
//! `chromium`) loads `/#metric=http.latency&stat=p99`, and the DOM it leaves behind shows the chart
//! of that metric and percentile with data points; a screenshot of it is kept in the target dir.
//!
//! A missing `chromium` fails the test with how to install it (`apt-get install chromium`).

use crate::support::stack::Standalone;
use crate::support::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The view the browser opens: the p99 of the demo's timer over the last 15 minutes, without the
/// auto-refresh (so nothing changes the page while Chromium's virtual time runs).
const HASH: &str = "metric=http.latency&stat=p99&range=15m&refresh=0";

/// Longest a Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Number of points of the service's answer to `/api/v1/query?metric=http.latency&stat=p99`
/// (0 while the metric is unknown: 404).
fn api_points(http: u16) -> usize {
    let (s, body) = get_json(&format!(
        "http://127.0.0.1:{http}/api/v1/query?metric=http.latency&stat=p99"
    ));
    if s == 404 {
        return 0;
    }
    assert_eq!(s, 200, "{body}");
    body["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| s["points"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// `POST /flush`: the agent sends its open minutes now.
fn flush(http: u16) -> u16 {
    crate::support::http()
        .post(format!("http://127.0.0.1:{http}/flush"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Runs headless Chromium on `url` with `extra` arguments in its own process group, killing the
/// group after CHROMIUM_TIMEOUT. Returns its stdout; panics (with its stderr) when it fails.
fn chromium(bin: &Path, dir: &Path, name: &str, url: &str, extra: &[String]) -> String {
    let profile = dir.join(format!("chromium-profile-{name}"));
    std::fs::create_dir_all(&profile).expect("create chromium profile dir");
    let err_log = dir.join(format!("chromium-{name}.log"));
    let err = std::fs::File::create(&err_log).expect("create chromium log");
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--window-size=1400,900",
        "--virtual-time-budget=8000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(extra.iter().cloned());
    args.push(url.to_string());
    let mut child = Command::new(bin)
        .args(&args)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pgid = child.id();
    let mut stdout = child.stdout.take().expect("chromium stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The whole group: the browser leaves GPU/renderer/zygote children behind when killed alone.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let out = reader.join().unwrap_or_default();
    let log = || {
        let s = std::fs::read_to_string(&err_log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match status {
        None => panic!(
            "chromium ({name}) did not finish within {CHROMIUM_TIMEOUT:?}; its log ({}):\n{}",
            err_log.display(),
            log()
        ),
        Some(s) if !s.success() => panic!(
            "chromium ({name}) failed ({s}); its log ({}):\n{}",
            err_log.display(),
            log()
        ),
        Some(_) => out,
    }
}

/// The text of the element with `id="{id}"` in `dom` (its tags stripped), or None.
fn element_text(dom: &str, id: &str) -> Option<String> {
    let open = dom.find(&format!("id=\"{id}\""))?;
    let body = open + dom[open..].find('>')? + 1;
    let end = body + dom[body..].find("</")?;
    Some(dom[body..end].to_string())
}

/// (series, points) of the status line "… · N series, M points · …".
fn status_counts(status: &str) -> Option<(usize, usize)> {
    let part = status
        .split('·')
        .map(str::trim)
        .find(|p| p.ends_with(" points") && p.contains(" series, "))?;
    let (series, points) = part.split_once(" series, ")?;
    Some((
        series.trim().parse().ok()?,
        points.trim_end_matches(" points").trim().parse().ok()?,
    ))
}

#[test]
fn dashboard_charts_p99_of_demo_latency_in_chromium() {
    // A missing browser fails here, before anything is started.
    let chromium_bin = find_bin("chromium", "apt-get install chromium");
    let thermo = Standalone::start_on_system_clock("browser", &["--demo"]);
    let (dir, http) = (&thermo.dir, thermo.http);

    // 1. The demo traffic reaches the agent; a flush makes the current minute queryable.
    // The agent receives demo lines.
    wait_metric(
        http,
        "thermo_agent_received_total",
        Duration::from_secs(20),
        |v| v > 0.0,
    );
    assert_eq!(
        flush(http),
        200,
        "POST /flush; log:\n{}",
        thermo.proc.log_tail()
    );
    // The first flush may come before a timer line arrived: flush again until the API has one.
    let mut tries = 0;
    wait_until(
        "a point of http.latency p99 from the API",
        Duration::from_secs(30),
        || {
            tries += 1;
            if tries % 5 == 0 {
                assert_eq!(flush(http), 200, "POST /flush");
            }
            api_points(http) >= 1
        },
    );

    // 2. The dashboard, in the browser, opened on that view.
    let url = format!("http://127.0.0.1:{http}/#{HASH}");
    let dom = chromium(
        &chromium_bin,
        dir.path(),
        "dom",
        &url,
        &["--dump-dom".into()],
    );
    std::fs::write(dir.path().join("dashboard.html"), &dom).expect("keep the DOM");
    let ctx = || {
        format!(
            "(DOM kept in {})",
            dir.path().join("dashboard.html").display()
        )
    };
    assert!(
        dom.contains("id=\"chart\""),
        "the dumped DOM is the dashboard {}",
        ctx()
    );
    // No error shown: the #error element keeps its `hidden` attribute and has no text.
    let error = element_text(&dom, "error").unwrap_or_default();
    assert!(
        error.trim().is_empty(),
        "the page shows an error: {error:?} {}",
        ctx()
    );
    // The page picked the metric and the percentile from the hash: the chart title says so
    // ("p99 of http.latency", from the service's answer) and so does its query link.
    let title = element_text(&dom, "title").unwrap_or_default();
    assert!(
        dom.contains("p99 of http.latency"),
        "the title names the stat and metric, got {title:?} {}",
        ctx()
    );
    assert!(
        dom.contains("/api/v1/query?metric=http.latency&amp;stat=p99&amp;"),
        "the query JSON link asks for http.latency p99 {}",
        ctx()
    );
    assert!(
        dom.contains(">histogram</span>"),
        "the metric's type badge shows histogram {}",
        ctx()
    );
    // The status line, written after a successful load: "… · N series, M points · …".
    let status = element_text(&dom, "status").unwrap_or_default();
    let (series, points) = status_counts(&status).unwrap_or_else(|| {
        panic!(
            "no \"N series, M points\" in the status {status:?} {}",
            ctx()
        )
    });
    assert!(series >= 1, "at least one series: {status:?}");
    assert!(points >= 1, "at least one point: {status:?}");
    // uPlot drew: its root element, a canvas and a legend.
    assert!(
        dom.contains("class=\"uplot") && dom.contains("<canvas"),
        "uPlot drew a chart {}",
        ctx()
    );
    assert!(dom.contains("u-legend"), "the chart has a legend {}", ctx());

    // 3. A screenshot of the same view.
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &chromium_bin,
        dir.path(),
        "screenshot",
        &url,
        &[format!("--screenshot={}", png.display())],
    );
    let size = std::fs::metadata(&png)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()))
        .len();
    let head = std::fs::read(&png).expect("read screenshot");
    assert!(
        head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        png.display()
    );
    assert!(
        size > 10 * 1024,
        "the screenshot {} is {size} bytes, want > 10 KB",
        png.display()
    );
    eprintln!(
        "dashboard: {status}\nscreenshot: {} ({size} bytes)",
        png.display()
    );
    drop(thermo);
}
