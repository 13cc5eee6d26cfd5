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
        // Successful connects are a connection's life: --connections.
        let mut all = vec!["trace", "--json", "--connections", "--replay", path];
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

/// What the namespace thread made and what `ss`, run inside it, said.
struct Made {
    netns: u32,
    ss_tcp: String,
    ss_udp: String,
    rec: (std::process::Child, std::sync::mpsc::Receiver<String>),
}

/// `ss -tanH`/`-uanH` lines as (state, local port, peer port).
fn ss_rows(out: &str) -> Vec<(String, u16, u16)> {
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[0].to_owned(), port(f[3]), port(f[4])))
        })
        .collect()
}

#[test]
fn a_replay_starts_with_the_sockets_the_kernel_had_when_recording_began() {
    use inspector::{
        commands::dashboard::{Dashboard, app::Pane, model::HolderState, replay},
        pipeline::{
            drive::{Driver, Stop},
            source::{Pace, Source},
        },
    };

    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    const PORT: u16 = 7331;
    const UDP_PORT: u16 = 7332;
    let dir = tmpdir("snapshot");
    let dir_s = dir.to_string_lossy().into_owned();
    let (made_tx, made_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("a namespace");
        let netns = inspector::kernel::netns::current_netns().expect("its inode");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let listener = tcp();
        listener
            .bind(&addr(&format!("127.0.0.1:{PORT}")))
            .expect("bind");
        listener.listen(16).expect("listen");
        let connect = || {
            let c = tcp();
            c.connect(&addr(&format!("127.0.0.1:{PORT}")))
                .expect("connect");
            let (a, _) = listener.accept().expect("accept");
            (c, a)
        };
        // Two connections that stay, two whose server side ends in
        // TIME_WAIT (it closes first), two whose client side does.
        let open: Vec<_> = (0..2).map(|_| connect()).collect();
        for server_first in [true, true, false, false] {
            let (c, a) = connect();
            let (first, second) = if server_first { (a, c) } else { (c, a) };
            drop(first);
            std::thread::sleep(Duration::from_millis(50));
            drop(second);
        }
        let u = udp();
        u.bind(&addr(&format!("127.0.0.1:{UDP_PORT}")))
            .expect("udp bind");
        std::thread::sleep(Duration::from_millis(300));
        // What the kernel says, from inside the namespace.
        let ss = |args: &[&str]| {
            let out = std::process::Command::new("ss")
                .args(args)
                .output()
                .expect("ss runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let ss_tcp = ss(&["-tanH"]);
        let ss_udp = ss(&["-uanH"]);
        let Some(rec) = start(&["record", "--output", &dir_s, "--netns", &path]) else {
            return;
        };
        made_tx
            .send(Made {
                netns,
                ss_tcp,
                ss_udp,
                rec,
            })
            .expect("send");
        // The namespace and its sockets live until the test is done.
        let _ = done_rx.recv();
        drop((listener, open, u));
    });
    let Ok(made) = made_rx.recv() else {
        worker.join().expect("the namespace thread");
        return;
    };
    std::thread::sleep(Duration::from_millis(1200));
    let (rec, rec_rx) = made.rec;
    let (_, rec_err) = stop(rec, &rec_rx);
    let _ = done_tx.send(());
    worker.join().expect("the namespace thread");
    if let Some(refused) = rec_err.iter().find(|l| l.contains("no socket snapshots")) {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true and the socket iterators cannot load: {refused}"
        );
        eprintln!("SKIPPED: the socket iterators cannot load here: {refused}");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    assert!(
        rec_err.iter().any(|l| l.contains("and 1 snapshots")),
        "{rec_err:?}"
    );

    // What the kernel said: the listener, the TIME_WAIT sockets on its
    // port, the clients' sockets toward it (live and in TIME_WAIT), UDP.
    let tcp_rows = ss_rows(&made.ss_tcp);
    let count = |f: &dyn Fn(&(String, u16, u16)) -> bool| tcp_rows.iter().filter(|r| f(r)).count();
    let listening = count(&|r| r.0 == "LISTEN" && r.1 == PORT) as u64;
    let tw_on_port = count(&|r| r.0 == "TIME-WAIT" && r.1 == PORT) as u64;
    let client = |r: &(String, u16, u16)| r.2 == PORT && r.1 != PORT;
    let clients = count(&|r| client(r) && (r.0 == "ESTAB" || r.0 == "TIME-WAIT")) as u32;
    let clients_tw = count(&|r| client(r) && r.0 == "TIME-WAIT") as u32;
    let udp_bound = ss_rows(&made.ss_udp)
        .iter()
        .filter(|r| r.1 == UDP_PORT)
        .count() as u64;
    assert!(
        listening == 1 && tw_on_port >= 1 && clients >= 3 && clients_tw >= 1 && udp_bound == 1,
        "the workload as the kernel has it:\n{}{}",
        made.ss_tcp,
        made.ss_udp
    );

    // The replay, paused at its start, before any key.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let screen = rt.block_on(async {
        let filter = inspector::model::filter::Filter::default();
        let mut src = Source::replay(
            &dir,
            filter.clone(),
            Pace::Clock {
                speed: 1.0,
                paused: true,
            },
            inspector::recording::Window::default(),
        )
        .expect("open the recording");
        let mut app = replay::app(&mut src, &filter);
        app.paused = true;
        app.pane = Pane::Ports;
        let rows = app.port_rows();
        let row = |port: u16, proto| {
            rows.iter()
                .find(|r| {
                    r.key.port == port && r.key.netns == made.netns && r.key.proto == Some(proto)
                })
                .unwrap_or_else(|| panic!("port {port} seeded: {rows:#?}"))
        };
        let l = row(PORT, inspector::kernel::Proto::Tcp);
        assert!(l.pre, "{l:?}");
        assert_eq!(
            l.states.get(&HolderState::LISTEN),
            Some(&listening),
            "{l:?}"
        );
        assert_eq!(l.time_wait, tw_on_port, "{l:?}");
        assert!(
            l.owners.iter().any(|(p, _)| *p == std::process::id()),
            "the listener's owner: {l:?}"
        );
        let u = row(UDP_PORT, inspector::kernel::Proto::Udp);
        assert!(u.pre, "{u:?}");
        assert_eq!(u.states.get(&HolderState::Bound), Some(&udp_bound), "{u:?}");
        let dest = app
            .model
            .ephemeral
            .rows()
            .into_iter()
            .find(|r| r.key.port == PORT && r.key.netns == made.netns)
            .expect("pane 5's destination");
        assert_eq!(
            (dest.in_use, dest.time_wait, dest.pre),
            (clients, clients_tw, clients),
            "{dest:?}"
        );
        // The first frame drawn shows them, marked.
        let (_keys, events) = tokio::sync::mpsc::unbounded_channel();
        let terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(140, 30))
            .expect("test backend");
        let mut d = Dashboard::new(terminal, events, app);
        let mut stop = Stop::new(None).expect("signals");
        Driver::default()
            .step(&mut src, &mut d, &mut stop)
            .await
            .expect("the first step");
        format!("{}", d.terminal().backend())
    });
    let line = screen
        .lines()
        .find(|l| l.contains(&format!(":{PORT}")) || l.contains(&format!(" {PORT} ")))
        .unwrap_or_else(|| panic!("the first frame lists {PORT}:\n{screen}"));
    assert!(line.contains("pre"), "{line}\n{screen}");
    let _ = std::fs::remove_dir_all(&dir);
}
