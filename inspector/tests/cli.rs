//! The `inspector` binary as a user runs it: real probes, real sockets in a
//! namespace of the test's own, a signal to stop, and what it printed.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    process::Command,
    sync::mpsc,
    time::Duration,
};

use common::{addr, errno_of, inspector, needs_root, stop, tcp, wait_bounded};
use inspector::kernel::netns::in_new_netns;
use serde_json::Value;

/// Runs a failing command and returns (exit code, stderr).
fn failure(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run inspector");
    assert!(!out.status.success(), "expected a failure: {out:?}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_port_filters_are_usage_errors() {
    for (arg, needle) in [
        ("70000", "out of range"),
        ("90-80", "90-80"),
        ("http", "http"),
    ] {
        let (code, err) = failure(&mut inspector(&["trace", "--port", arg]));
        assert_eq!(code, 2, "clap usage errors exit with 2: {err}");
        assert!(err.contains(needle), "{arg}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn unknown_pid_and_netns_are_named() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // Past the kernel's pid_max (at most 2^22), so no process can have it.
    let (_, err) = failure(&mut inspector(&["trace", "--pid", "4194305"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no process with pid 4194305"), "{err}");
    let (_, err) = failure(&mut inspector(&[
        "trace",
        "--netns",
        "/run/netns/does-not-exist",
    ]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/run/netns/does-not-exist"), "{err}");
}

#[test]
fn a_netns_path_that_is_no_network_namespace_is_named() {
    let file = std::env::temp_dir().join(format!("inspector-not-a-netns-{}", std::process::id()));
    std::fs::write(&file, "").expect("temp file");
    let dir = std::env::temp_dir();
    for (path, what) in [
        (file.to_str().expect("utf-8 path"), "a regular file"),
        (dir.to_str().expect("utf-8 path"), "a directory"),
        ("/proc/self/ns/mnt", "a mount namespace"),
    ] {
        for args in [
            vec!["trace", "--netns", path],
            vec!["explain", "80", "--netns", path],
        ] {
            let (code, err) = failure(&mut inspector(&args));
            assert_eq!(code, 1, "{err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(&format!("{path} is {what}, not a network namespace")),
                "{err}"
            );
            assert!(err.contains("/proc/PID/ns/net"), "names the fix: {err}");
        }
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn explain_refuses_the_uid_that_setresuid_ignores() {
    // (uid_t)-1 is "leave unchanged" to setresuid(): a probe as that uid
    // would bind as the caller.
    let (code, err) = failure(&mut inspector(&[
        "explain",
        "8080",
        "--probe",
        "--uid",
        "4294967295",
    ]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("uid 4294967295"), "{err}");
    assert!(err.contains("give a real uid"), "{err}");
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // Drop to nobody: no capabilities at all.
    let mut cmd = inspector(&["trace"]);
    cmd.uid(65534).gid(65534);
    let (code, err) = failure(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
}

#[test]
fn trace_json_reports_a_refused_bind_and_a_clean_stop() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let (netns, errno, rx, child) = in_new_netns(|netns| {
        // The tool filters on this thread's namespace; it runs outside it.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let (mut child, rx) =
            common::start(&["trace", "--json", "--netns", &path]).expect("the probes attach");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let holder = tcp();
        holder.bind(&addr("127.0.0.1:7201")).expect("bind");
        holder.listen(1).expect("listen");
        let second = tcp();
        let errno = errno_of(second.bind(&addr("127.0.0.1:7201")));
        // The holder stays until the failure is printed with its
        // explanation (read while the port was held): slow under emulation.
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !seen.iter().any(|l: &String| l.contains("EADDRINUSE")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        drop(holder);
        (netns, errno, rx, (child, lines, reader, seen))
    })
    .expect("netns");
    assert_eq!(errno, Some(libc::EADDRINUSE));
    let (child, lines, reader, mut seen) = child;
    let (_, stderr) = stop(child, &rx);
    let _ = reader.join();
    seen.extend(lines.try_iter());
    let stdout = seen.join("\n");
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!records.is_empty(), "no records; stderr: {stderr:?}");
    // The accounting closes the stream; it belongs to no namespace.
    let last = records.last().expect("records");
    assert_eq!(last["type"], "stats", "{last}");
    assert_eq!(last["final"], true, "{last}");
    assert_eq!(last["dropped"], 0, "{last}");
    let records: Vec<Value> = records
        .into_iter()
        .filter(|r| r["type"] != "stats")
        .collect();
    for r in &records {
        assert_eq!(r["v"], inspector::model::record::SCHEMA_VERSION);
        assert_eq!(
            r["netns"],
            u64::from(netns),
            "the namespace filter holds: {r}"
        );
    }
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["errno"] == "EADDRINUSE")
        .collect();
    assert_eq!(refused.len(), 1, "{records:#?}");
    // Explained right after the failure, from the same predictor and
    // inventory as `inspector explain`.
    let why = refused[0]["explanation"].as_str().unwrap_or_default();
    assert!(
        why.contains("held by LISTEN 127.0.0.1:7201"),
        "explanation: {why:?}"
    );
    let r = refused[0];
    assert_eq!(r["type"], "bind");
    assert_eq!(r["phase"], "bind");
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["req_port"], 7201);
    assert_eq!(r["pid"], std::process::id());
    assert_eq!(r["reuseaddr"], false);
    let listens = records
        .iter()
        .filter(|r| r["type"] == "bind" && r["phase"] == "listen" && r["errno"].is_null())
        .count();
    assert_eq!(listens, 1, "{records:#?}");
    let summary = stderr.last().expect("a summary line");
    assert!(
        summary.contains("events read") && summary.contains("0 dropped"),
        "{summary}"
    );
}

#[test]
fn trace_text_lines_are_aligned_and_filtered_by_port() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let (errno, rx, child) = in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let (child, rx) = common::start(&[
            "trace",
            "--netns",
            &path,
            "--port",
            "7202",
            "--failures-only",
        ])
        .expect("the probes attach");
        let other = tcp();
        other.bind(&addr("127.0.0.1:7203")).expect("bind");
        let holder = tcp();
        holder.bind(&addr("127.0.0.1:7202")).expect("bind");
        // Listening, so sock_diag lists it on every kernel (bound-only TCP
        // sockets only from Linux 6.6 on).
        holder.listen(1).expect("listen");
        let second = tcp();
        let errno = errno_of(second.bind(&addr("127.0.0.1:7202")));
        std::thread::sleep(Duration::from_millis(300));
        (errno, rx, child)
    })
    .expect("netns");
    assert_eq!(errno, Some(libc::EADDRINUSE));
    let (stdout, stderr) = stop(child, &rx);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "header, one failure and its explanation: {stdout}\n{stderr:?}"
    );
    assert!(lines[0].starts_with("TIME(s)"), "{stdout}");
    let cols = |l: &str| l.find("PROTO").or_else(|| l.find("tcp")).expect("column");
    assert_eq!(cols(lines[0]), cols(lines[1]), "aligned:\n{stdout}");
    assert!(
        lines[1].contains("EADDRINUSE") && lines[1].contains(":7202"),
        "{stdout}"
    );
    assert!(
        lines[2].trim_start().starts_with("why: ") && lines[2].contains("held by"),
        "{stdout}"
    );
}

/// A service that exits right after its failed bind (a crash loop, the
/// incident itself) still gets its explanation: the namespace is found by
/// its inode through any process inside it, not through the gone caller.
#[test]
fn a_caller_that_exits_at_once_still_gets_its_explanation() {
    use inspector::kernel::sys::{BindSpec, fork_as};
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    const FAILURES: usize = 8;
    let spec = |listen| BindSpec {
        addr: "127.0.0.1:7204".parse().expect("address"),
        stream: true,
        reuseaddr: false,
        reuseport: false,
        v6only: None,
        listen,
        count_on_release: false,
        connect: None,
        comm: None,
    };
    let (stdout, stderr) = in_new_netns(move |_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let (child, rx) = common::start(&[
            "trace",
            "--json",
            "--netns",
            &path,
            "--port",
            "7204",
            "--failures-only",
        ])
        .expect("the probes attach");
        // The holder is a process of its own in the namespace, as a
        // pod's are; each failing caller is reaped before the next.
        let holder = fork_as(65534, &spec(Some(16)), true).expect("holder");
        for _ in 0..FAILURES {
            drop(fork_as(65534, &spec(None), false).expect("caller"));
        }
        std::thread::sleep(Duration::from_millis(300));
        let out = stop(child, &rx);
        drop(holder);
        out
    })
    .expect("netns");
    let refused: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|r: &Value| r["type"] == "bind" && r["errno"] == "EADDRINUSE")
        .collect();
    assert_eq!(refused.len(), FAILURES, "{stdout}\n{stderr:?}");
    for r in &refused {
        let why = r["explanation"].as_str().unwrap_or_default();
        assert!(
            why.contains("held by"),
            "explained although the caller is gone: {r}"
        );
    }
}

#[test]
fn trace_json_ends_with_a_stats_record() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // A quiet namespace of its own keeps the output small: the host's
    // traffic could fill the pipe while nobody reads it.
    let (mut child, rx) = in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        common::start(&["trace", "--json", "--duration", "1", "--netns", &path])
            .expect("the probes attach")
    })
    .expect("netns");
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    let stderr: Vec<String> = rx.iter().collect();
    let stderr = stderr.join("\n");
    assert!(status.success(), "{status:?}: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {stderr}"));
    assert_eq!(last["v"], inspector::model::record::SCHEMA_VERSION);
    assert_eq!(last["type"], "stats", "{last}");
    assert_eq!(last["final"], true, "{last}");
    let events = lines.iter().filter(|r| r["type"] != "stats").count();
    assert_eq!(last["records"], events, "{last}");
    let num = |k: &str| last[k].as_u64().unwrap_or_else(|| panic!("{k}: {last}"));
    assert!(num("events_read") <= num("emitted"), "{last}");
    let errors = last["errors"].as_object().expect("errors");
    assert_eq!(
        errors.values().filter_map(Value::as_u64).sum::<u64>(),
        num("kernel_errors"),
        "{last}"
    );
    assert!(errors.contains_key("read_user_addr"), "{last}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.contains("stats: ") && summary.contains("events read"),
        "{stderr}"
    );
}

