//! What tracing costs the traced: a loopback workload run untraced, traced by
//! `inspector trace --json`, watched by `inspector serve` (metrics only),
//! and traced by bpftrace on the same tracepoints (counting, and printing
//! every state change), alternated in one run; the tax on unrelated system
//! calls (1-byte writes to /dev/null) in the same rounds; plus the
//! inspector's resident memory after a million events. Needs root.
//!
//! The workload is pinned to CPU 0 and every tracer to CPU 1 (on a machine
//! with two or more CPUs). CPU per connection is the workload's own CPU
//! (user + system: the kernel programs run in its context, loopback
//! softirqs too) plus the tracer process's, so other load on the machine
//! does not count. This machine has phases in which the same untraced loop
//! runs 2-3x faster: every round times a fixed CPU loop before each mode,
//! and a round whose probes differ by more than [`MIXED_PHASE`] is left out
//! (counted). Figures are medians of per-round ratios, with their spread.
//! After the rounds, each tracer's eBPF programs are timed on their own
//! (kernel run-time statistics, which would tax the rounds themselves).
//! Run by `cargo xtask bench`, which builds the release binary first:
//!
//! `overhead --inspector target/release/inspector --out target/bench [--smoke] [--long]`
//!
//! Writes `overhead.json` in the output directory and prints a summary.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use socket2::{Domain, SockAddr, Socket, Type};

const PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;

/// The bpftrace counterpart of the inspector's hooks: the same tracepoints
/// and filters, counting instead of emitting events.
const BPFTRACE: &str = r#"
tracepoint:syscalls:sys_enter_bind, tracepoint:syscalls:sys_enter_listen, tracepoint:syscalls:sys_enter_connect { @enter = count(); }
tracepoint:syscalls:sys_exit_bind, tracepoint:syscalls:sys_exit_listen, tracepoint:syscalls:sys_exit_connect, tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 { @exit = count(); }
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { @state = count(); if (args->sport == 7000 || args->dport == 7000) { @state_port = count(); if (args->newstate == 10 || args->newstate == 3 || args->newstate == 7) { @life_port = count(); } } }
tracepoint:sock:sk_data_ready { @ready = count(); }
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { @tw_arm = count(); }
tracepoint:timer:timer_cancel /((struct timer_list *)args->timer)->function == kaddr("tw_timer_handler")/ { @tw_cancel = count(); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { @tw_expire = count(); }
"#;

/// bpftrace printing what `trace --json` reports of the workload: each
/// call's result and the state changes into LISTEN, SYN_RECV and CLOSE, one
/// line each (to a file, like `trace --json`).
const BPFTRACE_PRINT: &str = r#"
tracepoint:syscalls:sys_exit_bind, tracepoint:syscalls:sys_exit_listen, tracepoint:syscalls:sys_exit_connect, tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 { printf("exit %d %d %s\n", pid, args->ret, comm); }
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->newstate == 10 || args->newstate == 3 || args->newstate == 7)/ { printf("state %d %d %d %d %d\n", pid, args->sport, args->dport, args->oldstate, args->newstate); }
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { printf("tw_arm %p\n", args->timer); }
"#;

/// A round whose phase probes (the same CPU loop before each mode) differ
/// by more than this factor ran across a change of the machine's phase.
const MIXED_PHASE: f64 = 1.25;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Untraced,
    /// `trace --json`: the decisions.
    Inspector,
    /// `trace --json --connections`: each connection's life too.
    InspectorConnections,
    /// `trace --json --states`: every state change.
    InspectorStates,
    Serve,
    Bpftrace,
    BpftracePrint,
    /// `trace --json` of another build (`--baseline PATH`): a change
    /// measured against what it replaces, in the same rounds.
    Baseline,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Inspector => "inspector",
            Mode::InspectorConnections => "inspector_connections",
            Mode::InspectorStates => "inspector_states",
            Mode::Serve => "serve",
            Mode::Bpftrace => "bpftrace",
            Mode::BpftracePrint => "bpftrace_print",
            Mode::Baseline => "baseline",
        }
    }
}

const MODES: [Mode; 7] = [
    Mode::Untraced,
    Mode::Inspector,
    Mode::InspectorConnections,
    Mode::InspectorStates,
    Mode::Serve,
    Mode::Bpftrace,
    Mode::BpftracePrint,
];

