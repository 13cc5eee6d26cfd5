//! What tracing costs the traced: a loopback workload run untraced, traced by
//! `inspector trace --json`, watched by `inspector serve` (metrics only),
//! and traced by bpftrace running the same tracepoints (counting only),
//! alternated in one run; the tax on unrelated system calls (1-byte writes
//! to /dev/null) in the same rounds; plus the inspector's resident memory
//! after a million events. Needs root. Run by
//! `cargo xtask bench`, which builds the release binary first:
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
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { @state = count(); if (args->sport == 7000 || args->dport == 7000) { @state_port = count(); } }
tracepoint:sock:sk_data_ready { @ready = count(); }
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { @tw_arm = count(); }
tracepoint:timer:timer_cancel /((struct timer_list *)args->timer)->function == kaddr("tw_timer_handler")/ { @tw_cancel = count(); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { @tw_expire = count(); }
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Untraced,
    Inspector,
    Serve,
    Bpftrace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Inspector => "inspector",
            Mode::Serve => "serve",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

struct Args {
    inspector: PathBuf,
    out: PathBuf,
    smoke: bool,
    long: bool,
}

fn args() -> Args {
    let mut a = Args {
        inspector: PathBuf::from("target/release/inspector"),
        out: PathBuf::from("target/bench"),
        smoke: false,
        long: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--inspector" => a.inspector = it.next().map(PathBuf::from).unwrap_or(a.inspector),
            "--out" => a.out = it.next().map(PathBuf::from).unwrap_or(a.out),
            "--smoke" => a.smoke = true,
            "--long" => a.long = true,
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
    /// CPU it had used when ready (start-up is not tracing cost).
    cpu_at_start: u64,
    stderr: mpsc::Receiver<String>,
    mode: Mode,
    json: Option<PathBuf>,
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

fn start(mode: Mode, a: &Args, round: usize) -> Option<Tracer> {
    match mode {
        Mode::Untraced => None,
        Mode::Inspector => {
            let json = a.out.join(format!("trace-round{round}.ndjson"));
            let file = std::fs::File::create(&json).expect("trace output file");
            let mut child = Command::new(&a.inspector)
                .args(["trace", "--json"])
                .stdout(file)
                .stderr(Stdio::piped())
                .spawn()
                .expect("start inspector");
            let rx = spawn_lines(&mut child, false);
            let first = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("inspector started");
            assert!(first.contains("attached"), "inspector: {first}");
            let cpu_at_start = cpu_ms(child.id());
            Some(Tracer {
                child,
                cpu_at_start,
                stderr: rx,
                mode,
                json: Some(json),
            })
        }
        Mode::Serve => {
            let mut child = Command::new(&a.inspector)
                .args(["serve", "--listen", "127.0.0.1:9478"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start inspector serve");
            let rx = spawn_lines(&mut child, false);
            let first = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("inspector serve started");
            assert!(first.contains("attached"), "inspector serve: {first}");
            let cpu_at_start = cpu_ms(child.id());
            Some(Tracer {
                child,
                cpu_at_start,
                stderr: rx,
                mode,
                json: None,
            })
        }
        Mode::Bpftrace => {
            let mut child = Command::new("bpftrace")
                .args(["-e", BPFTRACE])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start bpftrace (apt install bpftrace)");
            let rx = spawn_lines(&mut child, true);
            let first = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("bpftrace started");
            assert!(first.contains("Attaching"), "bpftrace: {first}");
            let cpu_at_start = cpu_ms(child.id());
            Some(Tracer {
                child,
                cpu_at_start,
                stderr: rx,
                mode,
                json: None,
            })
        }
    }
}

/// Stops a tracer; returns what it counted (state changes on the workload
/// port, events read, dropped).
fn stop(t: Tracer) -> Value {
    let cpu_ms = cpu_ms(t.child.id()).saturating_sub(t.cpu_at_start);
    let sig = if t.mode == Mode::Bpftrace {
        libc::SIGINT
    } else {
        libc::SIGTERM
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(t.child.id() as i32, sig) };
    let mut child = t.child;
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
                "state_changes": get("state"),
                "syscalls": get("exit"),
                "tw_arm": get("tw_arm"),
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
            if let Some(path) = &t.json
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
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            json!({
                "state_changes_on_port": on_port,
                "events_read": num("events"),
                "dropped": num("dropped"),
                "tw_enter": tw,
                "tracer_cpu_ms": cpu_ms,
                "summary": summary,
            })
        }
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

/// Busy (non-idle) CPU time of the whole machine so far, in ms, from
/// /proc/stat: user, nice, system, irq, softirq and steal.
fn busy_ms() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy * 1000.0 / hz
}

/// User + system CPU time a process has used so far, in ms.
fn cpu_ms(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are the 12th and 13th of them.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0, |ticks| ticks * 1000 / hz)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
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
fn memory(a: &Args, target: u64, long: bool) -> Value {
    let mut child = Command::new(&a.inspector)
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

fn main() {
    let a = args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("overhead: needs root (eBPF, network namespaces): run with sudo");
        std::process::exit(1);
    }
    std::fs::create_dir_all(&a.out).expect("output directory");
    // The workload runs in a namespace of its own, on this thread.
    inspector::netns::enter_new_netns().expect("network namespace");
    for (k, v) in [
        ("net/ipv4/ip_local_port_range", "10000 65000"),
        ("net/ipv4/tcp_tw_reuse", "1"),
    ] {
        inspector::netns::set_sysctl(k, v).expect("sysctl");
    }
    let (rounds, conns, datagrams, mem_events) = if a.smoke {
        (1, 300, 5_000, 20_000)
    } else {
        (5, 3_000, 100_000, 1_000_000)
    };
    let writes = if a.smoke { 200_000 } else { 2_000_000 };
    let modes = [Mode::Untraced, Mode::Inspector, Mode::Serve, Mode::Bpftrace];
    let m = modes.len();
    let mut tcp: Vec<Vec<f64>> = vec![Vec::new(); m];
    let mut udp: Vec<Vec<f64>> = vec![Vec::new(); m];
    let mut tax: Vec<Vec<f64>> = vec![Vec::new(); m];
    // Busy CPU of the whole machine per TCP connection (workload, kernel
    // programs and tracer alike), in us.
    let mut cpu_conn: Vec<Vec<f64>> = vec![Vec::new(); m];
    let mut counts = Vec::new();
    for round in 0..rounds {
        // Rotate the order so drift hits every mode alike.
        for k in 0..m {
            let mode = modes[(round + k) % m];
            let i = modes.iter().position(|x| *x == mode).unwrap_or(0);
            let tracer = start(mode, &a, round);
            tax[i].push(syscall_tax(writes));
            let busy = busy_ms();
            tcp[i].push(tcp_workload(conns));
            cpu_conn[i].push((busy_ms() - busy) * 1e3 / conns as f64);
            udp[i].push(udp_workload(datagrams));
            // Let the tracer catch up before it is stopped.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(t) = tracer {
                counts.push(json!({ "round": round, "mode": mode.name(), "counted": stop(t) }));
            }
        }
    }
    let tcp_med: Vec<f64> = tcp.iter_mut().map(|v| median(v)).collect();
    let udp_med: Vec<f64> = udp.iter_mut().map(|v| median(v)).collect();
    let tax_med: Vec<f64> = tax.iter_mut().map(|v| median(v)).collect();
    let cpu_med: Vec<f64> = cpu_conn.iter_mut().map(|v| median(v)).collect();
    let per_conn_us = |i: usize| (1.0 / tcp_med[i] - 1.0 / tcp_med[0]) * 1e6;
    let memory = memory(&a, mem_events, a.long);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = json!({
        "cores": cores,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "rounds": rounds,
        "tcp_connections_per_round": conns,
        "udp_datagrams_per_round": datagrams,
        "tcp_conn_per_s": { "untraced": tcp_med[0], "inspector": tcp_med[1], "serve": tcp_med[2], "bpftrace": tcp_med[3] },
        "tcp_ratio": { "inspector": tcp_med[1] / tcp_med[0], "serve": tcp_med[2] / tcp_med[0], "bpftrace": tcp_med[3] / tcp_med[0] },
        "tcp_cost_us_per_connection": { "inspector": per_conn_us(1), "serve": per_conn_us(2), "bpftrace": per_conn_us(3) },
        "cpu_us_per_connection": { "untraced": cpu_med[0], "inspector": cpu_med[1], "serve": cpu_med[2], "bpftrace": cpu_med[3] },
        "udp_datagrams_per_s": { "untraced": udp_med[0], "inspector": udp_med[1], "serve": udp_med[2], "bpftrace": udp_med[3] },
        "udp_ratio": { "inspector": udp_med[1] / udp_med[0], "serve": udp_med[2] / udp_med[0], "bpftrace": udp_med[3] / udp_med[0] },
        "syscall_tax_ns": { "untraced": tax_med[0], "inspector": tax_med[1], "serve": tax_med[2], "bpftrace": tax_med[3] },
        "writes_per_round": writes,
        "tax_rounds": tax,
        "tcp_rounds": tcp,
        "udp_rounds": udp,
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