#[test]
fn a_duration_no_timer_can_hold_is_one_line_not_a_panic() {
    let (code, err) = failure(&mut inspector(&["trace", "--duration", "1e20"]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--duration"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Runs `inspector ARGS` with its reader gone before it writes (as
/// `| head -1` that has its line); returns (status, stderr).
fn reader_gone_early(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = inspector(args).spawn().expect("spawn inspector");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (wait_bounded(&mut child, Duration::from_secs(30)), err)
}

#[test]
fn a_reader_leaving_is_a_normal_end_for_scenario_list_and_explain() {
    for args in [&["scenario", "list"][..], &["scenario", "list", "--json"]] {
        let (status, err) = reader_gone_early(args);
        assert!(status.success(), "{args:?}: {status:?} {err}");
        assert_eq!(err, "", "{args:?}: nothing printed");
    }
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    for args in [&["explain", "22"][..], &["explain", "22", "--json"]] {
        let (status, err) = reader_gone_early(args);
        assert!(status.success(), "{args:?}: {status:?} {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn trace_notices_its_reader_left_while_nothing_matches() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let (mut child, _rx) =
        common::start(&["trace", "--json", "--comm", "no-such-task", "--port", "1"])
            .expect("the probes attach");
    drop(child.stdout.take());
    // It polls its stdout every second; the bound only proves it ends by
    // itself (software-emulated guests are many times slower).
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_comm_longer_than_the_kernel_keeps_matches_by_its_first_15_bytes() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    const LONG: &str = "inspector-long-thread-name";
    let (rx, child) = in_new_netns(|_| {
        let name = std::ffi::CString::new(LONG).expect("name");
        // SAFETY: PR_SET_NAME reads a NUL-terminated string; the kernel
        // keeps its first 15 bytes as this thread's comm.
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let (child, rx) = common::start(&["trace", "--json", "--netns", &path, "--comm", LONG])
            .expect("the probes attach");
        let s = tcp();
        s.bind(&addr("127.0.0.1:7204")).expect("bind");
        std::thread::sleep(Duration::from_millis(300));
        (rx, child)
    })
    .expect("netns");
    let (stdout, stderr) = stop(child, &rx);
    let binds: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "bind" && r["lport"] == 7204)
        .collect();
    assert_eq!(binds.len(), 1, "{stdout} {stderr:?}");
    assert_eq!(binds[0]["comm"], &LONG[..15]);
}