struct Args {
    inspector: PathBuf,
    out: PathBuf,
    smoke: bool,
    long: bool,
    /// Only the agent's memory over this many connections, then exit.
    serve_memory: Option<usize>,
    /// The modes to compare (`--modes inspector,bpftrace`; untraced always
    /// runs, first): all by default.
    modes: Vec<Mode>,
    /// Rounds instead of the default 7 (`--rounds N`).
    rounds: Option<usize>,
    /// No memory run.
    no_memory: bool,
    /// Another inspector build, run as `trace --json` in a mode of its own.
    baseline: Option<PathBuf>,
    /// Only the TCP workload, this many connections (`--tcp N`), for
    /// profiling a tracer started by hand.
    tcp_only: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        inspector: PathBuf::from("target/release/inspector"),
        out: PathBuf::from("target/bench"),
        smoke: false,
        long: false,
        serve_memory: None,
        modes: MODES.to_vec(),
        rounds: None,
        no_memory: false,
        baseline: None,
        tcp_only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--inspector" => a.inspector = it.next().map(PathBuf::from).unwrap_or(a.inspector),
            "--out" => a.out = it.next().map(PathBuf::from).unwrap_or(a.out),
            "--smoke" => a.smoke = true,
            "--long" => a.long = true,
            "--serve-memory" => a.serve_memory = it.next().and_then(|n| n.parse().ok()),
            "--modes" => {
                let list = it.next().unwrap_or_default();
                a.modes = vec![Mode::Untraced];
                for name in list.split(',') {
                    match MODES.iter().find(|m| m.name() == name) {
                        Some(&m) if m != Mode::Untraced => a.modes.push(m),
                        Some(_) => {}
                        None => {
                            eprintln!(
                                "overhead: unknown mode {name}; modes: inspector, inspector_connections, inspector_states, serve, bpftrace, bpftrace_print"
                            );
                            std::process::exit(2);
                        }
                    }
                }
            }
            "--rounds" => a.rounds = it.next().and_then(|n| n.parse().ok()),
            "--no-memory" => a.no_memory = true,
            "--baseline" => a.baseline = it.next().map(PathBuf::from),
            "--tcp" => a.tcp_only = it.next().and_then(|n| n.parse().ok()),
            "--bench" => {}
            other => {
                eprintln!("overhead: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// A running tracer and what it reports when stopped.
struct Tracer {
    child: Child,
    /// CPU (ns) it had used when ready: start-up is not tracing cost.
    cpu_at_start: u64,
    stderr: mpsc::Receiver<String>,
    mode: Mode,
    /// Where its per-event output goes (`trace --json`, bpftrace printing).
    output: Option<PathBuf>,
}

fn spawn_lines(child: &mut Child, stdout: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stream: Box<dyn std::io::Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("stdout piped"))
    } else {
        Box::new(child.stderr.take().expect("stderr piped"))
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Restricts the calling thread (and the threads and children it starts
/// later) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `program` started on the tracer's CPU (1), if the machine has two.
fn tracer_command(program: &std::path::Path, pinned: bool) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut c = Command::new(program);
    if pinned {
        // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            c.pre_exec(|| {
                pin_to(1);
                Ok(())
            });
        }
    }
    c
}

/// Starts an inspector command and waits until it says its probes are
/// attached (its first line on standard error); its standard error as
/// lines.
fn spawn_attached(
    c: &mut Command,
    stdout: impl Into<Stdio>,
    what: &str,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = c
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let rx = spawn_lines(&mut child, false);
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    assert!(first.contains("attached"), "{what}: {first}");
    (child, rx)
}

/// `inspector serve` on `listen`, once its probes are attached; its
/// standard error as lines.
fn start_serve(a: &Args, pinned: bool, listen: &str) -> (Child, mpsc::Receiver<String>) {
    let mut c = tracer_command(&a.inspector, pinned);
    c.args(["serve", "--listen", listen]);
    spawn_attached(&mut c, Stdio::null(), "inspector serve")
}

