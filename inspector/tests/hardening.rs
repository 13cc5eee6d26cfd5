//! The agent among hostile neighbours: what a local user (or a careless
//! operator) can do to a root `record`, `serve`, `trace`, `explain` or a
//! replay, tried for real. Each test is one finding of an adversarial
//! review: a planted symlink, a flood of idle connections, a process name
//! full of escape sequences, a full disk, a decompression bomb, a recording
//! of two million records, SIGTERM to a replay, a recording from the future,
//! and the endpoint behind TLS and a password.

mod common;

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _, symlink},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{
    TempDir, inspector, needs_root,
    serve::{Running, ci, get, spawn_serve, start_prometheus, tool},
    stop,
};
use inspector::kernel::netns::in_new_netns;

/// The bound on a replay's memory (VmHWM), whatever it reads.
const REPLAY_RSS_MAX_KIB: u64 = 128 * 1024;

/// This thread's network namespace, as a path other processes can open.
fn thread_netns() -> String {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    format!("/proc/{}/task/{tid}/ns/net", std::process::id())
}

/// A process of its own named `comm` (any bytes but NUL: a process picks
/// its name) holding a TCP socket bound to 127.0.0.1:`port` in the
/// caller's thread's namespace, listening if asked; ended when dropped.
struct Named {
    _child: inspector::kernel::sys::Forked,
    /// What bind (then listen) returned: 0 or the errno.
    errno: i32,
}

impl Named {
    fn start(comm: &[u8], port: u16, listen: bool) -> Self {
        let spec = inspector::kernel::sys::BindSpec {
            addr: ([127, 0, 0, 1], port).into(),
            stream: true,
            reuseaddr: false,
            reuseport: false,
            v6only: None,
            listen: listen.then_some(16),
            count_on_release: false,
            connect: None,
            comm: Some(CString::new(comm).expect("no NUL in a process name")),
        };
        let child = inspector::kernel::sys::fork_as(0, &spec, true).expect("fork");
        let errno = child.report.first_error().unwrap_or(0);
        Self {
            _child: child,
            errno,
        }
    }
}

/// Reads a child's stream on a thread of its own, line by line.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; every line read so far.
fn wait_for(
    rx: &mpsc::Receiver<Vec<u8>>,
    seen: &mut Vec<u8>,
    needle: &[u8],
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if seen.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => seen.extend(l),
            Err(_) => return false,
        }
    }
}

/// SIGTERM, and waits (bounded) for the end.
fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `inspector ARGS` to its end under time(1); (exit code, stdout,
/// stderr, peak RSS in KiB). Not the rusage of a child forked from this
/// process: Linux carries the peak RSS of the mm a process had before
/// exec() into its `ru_maxrss`, so a child of a test process grown by
/// earlier tests would report the test's size, not the inspector's.
fn run_measured_rss(args: &[&std::ffi::OsStr]) -> (i32, Vec<u8>, String, u64) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("inspector-rss-{}-{n}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"])
        .arg(&file)
        .arg(env!("CARGO_BIN_EXE_inspector"))
        .args(args);
    let (code, out, err, _) = run_measured(c);
    let rss = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("time(1) wrote no peak RSS: {err}"));
    let _ = std::fs::remove_file(&file);
    (code, out, err, rss)
}

/// Runs `cmd` to its end; (exit code, stdout, stderr, the child's
/// `ru_maxrss`: see [`run_measured_rss`] for why that is not the peak RSS
/// of what it runs).
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives the peak RSS"
)]
fn run_measured(mut cmd: Command) -> (i32, Vec<u8>, String, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    let mut status = 0;
    // SAFETY: rusage is plain integers; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        o.join().unwrap_or_default(),
        e.join().unwrap_or_default(),
        u64::try_from(usage.ru_maxrss).unwrap_or(0),
    )
}

// ---- 1. files ----------------------------------------------------------

