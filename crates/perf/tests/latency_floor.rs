//! `warren-perf --latency-floor` end to end: the binary starts its relay child, sends
//! messages through it at a high rate for a second, reports every one of them and reaps
//! the relay.

use std::process::Command;

#[test]
fn latency_floor_reports_every_message_and_reaps_the_relay() {
    const RATE: f64 = 20_000.0;
    let out = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args([
            "--latency-floor",
            "--rate",
            "20000",
            "--duration",
            "1",
            "--quiet",
        ])
        .output()
        .expect("run warren-perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("JSON "))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!(json["mode"], "latency-floor");
    assert!(json["error"].is_null(), "{json}");
    let r = &json["result"];
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");

    let published = r["totals"]["published"].as_u64().unwrap();
    let consumed = r["totals"]["consumed"].as_u64().unwrap();
    let samples = r["latency"]["count"].as_u64().unwrap();
    // Paced at 20,000 msg/s for 1 s: at most 20,000 are due; a few may still be in the
    // relay at the deadline.
    assert!(
        (RATE * 0.95) as u64 <= published && published <= RATE as u64,
        "published {published}"
    );
    assert!(
        consumed <= published && consumed + 1_000 >= published,
        "published {published}, consumed {consumed}"
    );
    assert_eq!(samples, consumed, "one latency sample per message");
    let (p50, p99, max) = (
        r["latency"]["p50_ns"].as_u64().unwrap(),
        r["latency"]["p99_ns"].as_u64().unwrap(),
        r["latency"]["max_ns"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{}", r["latency"]);
    assert!(p50 < 1_000_000_000, "p50 {p50} ns");

    // The relay was reaped before warren-perf exited.
    let pid = r["relay_pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "relay {pid} still exists"
    );
}