fn start(mode: Mode, a: &Args, round: usize, pinned: bool) -> Option<Tracer> {
    let (mut child, rx, output) = match mode {
        Mode::Untraced => return None,
        Mode::Inspector | Mode::InspectorConnections | Mode::InspectorStates | Mode::Baseline => {
            let json = a.out.join(format!("trace-round{round}.ndjson"));
            let file = std::fs::File::create(&json).expect("trace output file");
            let program = match (&a.baseline, mode) {
                (Some(b), Mode::Baseline) => b,
                _ => &a.inspector,
            };
            let mut c = tracer_command(program, pinned);
            c.args(["trace", "--json"]);
            match mode {
                Mode::InspectorStates => {
                    c.arg("--states");
                }
                Mode::InspectorConnections => {
                    c.arg("--connections");
                }
                _ => {}
            }
            let (child, rx) = spawn_attached(&mut c, file, "inspector trace");
            (child, rx, Some(json))
        }
        Mode::Serve => {
            let (child, rx) = start_serve(a, pinned, "127.0.0.1:9478");
            (child, rx, None)
        }
        Mode::Bpftrace | Mode::BpftracePrint => {
            let printing = mode == Mode::BpftracePrint;
            let path = a.out.join(format!("bpftrace-round{round}.txt"));
            let mut c = tracer_command(std::path::Path::new("bpftrace"), pinned);
            if printing {
                // bpftrace prints "Attaching N probes..." first, then the
                // events; -o sends both to the file, so wait on the file.
                c.args(["-o"]).arg(&path).args(["-e", BPFTRACE_PRINT]);
                c.stdout(Stdio::null());
            } else {
                c.args(["-e", BPFTRACE]).stdout(Stdio::piped());
            }
            let mut child = c
                .stderr(Stdio::piped())
                .spawn()
                .expect("start bpftrace (apt install bpftrace)");
            let rx = if printing {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains("Attaching")) {
                    assert!(Instant::now() < deadline, "bpftrace did not start");
                    std::thread::sleep(Duration::from_millis(50));
                }
                spawn_lines(&mut child, false)
            } else {
                let rx = spawn_lines(&mut child, true);
                let first = rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("bpftrace started");
                assert!(first.contains("Attaching"), "bpftrace: {first}");
                rx
            };
            (child, rx, printing.then_some(path))
        }
    };
    let cpu_at_start = cpu_ns(child.id());
    if cpu_at_start == 0 {
        let _ = child.kill();
        panic!("cannot read the tracer's CPU time");
    }
    Some(Tracer {
        child,
        cpu_at_start,
        stderr: rx,
        mode,
        output,
    })
}