#[test]
fn a_recording_directory_of_another_user_is_refused_and_planted_links_never_followed() {
    if !needs_root("change a directory's owner and load eBPF programs") {
        return;
    }
    let tmp = TempDir::new("plant");
    let dir = tmp.0.join("rec");
    std::fs::create_dir(&dir).expect("dir");
    // The directory belongs to nobody, who plants a link to a root file
    // under every name the recorder could open next.
    let victim = tmp.0.join("victim");
    std::fs::write(&victim, b"root's secret\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    let out = inspector(&["record", "--output", dir.to_str().expect("utf-8")])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "refused: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("uid 65534") && err.contains("--allow-shared-dir"),
        "{err}"
    );
    for seq in 0..64u64 {
        let link = dir.join(format!("inspector-{seq:06}.ndjson.zst"));
        symlink(&victim, &link).expect("plant");
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    }
    let before = std::fs::read(&victim).expect("victim");
    // Told the directory is shared: it records, but through no link. The
    // links name numbers 0-63; it starts at 64, and its rotation removes
    // links without following them.
    let (recorder, rx) = common::start(&[
        "record",
        "--output",
        dir.to_str().expect("utf-8"),
        "--allow-shared-dir",
        "--max-files",
        "2",
    ])
    .expect("the probes attach");
    // It records until its first file is there (bounded), then stops.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20)
        && !std::fs::read_dir(&dir).expect("list").any(|e| {
            e.and_then(|e| e.path().symlink_metadata())
                .is_ok_and(|m| m.file_type().is_file())
        })
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, err) = stop(recorder, &rx);
    assert!(
        !err.iter().any(|l| l.contains("inspector: error")),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), before, "untouched");
    let meta = std::fs::metadata(&victim).expect("victim");
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut own = 0;
    for entry in std::fs::read_dir(&dir).expect("list") {
        let entry = entry.expect("entry");
        let m = entry.path().symlink_metadata().expect("lstat");
        if m.file_type().is_file() {
            own += 1;
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "private file");
            assert_eq!(m.uid(), 0);
        }
    }
    assert!(own >= 1, "the recorder wrote its own file");
}

// ---- 2. the HTTP endpoint ------------------------------------------------

/// Raises this process's descriptor limit so that it can open `n` sockets.
fn allow_descriptors(n: u64) {
    // SAFETY: plain integers.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: reading and writing our own limits with a valid pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(n.max(lim.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn metric(exposition: &str, prefix: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn idle_and_pipelining_floods_do_not_silence_the_metrics() {
    if !needs_root("load eBPF programs") {
        return;
    }
    allow_descriptors(8192);
    // The unit's descriptor limit: 1,024.
    let Some((mut serve, port)) = spawn_serve(&[], Stdio::inherit(), |c| {
        // SAFETY: setrlimit in the child before exec.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    }) else {
        return;
    };
    // Any local user: 1,100 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 1000, "{} connected", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let body = get(port, "/metrics", "*/*").expect("a scrape is answered");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    assert!(
        metric(&body, "inspector_http_rejected_total{reason=\"evicted\"}") >= 900,
        "the idle ones were closed to make room"
    );
    drop(idle);
    // 200 connections pipelining requests and reading no answer.
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50);
    let pipelining: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
            let _ = s.write_all(&request);
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let body = get(port, "/metrics", "*/*").expect("a scrape is answered");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    assert!(body.contains("inspector_events_total"));
    drop(pipelining);
    assert!(serve.stop(), "clean stop");
}

// ---- 3. process names --------------------------------------------------

