//! `inspector record` and `trace --replay` as a user runs them: a recorder
//! and a live `trace --json` watching the same workload in a namespace of
//! the test's own, then the recording replayed and compared with the live
//! capture.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{addr, errno_of, inspector, needs_root, start, stop, tcp, udp};
use inspector::kernel::netns::in_new_netns;
use serde_json::Value;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("inspector-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn replay(args: &[&str]) -> (Vec<Value>, String) {
    let out = inspector(args).output().expect("run replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (json_lines(&String::from_utf8_lossy(&out.stdout)), stderr)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The event records, without their kernel time: each process's own
/// programs take `bpf_ktime_get_ns()` a few nanoseconds apart. Owners that
/// come from memory rather than the owner's own call are left out too:
/// each process remembers sockets from its own start on (the two tracers
/// see each other's start-up sockets, whose kernel addresses the workload's
/// sockets may reuse).
fn comparable(lines: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter(|r| r["type"] != "stats")
        .map(|r| {
            let mut r = r.clone();
            r["ts_ns"] = Value::Null;
            if r["owner"] != "syscall" && r["owner"] != "none" {
                for k in ["pid", "comm", "owner"] {
                    r[k] = Value::Null;
                }
            }
            r.to_string()
        })
        .collect();
    v.sort();
    v
}

/// A small workload with one of each: a listener, a refused bind (with its
/// explanation), a connection accepted and closed into TIME_WAIT, UDP.
/// The listener stays open until the tracers have explained the failure.
fn workload() {
    let holder = tcp();
    holder.set_reuse_address(true).expect("reuseaddr");
    holder.bind(&addr("127.0.0.1:7301")).expect("bind");
    holder.listen(8).expect("listen");
    let second = tcp();
    assert_eq!(
        errno_of(second.bind(&addr("127.0.0.1:7301"))),
        Some(libc::EADDRINUSE)
    );
    let client = tcp();
    client.connect(&addr("127.0.0.1:7301")).expect("connect");
    let (conn, _) = holder.accept().expect("accept");
    drop(client);
    drop(conn);
    let u = udp();
    u.bind(&addr("127.0.0.1:7302")).expect("udp bind");
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_recording_replays_as_the_live_trace_printed() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let dir = tmpdir("replay");
    let dir_s = dir.to_string_lossy().into_owned();
    let got = in_new_netns(move |_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let live = start(&["trace", "--json", "--netns", &path])?;
        let Some(rec) = start(&["record", "--output", &dir_s, "--netns", &path]) else {
            let _ = stop(live.0, &live.1);
            return None;
        };
        workload();
        Some((live, rec))
    })
    .expect("netns");
    let Some(((live, live_rx), (rec, rec_rx))) = got else {
        return;
    };
    // Flushed at least every second: readable while the recorder runs.
    std::thread::sleep(Duration::from_millis(1600));
    let (early, _) = replay(&["trace", "--replay", &dir.to_string_lossy(), "--json"]);
    assert!(
        early.iter().any(|r| r["errno"] == "EADDRINUSE"),
        "the failure is on disk within a second: {early:?}"
    );
    let (live_out, live_err) = stop(live, &live_rx);
    let (_, rec_err) = stop(rec, &rec_rx);
    let summary = rec_err.last().cloned().unwrap_or_default();
    assert!(summary.contains("recorded"), "{rec_err:?}");

    let live = json_lines(&live_out);
    let (replayed, _) = replay(&["trace", "--replay", &dir.to_string_lossy(), "--json"]);
    assert!(!live.is_empty(), "live trace printed nothing: {live_err:?}");
    assert_eq!(
        comparable(&replayed),
        comparable(&live),
        "the same records, explanations included"
    );
    let kinds = |v: &[Value]| {
        let mut k: Vec<String> = v.iter().map(|r| r["type"].to_string()).collect();
        k.sort();
        k.dedup();
        k
    };
    assert_eq!(kinds(&replayed), kinds(&live));
    let last = replayed.last().expect("lines");
    assert_eq!(last["type"], "stats");
    assert_eq!(last["final"], true);
    let refused: Vec<&Value> = replayed
        .iter()
        .filter(|r| r["errno"] == "EADDRINUSE")
        .collect();
    assert_eq!(refused.len(), 1, "{replayed:#?}");
    let why = refused[0]["explanation"].as_str().unwrap_or_default();
    assert!(why.contains("held by LISTEN 127.0.0.1:7301"), "{why:?}");

    // The trace filters apply to the replay (the process is gone: --pid
    // names a recorded one, not a live one).
    let (only, _) = replay(&[
        "trace",
        "--replay",
        &dir.to_string_lossy(),
        "--json",
        "--failures-only",
    ]);
    let events: Vec<&Value> = only.iter().filter(|r| r["type"] != "stats").collect();
    assert_eq!(events.len(), 1, "{only:#?}");
    let (udp_only, _) = replay(&[
        "trace",
        "--replay",
        &dir.to_string_lossy(),
        "--json",
        "--proto",
        "udp",
        "--pid",
        &std::process::id().to_string(),
    ]);
    assert!(
        udp_only
            .iter()
            .filter(|r| r["type"] != "stats")
            .all(|r| r["proto"] == "udp" && r["pid"] == std::process::id())
    );
    // Text mode prints as live, with the explanation under the failure.
    let out = inspector(&["trace", "--replay", &dir.to_string_lossy()])
        .output()
        .expect("text replay");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TIME(s)"), "{text}");
    assert!(text.contains("why: "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_recording_is_one_error_line() {
    let out = inspector(&["trace", "--replay", "/nonexistent/recording"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no recording at /nonexistent/recording"),
        "{err}"
    );
}

#[test]
fn an_unwritable_output_is_one_error_line() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // A file where the directory should be.
    let out = inspector(&["record", "--output", "/dev/null/rec"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("/dev/null/rec"), "{err}");
}

/// Bytes and recorder CPU per event over a loopback workload; prints the
/// figures (`cargo test -p inspector --test record -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn measure_bytes_and_cpu_per_event() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let n: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let dir = tmpdir("measure");
    let dir_s = dir.to_string_lossy().into_owned();
    let rec = in_new_netns(move |_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let rec = start(&["record", "--output", &dir_s, "--netns", &path])?;
        let l = tcp();
        l.bind(&addr("127.0.0.1:7311")).expect("bind");
        l.listen(128).expect("listen");
        for _ in 0..n {
            let c = tcp();
            c.connect(&addr("127.0.0.1:7311")).expect("connect");
            let (a, _) = l.accept().expect("accept");
            drop(c);
            drop(a);
        }
        Some(rec)
    })
    .expect("netns");
    let Some((rec, rx)) = rec else { return };
    std::thread::sleep(Duration::from_millis(500));
    let (_, err) = stop(rec, &rx);
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let summary = err.last().cloned().unwrap_or_default();
    eprintln!("{n} connections: {summary}");
    let num = |key: &str| -> Option<f64> {
        let before = summary.split(key).next()?;
        before
            .split_whitespace()
            .last()?
            .trim_start_matches('(')
            .parse()
            .ok()
    };
    let records = num(" records").unwrap_or(0.0);
    let cpu = summary
        .rsplit("recorder CPU ")
        .next()
        .and_then(|s| s.trim_end_matches(" s").parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!(
        "records {records}, {bytes} bytes on disk: {:.0} bytes per 1000 records; \
         recorder CPU {:.2} us per record (load included)",
        bytes as f64 * 1000.0 / records.max(1.0),
        cpu * 1e6 / records.max(1.0)
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// A recording of 10 connect records, one a second from its start, written
/// as `inspector record` writes them (no privileges needed).
fn ten_seconds(dir: &std::path::Path) {
    let header = inspector::recording::Header::new("tracepoint".into(), "none".into());
    let mut w = inspector::recording::Writer::create(
        dir,
        inspector::recording::Limits {
            max_size: 1 << 30,
            max_files: 1,
        },
        &header,
        false,
    )
    .expect("writer");
    let mut records = Vec::new();
    let ev = inspector::fixture::EventBuilder::connect(5000)
        .owner(4242, "client")
        .ports(40000, 5000)
        .build();
    inspector::model::tracker::Tracker::new().apply(&ev, &mut records);
    let mut r = records.pop().expect("a connect record");
    for i in 0..10u64 {
        r.ts_ns = header.start_mono_ns + i * 1_000_000_000;
        r.lport = 40000 + i as u16;
        inspector::output::ndjson::write(&r, &mut w.pending);
    }
    w.flush().expect("flush");
}

#[test]
fn since_and_until_cut_a_replay_to_a_window() {
    let dir = tmpdir("window");
    ten_seconds(&dir);
    let path = dir.to_str().expect("utf-8");
    let ports = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["trace", "--json", "--replay", path];
        all.extend(args);
        let (lines, err) = replay(&all);
        lines
            .iter()
            .filter(|l| l["type"] == "connect")
            .map(|l| l["lport"].as_u64().unwrap_or_else(|| panic!("{l} {err}")))
            .collect()
    };
    assert_eq!(ports(&[]).len(), 10);
    // Seconds 3 to 5 of the recording, both ends in.
    assert_eq!(
        ports(&["--since", "+3s", "--until", "+5s"]),
        [40003, 40004, 40005]
    );
    assert_eq!(ports(&["--since", "+8s"]), [40008, 40009]);
    // The same moments as wall-clock times, from the recording's header.
    let header = inspector::recording::Reader::open(&dir)
        .expect("open")
        .next_line()
        .expect("read");
    let Some(inspector::recording::Line::Header(h)) = header else {
        panic!("no header");
    };
    let wall = |s: u64| {
        let ns = i128::from(h.start_unix_ns + s * 1_000_000_000);
        jiff::Timestamp::from_nanosecond(ns)
            .expect("time")
            .to_string()
    };
    assert_eq!(
        ports(&["--until", &wall(1)]),
        [40000, 40001],
        "until {}",
        wall(1)
    );
    // Bad input: one line naming the forms, exit 2.
    let out = inspector(&["trace", "--replay", path, "--since", "yesterday"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RFC 3339") && err.contains("+90s"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