/// Stops a tracer; returns what it counted (state changes on the workload
/// port, events read, dropped).
fn stop(t: Tracer) -> Value {
    let cpu_ms = cpu_ns(t.child.id()).saturating_sub(t.cpu_at_start) / 1_000_000;
    let sig = if matches!(t.mode, Mode::Bpftrace | Mode::BpftracePrint) {
        libc::SIGINT
    } else {
        libc::SIGTERM
    };
    let mut child = t.child;
    // A signal that lands while bpftrace is still setting up can go
    // unanswered: ask again every second, and give up after 30.
    for i in 0..120 {
        if i % 4 == 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("overhead: {} did not stop; killed", t.mode.name());
        let _ = child.kill();
    }
    let _ = child.wait();
    let lines: Vec<String> = t.stderr.try_iter().collect();
    match t.mode {
        Mode::Bpftrace => {
            let get = |name: &str| -> u64 {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(&format!("@{name}: ")))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            json!({
                "state_changes_on_port": get("state_port"),
                "lifecycle_changes_on_port": get("life_port"),
                "state_changes": get("state"),
                "syscalls": get("exit"),
                "tw_arm": get("tw_arm"),
                "tracer_cpu_ms": cpu_ms,
            })
        }
        Mode::BpftracePrint => {
            let mut on_port = 0u64;
            let mut lines = 0u64;
            if let Some(path) = &t.output
                && let Ok(text) = std::fs::read_to_string(path)
            {
                for l in text.lines() {
                    lines += 1;
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let port = u64::from(PORT).to_string();
                    if f.first() == Some(&"state")
                        && (f.get(2) == Some(&port.as_str()) || f.get(3) == Some(&port.as_str()))
                    {
                        on_port += 1;
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            json!({
                "state_changes_on_port": on_port,
                "lines": lines,
                "tracer_cpu_ms": cpu_ms,
            })
        }
        _ => {
            let summary = lines
                .iter()
                .rev()
                .find(|l| l.contains("events read"))
                .cloned()
                .unwrap_or_default();
            let num = |word: &str| -> u64 {
                let words: Vec<&str> = summary.split_whitespace().collect();
                words
                    .iter()
                    .position(|w| w.starts_with(word))
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| words[i].parse().ok())
                    .unwrap_or(0)
            };
            let mut on_port = 0u64;
            let mut tw = 0u64;
            let mut tw_on_port = 0u64;
            if let Some(path) = &t.output
                && let Ok(text) = std::fs::read_to_string(path)
            {
                for line in text.lines() {
                    let Ok(r) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    let port = |k: &str| r[k].as_u64() == Some(u64::from(PORT));
                    if r["type"] == "state"
                        && r["proto"] == "tcp"
                        && (port("lport") || port("rport"))
                    {
                        on_port += 1;
                    }
                    if r["type"] == "tw_enter" {
                        tw += 1;
                        if port("lport") || port("rport") {
                            tw_on_port += 1;
                        }
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            // `trace --connections` reports a socket's change into CLOSE
            // as it enters TIME_WAIT by its tw_enter alone.
            let changes = if t.mode == Mode::InspectorConnections {
                on_port + tw_on_port
            } else {
                on_port
            };
            json!({
                "state_changes_on_port": changes,
                "state_records_on_port": on_port,
                "events_read": num("events"),
                "dropped": num("dropped"),
                "tw_enter": tw,
                "tw_enter_on_port": tw_on_port,
                "tracer_cpu_ms": cpu_ms,
                "summary": summary,
            })
        }
    }
}

/// Moves this thread (and the threads it starts from now on) into a new
/// network namespace with the workload's settings.
fn fresh_netns() {
    inspector::kernel::netns::enter_new_netns().expect("network namespace");
    for (k, v) in [
        ("net/ipv4/ip_local_port_range", "10000 65000"),
        ("net/ipv4/tcp_tw_reuse", "1"),
    ] {
        inspector::kernel::netns::set_sysctl(k, v).expect("sysctl");
    }
}

/// `n` loopback TCP connections, the server closing first; connections/s.
fn tcp_workload(n: usize) -> f64 {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener.set_reuse_address(true).expect("SO_REUSEADDR");
    let addr: SockAddr = SocketAddr::from(([127, 0, 0, 1], PORT)).into();
    listener.bind(&addr).expect("bind");
    listener.listen(1024).expect("listen");
    let start = Instant::now();
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            match listener.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => break,
            }
        }
    });
    for _ in 0..n {
        let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        if c.connect(&addr).is_ok() {
            // Wait for the server's FIN so the server's side is TIME_WAIT.
            let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            let _ = c.recv(&mut b);
        }
    }
    let _ = server.join();
    n as f64 / start.elapsed().as_secs_f64()
}

/// `n` datagrams from 16 sources to a SO_REUSEPORT pair; received/s.
fn udp_workload(n: usize) -> f64 {
    let addr: SockAddr = SocketAddr::from(([127, 0, 0, 1], UDP_PORT)).into();
    let receivers: Vec<Socket> = (0..2)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
            s.set_reuse_port(true).expect("SO_REUSEPORT");
            s.set_recv_buffer_size(4 << 20).expect("rcvbuf");
            s.bind(&addr).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            s
        })
        .collect();
    let start = Instant::now();
    let total = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for r in &receivers {
            let total = &total;
            scope.spawn(move || {
                let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                while r.recv(&mut b).is_ok() {
                    total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let senders: Vec<Socket> = (0..16)
            .map(|_| Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket"))
            .collect();
        for i in 0..n {
            let _ = senders[i % senders.len()].send_to(b"inspector", &addr);
        }
    });
    let got = total.load(std::sync::atomic::Ordering::Relaxed);
    got as f64 / (start.elapsed().as_secs_f64() - 0.1).max(1e-3)
}

/// `n` one-byte writes to /dev/null, a system call no hook decodes; ns per
/// call. What a tracer adds here it adds to every unrelated call of the host.
fn syscall_tax(n: usize) -> f64 {
    use std::os::fd::AsRawFd as _;
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return f64::NAN;
    };
    let fd = null.as_raw_fd();
    let byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: `fd` is open for the whole loop and `byte` outlives the call.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// CPU time (ns) every thread of process `pid` has run so far, from the
/// scheduler's own accounting (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// User + system CPU (ns) of this process: the workload, and everything
/// the kernel did in its context (the tracers' programs, loopback softirqs).
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Time (ns) of a fixed CPU-bound loop: the machine's phase right now.
fn phase_probe() -> f64 {
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    start.elapsed().as_nanos() as f64
}

/// Total run time (ns) and runs of every loaded eBPF program, by id
/// (`bpf_prog_info`; counted only while run-time statistics are on).
fn program_stats() -> std::collections::HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), (p.run_time().as_nanos() as u64, p.run_count())))
        .collect()
}