#[test]
fn hostile_process_names_reach_no_terminal_and_forge_no_log_line() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    const PORT: u16 = 7301;
    let outcome = in_new_netns(|_| {
        let path = thread_netns();
        let mut trace = Running(
            inspector(&["trace", "--netns", &path])
                .spawn()
                .expect("trace"),
        );
        let trace = &mut trace.0;
        let trace_out = lines_of(trace.stdout.take().expect("stdout"));
        let trace_err = lines_of(trace.stderr.take().expect("stderr"));
        let mut err = Vec::new();
        if !wait_for(&trace_err, &mut err, b"attached", Duration::from_secs(60)) {
            return Err(String::from_utf8_lossy(&err).into_owned());
        }
        let (mut serve, _) = spawn_serve(&["--netns", &path], Stdio::piped(), |_| {})
            .ok_or("serve did not start")?;
        let serve_err = lines_of(serve.0.stderr.take().expect("stderr"));
        // The holder retitles and clears a terminal that prints its name;
        // the second forges a log line.
        let holder = Named::start(b"\x1b]2;PWN\x07\x1b[2J", PORT, true);
        assert_eq!(holder.errno, 0);
        let second = Named::start(b"x\ninspector: OK", PORT, false);
        assert_eq!(second.errno, libc::EADDRINUSE);
        // The same program failing again and again, as a restart loop
        // does (a new pid each time): one log line a minute.
        for _ in 0..30 {
            let again = Named::start(b"x\ninspector: OK", PORT, false);
            assert_eq!(again.errno, libc::EADDRINUSE);
        }
        let explain = inspector(&["explain", &PORT.to_string(), "--netns", &path])
            .output()
            .expect("explain");
        let mut out = Vec::new();
        let seen = wait_for(&trace_out, &mut out, b"EADDRINUSE", Duration::from_secs(30));
        let mut log = Vec::new();
        let logged = wait_for(
            &serve_err,
            &mut log,
            b"failed with EADDRINUSE",
            Duration::from_secs(30),
        );
        // The explanation names the holder: wait for the why line too.
        wait_for(&trace_out, &mut out, b"why:", Duration::from_secs(10));
        terminate(trace);
        out.extend(trace_out.try_iter().flatten());
        err.extend(trace_err.try_iter().flatten());
        assert!(serve.stop());
        log.extend(serve_err.try_iter().flatten());
        drop((holder, second));
        Ok((seen, out, err, explain, logged, log))
    })
    .expect("netns");
    let (seen, out, err, explain, logged, log) = match outcome {
        Ok(v) => v,
        Err(banner) => {
            assert!(!ci(), "CI=true and trace did not attach: {banner}");
            eprintln!("SKIPPED: trace did not attach: {banner}");
            return;
        }
    };
    assert!(
        seen,
        "trace reported the failure: {}",
        String::from_utf8_lossy(&out)
    );
    for (what, bytes) in [
        ("trace stdout", &out),
        ("trace stderr", &err),
        ("explain stdout", &explain.stdout),
        ("explain stderr", &explain.stderr),
        ("serve log", &log),
    ] {
        assert!(
            !bytes.contains(&0x1b),
            "{what} carries an escape byte: {}",
            String::from_utf8_lossy(bytes)
        );
    }
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("x\\x0ainspector: OK"),
        "the name, escaped: {out}"
    );
    let explain = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.contains("\\x1b]2;PWN\\x07"), "{explain}");
    assert!(logged, "serve logged the failure");
    let log = String::from_utf8_lossy(&log);
    assert!(
        !log.lines().any(|l| l.starts_with("inspector: OK")),
        "a forged line: {log}"
    );
    assert_eq!(
        log.matches("failed with EADDRINUSE").count(),
        1,
        "31 failures of one kind, one line: {log}"
    );
}

// ---- 4. a full disk -----------------------------------------------------