/// The kernel side of each tracer alone: the run time of the eBPF programs
/// it loaded, per connection of the TCP workload, `runs` times per mode,
/// interleaved. Run-time statistics (`BPF_ENABLE_STATS`, on while its
/// descriptor is open) cost every program run two clock reads, so this
/// comes after the rounds and never overlaps them. Unlike the workload's
/// CPU time, this moves little with the machine's phases.
fn program_time(a: &Args, modes: &[Mode], conns: usize, runs: usize, pinned: bool) -> Value {
    let _stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => fd,
        Err(e) => return json!({ "error": format!("BPF_ENABLE_STATS: {e}") }),
    };
    let mut per_mode: Vec<(Mode, Vec<f64>, Vec<f64>)> = modes
        .iter()
        .filter(|m| **m != Mode::Untraced)
        .map(|&m| (m, Vec::new(), Vec::new()))
        .collect();
    for run in 0..runs {
        for (mode, ns, count) in &mut per_mode {
            fresh_netns();
            std::thread::sleep(Duration::from_millis(300));
            // Programs loaded before the tracer are the host's, not its.
            let host = program_stats();
            let Some(t) = start(*mode, a, run, pinned) else {
                continue;
            };
            let before = program_stats();
            tcp_workload(conns);
            std::thread::sleep(Duration::from_millis(300));
            let after = program_stats();
            stop(t);
            let (mut time, mut program_runs) = (0, 0);
            for (id, (t1, r1)) in &after {
                if host.contains_key(id) {
                    continue;
                }
                let (t0, r0) = before.get(id).copied().unwrap_or((0, 0));
                time += t1.saturating_sub(t0);
                program_runs += r1.saturating_sub(r0);
            }
            ns.push(time as f64 / 1e3 / conns as f64);
            count.push(program_runs as f64 / conns as f64);
        }
    }
    let mut us = serde_json::Map::new();
    let mut program_runs = serde_json::Map::new();
    for (mode, ns, count) in per_mode {
        us.insert(mode.name().to_owned(), spread(ns));
        program_runs.insert(mode.name().to_owned(), spread(count));
    }
    json!({ "runs": runs, "us_per_connection": us, "program_runs_per_connection": program_runs })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Median, smallest and largest of `v`.