#[test]
fn a_full_disk_stops_the_recording_not_the_agent() {
    if !needs_root("mount a tmpfs and load eBPF programs") {
        return;
    }
    let tmp = TempDir::new("enospc");
    let mnt = tmp.0.join("small");
    std::fs::create_dir(&mnt).expect("dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mount -t tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let rec = mnt.join("rec");
    let result = in_new_netns(move |_| {
        let path = thread_netns();
        let (mut serve, port) = spawn_serve(
            &["--netns", &path, "--record", rec.to_str().expect("utf-8")],
            Stdio::piped(),
            |_| {},
        )?;
        let serve_err = lines_of(serve.0.stderr.take().expect("stderr"));
        // Records until the 256 KiB fill: bind failures (one record each,
        // with a long explanation) and connections.
        let holder = std::net::TcpListener::bind("127.0.0.1:7302").expect("listen");
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut stopped = false;
        while !stopped && Instant::now() < deadline {
            for _ in 0..200 {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .expect("socket");
                let _ = s.bind(
                    &"127.0.0.1:7302"
                        .parse::<std::net::SocketAddr>()
                        .expect("addr")
                        .into(),
                );
                let _ = TcpStream::connect("127.0.0.1:7302");
                let _ = holder.accept();
            }
            stopped = wait_for(
                &serve_err,
                &mut log,
                b"recording stopped",
                Duration::from_millis(100),
            );
        }
        let alive = serve.0.try_wait().is_ok_and(|s| s.is_none());
        let body = get(port, "/metrics", "*/*");
        let clean = serve.stop();
        log.extend(serve_err.try_iter().flatten());
        Some((stopped, alive, body, clean, log))
    })
    .expect("netns");
    let Some((stopped, alive, body, clean, log)) = result else {
        return;
    };
    let log = String::from_utf8_lossy(&log);
    assert!(stopped, "the write error is logged: {log}");
    assert_eq!(
        log.matches("No space left on device").count(),
        1,
        "one line, each cause once: {log}"
    );
    assert!(alive, "serve goes on: {log}");
    let body = body.expect("/metrics answers after the disk filled");
    assert!(
        metric(&body, "inspector_record_errors_total") >= 1,
        "{body}"
    );
    assert!(body.contains("inspector_recording 0"), "stopped, said so");
    assert!(clean, "a clean stop");
}

// ---- 5. replay memory ---------------------------------------------------

/// A recording's header line.
fn header_line(v: u32) -> Vec<u8> {
    let mut h = serde_json::to_vec(&inspector::recording::Header::new(
        "tracepoint".into(),
        "none".into(),
    ))
    .expect("json");
    let current = inspector::model::record::SCHEMA_VERSION;
    if v != current {
        h = String::from_utf8(h)
            .expect("utf-8")
            .replace(&format!("\"v\":{current}"), &format!("\"v\":{v}"))
            .into_bytes();
    }
    h.push(b'\n');
    h
}

/// A recording of `n` connect records, as `inspector record` writes them.
fn big_recording(dir: &Path, n: u64) {
    let header = inspector::recording::Header::new("tracepoint".into(), "none".into());
    let mut w = inspector::recording::Writer::create(
        dir,
        inspector::recording::Limits {
            max_size: 1 << 40,
            max_files: 1,
        },
        &header,
        false,
    )
    .expect("writer");
    let mut tracker = inspector::model::tracker::Tracker::new();
    let mut records = Vec::new();
    let ev = inspector::fixture::EventBuilder::connect(5000)
        .owner(4242, "client")
        .ports(40000, 5000)
        .build();
    tracker.apply(&ev, &mut records);
    let mut r = records.pop().expect("a connect record");
    for i in 0..n {
        r.ts_ns = header.start_mono_ns + i * 1_000;
        r.lport = 32768 + (i % 28000) as u16;
        inspector::output::ndjson::write(&r, &mut w.pending);
        if w.full() {
            w.flush().expect("flush");
        }
    }
    w.flush().expect("flush");
}

#[test]
fn replay_memory_is_bounded_for_a_bomb_and_for_two_million_records() {
    let tmp = TempDir::new("replay-mem");
    // 1 GiB of zeros after a header: about 33 KB compressed.
    let bomb = tmp.0.join("bomb.ndjson.zst");
    {
        let f = std::fs::File::create(&bomb).expect("bomb");
        let mut z = zstd::stream::Encoder::new(f, 3).expect("encoder");
        z.write_all(&header_line(1)).expect("header");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            z.write_all(&zeros).expect("zeros");
        }
        z.finish().expect("finish");
    }
    let size = std::fs::metadata(&bomb).expect("bomb").len();
    let (code, _, err, rss) =
        run_measured_rss(&["trace".as_ref(), "--replay".as_ref(), bomb.as_os_str()]);
    eprintln!("bomb of {size} bytes: exit {code}, peak RSS {rss} KiB: {err}");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(rss <= REPLAY_RSS_MAX_KIB, "{rss} KiB");

    let dir = tmp.0.join("big");
    big_recording(&dir, 2_000_000);
    let on_disk: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // trace --replay on one core, the dashboard's replay on the other.
    let text = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = run_measured_rss(&[
                "trace".as_ref(),
                "--failures-only".as_ref(),
                "--replay".as_ref(),
                dir.as_os_str(),
            ]);
            (r, start.elapsed())
        })
    };

    // The dashboard over the same recording, in a terminal.
    let Some(tmux) = Tmux::start(&format!(
        "/usr/bin/time -f %M -o {} {} dashboard --replay {} --speed 1000000",
        tmp.0.join("rss").display(),
        env!("CARGO_BIN_EXE_inspector"),
        dir.display()
    )) else {
        return;
    };
    let end = tmux.wait_for("x1000000 end", Duration::from_secs(300));
    tmux.keys("q");
    let rss = tmux.wait_file(&tmp.0.join("rss"), Duration::from_secs(30));
    drop(tmux);
    let ((code, _, err, text_rss), took) = text.join().expect("trace --replay");
    eprintln!(
        "2,000,000 records ({on_disk} bytes): trace --replay exit {code} in {took:.1?}, peak RSS {text_rss} KiB"
    );
    assert_eq!(code, 0, "{err}");
    assert!(text_rss <= REPLAY_RSS_MAX_KIB, "{text_rss} KiB");
    assert!(end, "the replay reached its end");
    let rss: u64 = rss.trim().parse().unwrap_or(u64::MAX);
    eprintln!("dashboard --replay of 2,000,000 records: peak RSS {rss} KiB");
    assert!(rss <= REPLAY_RSS_MAX_KIB, "{rss} KiB");
}

// ---- 6. SIGTERM to a replay ---------------------------------------------

/// A tmux session of its own running `command` in a 100x30 window, then
/// `stty -a` into a file (the terminal as the command left it).
struct Tmux {
    name: String,
    dir: TempDir,
}

impl Tmux {
    fn start(command: &str) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(!ci(), "CI=true and tmux is missing");
            eprintln!("SKIPPED: tmux not found");
            return None;
        }
        let dir = TempDir::new("tmux");
        let name = format!("inspector-hard-{}", std::process::id());
        let script = format!("{command}; stty -a > {}/stty; sleep 60", dir.0.display());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                "-s",
                &name,
                &script,
            ])
            .env_remove("TMUX")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session");
        Some(Self { name, dir })
    }

    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn wait_for(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.screen().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn keys(&self, keys: &str) {
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys])
            .status();
    }

    fn format(&self, f: &str) -> String {
        Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, f])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn wait_file(&self, path: &Path, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(t) = std::fs::read_to_string(path)
                && !t.is_empty()
            {
                return t;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        String::new()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// The pid of the process running `exe` whose parent is `parent`.
fn child_running(parent: u32, exe: &str) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.to_string_lossy().contains(exe))
        })
}

#[test]
fn sigterm_gives_the_terminal_back_from_a_replay() {
    let tmp = TempDir::new("replay-term");
    let dir = tmp.0.join("rec");
    big_recording(&dir, 10);
    let Some(tmux) = Tmux::start(&format!(
        "{} dashboard --replay {} --step",
        env!("CARGO_BIN_EXE_inspector"),
        dir.display()
    )) else {
        return;
    };
    assert!(
        tmux.wait_for("replay", Duration::from_secs(30)),
        "{}",
        tmux.screen()
    );
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "the dashboard's screen"
    );
    let shell: u32 = tmux.format("#{pane_pid}").parse().expect("pane pid");
    let pid = child_running(shell, "inspector").expect("the replay's pid");
    // SAFETY: kill(2) with a pid we just read; the worst case is ESRCH.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stty = tmux.wait_file(&tmux.dir.0.join("stty"), Duration::from_secs(10));
    assert!(!stty.is_empty(), "the replay ended on SIGTERM");
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            stty.split_whitespace().any(|w| w == mode),
            "{mode} is back on: {stty}"
        );
    }
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "the normal screen is back"
    );
}