fn spread(mut v: Vec<f64>) -> Value {
    let m = median(&mut v);
    json!({
        "median": m,
        "min": v.first().copied().unwrap_or(f64::NAN),
        "max": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The inspector's RSS while it reads `target` events (and, with `long`,
/// every 30 s of a 5-minute run at full rate).
fn memory(a: &Args, target: u64, long: bool, pinned: bool) -> Value {
    let mut child = tracer_command(&a.inspector, pinned)
        .args(["trace", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start inspector");
    let rx = spawn_lines(&mut child, false);
    let _ = rx.recv_timeout(Duration::from_secs(30));
    let pid = child.id();
    let baseline = rss_kib(pid);
    // ~13 events per connection: connect, accept, 10 state changes, tw.
    let connections = (target / 13) as usize;
    let start = Instant::now();
    let mut done = 0;
    while done < connections {
        tcp_workload(2000.min(connections - done));
        done += 2000;
    }
    let after_target = rss_kib(pid);
    let mut samples = Vec::new();
    if long {
        let until = Instant::now() + Duration::from_secs(300);
        while Instant::now() < until {
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(30) {
                tcp_workload(2000);
            }
            samples.push(json!({ "t_s": start.elapsed().as_secs(), "rss_kib": rss_kib(pid) }));
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let mut stderr_rest = String::new();
    for l in rx.try_iter() {
        stderr_rest.push_str(&l);
        stderr_rest.push('\n');
    }
    let summary = stderr_rest
        .lines()
        .rev()
        .find(|l| l.contains("events read"))
        .unwrap_or("")
        .to_owned();
    json!({
        "rss_kib_start": baseline,
        "rss_kib_after_events": after_target,
        "events_target": target,
        "summary": summary,
        "long_run": samples,
    })
}

/// `inspector serve`'s resident memory while the TCP loop makes
/// `connections` connections (about 13 kernel events each), sampled every
/// 100,000 connections, with a scrape before each sample.
fn serve_memory(a: &Args, connections: usize, pinned: bool) -> Value {
    let (mut child, rx) = start_serve(a, pinned, "127.0.0.1:9479");
    let pid = child.id();
    let scrape = || {
        use std::io::{Read as _, Write as _};
        if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:9479") {
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let mut body = Vec::new();
            let _ = s.read_to_end(&mut body);
        }
    };
    let start = Instant::now();
    let mut samples = vec![json!({ "connections": 0, "rss_kib": rss_kib(pid) })];
    let mut done = 0;
    while done < connections {
        let n = 100_000.min(connections - done);
        let mut left = n;
        while left > 0 {
            let k = 5_000.min(left);
            tcp_workload(k);
            left -= k;
        }
        done += n;
        scrape();
        samples.push(json!({ "connections": done, "t_s": start.elapsed().as_secs(), "rss_kib": rss_kib(pid) }));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    json!({ "serve_memory": samples, "summary": rx.try_iter().last() })
}

/// What one mode measured in one round.
#[derive(Clone, Copy)]
struct Sample {
    phase_ns: f64,
    tax_ns: f64,
    tcp_per_s: f64,
    cpu_us_per_conn: f64,
    /// The two parts of `cpu_us_per_conn`: the workload's own (with the
    /// kernel programs and softirqs in its context), the tracer's.
    workload_us_per_conn: f64,
    tracer_us_per_conn: f64,
    udp_per_s: f64,
}

fn main() {
    let a = args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("overhead: needs root (eBPF, network namespaces): run with sudo");
        std::process::exit(1);
    }
    std::fs::create_dir_all(&a.out).expect("output directory");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2;
    if pinned {
        // The workload (this thread and those it starts) on CPU 0, the
        // tracers on CPU 1.
        pin_to(0);
    }
    // The workload runs in a namespace of its own, on this thread.
    fresh_netns();
    if let Some(n) = a.tcp_only {
        let own = own_cpu_ns();
        let rate = tcp_workload(n);
        let own = own_cpu_ns() - own;
        println!(
            "{rate:.0} connections/s, {:.2} us CPU per connection (workload)",
            own as f64 / 1e3 / n as f64
        );
        return;
    }
    if let Some(connections) = a.serve_memory {
        let report = serve_memory(&a, connections, pinned);
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return;
    }
    let (rounds, conns, datagrams, mem_events) = if a.smoke {
        (1, 300, 5_000, 20_000)
    } else {
        (7, 20_000, 100_000, 1_000_000)
    };
    let writes = if a.smoke { 200_000 } else { 2_000_000 };
    let rounds = a.rounds.unwrap_or(rounds);
    let mut modes = a.modes.clone();
    if a.baseline.is_some() {
        modes.push(Mode::Baseline);
    }
    let m = modes.len();
    let mut samples: Vec<Vec<Sample>> = Vec::new();
    let mut counts = Vec::new();
    for round in 0..rounds {
        let mut this = vec![None; m];
        // Rotate the order so drift hits every mode alike.
        for k in 0..m {
            let mode = modes[(round + k) % m];
            let i = modes.iter().position(|x| *x == mode).unwrap_or(0);
            // Every mode starts from the same kernel state: no TIME_WAIT
            // sockets left by the one before, whose number changes what
            // each connect() costs (the port search of
            // __inet_hash_connect()). The old namespace is purged before
            // the tracer attaches.
            fresh_netns();
            std::thread::sleep(Duration::from_millis(300));
            let phase_ns = phase_probe();
            let tracer = start(mode, &a, round, pinned);
            let tax_ns = syscall_tax(writes);
            let own = own_cpu_ns();
            let tracer_before = tracer.as_ref().map_or(0, |t| cpu_ns(t.child.id()));
            let tcp_per_s = tcp_workload(conns);
            let own = own_cpu_ns() - own;
            // Let the tracer catch up: its CPU for these events counts.
            std::thread::sleep(Duration::from_millis(300));
            let tracer_cpu = tracer
                .as_ref()
                .map_or(0, |t| cpu_ns(t.child.id()).saturating_sub(tracer_before));
            let udp_per_s = udp_workload(datagrams);
            std::thread::sleep(Duration::from_millis(300));
            if let Some(t) = tracer {
                counts.push(json!({ "round": round, "mode": mode.name(), "counted": stop(t) }));
            }
            this[i] = Some(Sample {
                phase_ns,
                tax_ns,
                tcp_per_s,
                cpu_us_per_conn: (own + tracer_cpu) as f64 / 1e3 / conns as f64,
                workload_us_per_conn: own as f64 / 1e3 / conns as f64,
                tracer_us_per_conn: tracer_cpu as f64 / 1e3 / conns as f64,
                udp_per_s,
            });
        }
        samples.push(this.into_iter().flatten().collect());
    }
    // Rounds whose phase probes agree; all of them if none does.
    let mixed = |r: &Vec<Sample>| {
        let lo = r.iter().map(|s| s.phase_ns).fold(f64::INFINITY, f64::min);
        let hi = r.iter().map(|s| s.phase_ns).fold(0.0, f64::max);
        hi / lo > MIXED_PHASE
    };
    let discarded = samples.iter().filter(|r| mixed(r)).count();
    let kept: Vec<&Vec<Sample>> = if discarded == samples.len() {
        samples.iter().collect()
    } else {
        samples.iter().filter(|r| !mixed(r)).collect()
    };
    // Per mode: the median of its same-round ratio to untraced.
    let ratio = |f: fn(&Sample) -> f64| -> serde_json::Map<String, Value> {
        modes
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, mode)| {
                let v = kept.iter().map(|r| f(&r[i]) / f(&r[0])).collect();
                (mode.name().to_owned(), spread(v))
            })
            .collect()
    };
    let diff = |f: fn(&Sample) -> f64| -> serde_json::Map<String, Value> {
        modes
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, mode)| {
                let v = kept.iter().map(|r| f(&r[i]) - f(&r[0])).collect();
                (mode.name().to_owned(), spread(v))
            })
            .collect()
    };
    let absolute = |f: fn(&Sample) -> f64| -> serde_json::Map<String, Value> {
        modes
            .iter()
            .enumerate()
            .map(|(i, mode)| {
                let v = kept.iter().map(|r| f(&r[i])).collect();
                (mode.name().to_owned(), spread(v))
            })
            .collect()
    };
    let programs = program_time(&a, &modes, conns, if a.smoke { 1 } else { 3 }, pinned);
    let memory = if a.no_memory {
        Value::Null
    } else {
        memory(&a, mem_events, a.long, pinned)
    };
    let report = json!({
        "cores": cores,
        "pinned": pinned,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "rounds": rounds,
        "rounds_discarded_mixed_phase": if discarded == samples.len() { 0 } else { discarded },
        "all_rounds_mixed_phase": discarded == samples.len() && rounds > 1,
        "tcp_connections_per_round": conns,
        "udp_datagrams_per_round": datagrams,
        "writes_per_round": writes,
        "tcp_conn_per_s": absolute(|s| s.tcp_per_s),
        "tcp_ratio": ratio(|s| s.tcp_per_s),
        "cpu_us_per_connection": absolute(|s| s.cpu_us_per_conn),
        "cpu_ratio": ratio(|s| s.cpu_us_per_conn),
        "workload_us_per_connection": absolute(|s| s.workload_us_per_conn),
        "tracer_us_per_connection": absolute(|s| s.tracer_us_per_conn),
        "udp_datagrams_per_s": absolute(|s| s.udp_per_s),
        "udp_ratio": ratio(|s| s.udp_per_s),
        "syscall_tax_ns": absolute(|s| s.tax_ns),
        "syscall_tax_added_ns": diff(|s| s.tax_ns),
        "program_us_per_connection": programs["us_per_connection"],
        "program_runs_per_connection": programs["program_runs_per_connection"],
        "program_time_runs_per_mode": programs["runs"],
        "program_time_error": programs["error"],
        "phase_probe_ms": samples.iter().map(|r| r.iter().map(|s| s.phase_ns / 1e6).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "counts": counts,
        "memory": memory,
    });
    let path = a.out.join("overhead.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .expect("write report");
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