// ---- 7. what replay refuses ----------------------------------------------

#[test]
fn replay_refuses_garbage_and_recordings_from_a_future_schema() {
    let tmp = TempDir::new("replay-refuse");
    let future = tmp.0.join("future.ndjson.zst");
    std::fs::write(
        &future,
        zstd::bulk::compress(&header_line(99), 3).expect("zstd"),
    )
    .expect("write");
    let garbage = tmp.0.join("garbage");
    std::fs::write(&garbage, b"GET / HTTP/1.0\r\n\r\n").expect("write");
    for (file, needle) in [(&future, "schema v99"), (&garbage, "not a recording")] {
        for args in [&["trace", "--replay"][..], &["trace", "--json", "--replay"]] {
            let out = inspector(args).arg(file).output().expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} {}: {err}",
                file.display()
            );
            assert!(err.contains(needle), "{err}");
            assert!(out.stdout.is_empty(), "nothing printed before the refusal");
        }
    }
}

// ---- 8. TLS and basic auth --------------------------------------------

/// A CA and a server certificate for 127.0.0.1 it signed, made with
/// openssl; (ca, cert, key).
fn certificates(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").ok()?;
    let ok = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    if !ok {
        assert!(!ci(), "CI=true and openssl cannot make certificates");
        eprintln!("SKIPPED: openssl cannot make certificates");
        return None;
    }
    Some((
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    ))
}

fn curl(args: &[&str]) -> (u32, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn tls_and_basic_auth_are_scraped_by_curl_and_a_real_prometheus() {
    if !needs_root("load eBPF programs") {
        return;
    }
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let tmp = TempDir::new("tls");
    let Some((ca, cert, key)) = certificates(&tmp.0) else {
        return;
    };
    let hash = bcrypt::hash("s3cret pass", 6).expect("bcrypt");
    let web = tmp.0.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("web.yml");
    let port = common::serve::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--web-config",
        ])
        .arg(&web)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve");
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca_arg = ca.to_str().expect("utf-8");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answer = (0, String::new());
    while Instant::now() < deadline {
        answer = curl(&["--cacert", ca_arg, "-u", "prometheus:s3cret pass", &url]);
        if answer.0 == 200 || child.try_wait().is_ok_and(|s| s.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut serve = Running(child);
    assert_eq!(answer.0, 200, "curl with the CA and the password");
    assert!(answer.1.contains("inspector_events_total"));
    assert_eq!(curl(&["--cacert", ca_arg, &url]).0, 401, "no password");
    assert_eq!(
        curl(&["--cacert", ca_arg, "-u", "prometheus:wrong", &url]).0,
        401,
        "a wrong password"
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/metrics")]).0,
        0,
        "no plain HTTP on a TLS port"
    );
    let (mut prom, prom_port) = start_prometheus(
        &prometheus,
        &format!(
            "  - job_name: inspector\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: 's3cret pass'\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca.display()
        ),
        &tmp.0,
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut up = String::new();
    while Instant::now() < deadline {
        up = get(
            prom_port,
            "/api/v1/query?query=up%7Bjob%3D%22inspector%22%7D",
            "application/json",
        )
        .unwrap_or_default();
        if up.contains("\"value\":[") && up.contains(",\"1\"]") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    prom.stop();
    assert!(
        up.contains(",\"1\"]"),
        "Prometheus scraped over TLS with the password: {up}"
    );
    assert!(serve.stop(), "clean stop");
}
