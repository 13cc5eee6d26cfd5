//! Throughput of one listener or receiver against a SO_REUSEPORT group.

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Res, io};
use crate::scenario::{
    Outcome, ScenarioError, Verdict,
    ctx::{Ctx, sockaddr},
};

/// How long the load generator runs per measurement.
const WINDOW: Duration = Duration::from_millis(500);
/// At most this many connections / datagrams per window and sender
/// thread: every one is a traced kernel event, and the trace's ring buffer
/// must keep up (no event lost) while the scenario's evidence is checked.
const TCP_CAP: usize = 750;
const UDP_CAP: usize = 10_000;

/// A counter of the calling thread's network namespace from
/// /proc/thread-self/net/{snmp,netstat}: `table` (`Udp`, `TcpExt`) and
/// column name. 0 when missing.
fn counter(file: &str, table: &str, name: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) else {
        return 0;
    };
    let prefix = format!("{table}:");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    let [names, values] = rows.as_slice() else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// What one measurement delivered in [`WINDOW`]: a count, never a rate, so
/// slow senders show as fewer attempts, not as a slower server.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Delivered {
    attempted: usize,
    delivered: usize,
    /// Kernel drops: TcpExt ListenDrops (TCP) or Udp RcvbufErrors (UDP).
    dropped: u64,
}

/// TCP connections accepted in [`WINDOW`] through `listeners` SO_REUSEPORT
/// listeners, each drained by its own accept thread, from 2 client threads.
fn tcp_rate(ctx: &mut Ctx, listeners: usize, port: u16) -> Result<Delivered, ScenarioError> {
    let mut socks = Vec::new();
    for i in 0..listeners {
        let s = ctx.tcp(&format!("{listeners}x listener {i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, &format!("127.0.0.1:{port}"))?;
        ctx.listen(&s, 1024);
        socks.push(s);
    }
    for l in &socks {
        io(l.sock.set_read_timeout(Some(Duration::from_millis(50))))?;
    }
    let drops_before = counter("netstat", "TcpExt", "ListenDrops");
    let start = Instant::now();
    let deadline = start + WINDOW;
    let accepted = AtomicUsize::new(0);
    let attempted = AtomicUsize::new(0);
    let clients_done = AtomicBool::new(false);
    let to: SockAddr = sockaddr(&format!("127.0.0.1:{port}"))?.into();
    std::thread::scope(|scope| {
        for l in &socks {
            let (accepted, clients_done) = (&accepted, &clients_done);
            scope.spawn(move || {
                loop {
                    match l.sock.accept() {
                        Ok((s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = s.set_linger(Some(Duration::ZERO));
                        }
                        // Timed out: nothing queued for 50 ms.
                        Err(_)
                            if clients_done.load(Ordering::Relaxed)
                                || Instant::now() > deadline =>
                        {
                            break;
                        }
                        Err(_) => {}
                    }
                }
            });
        }
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let to = to.clone();
                let attempted = &attempted;
                scope.spawn(move || {
                    for _ in 0..TCP_CAP {
                        if Instant::now() >= deadline {
                            break;
                        }
                        attempted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(c) = Socket::new(Domain::IPV4, Type::STREAM, None) {
                            let _ = c.set_linger(Some(Duration::ZERO));
                            let _ = c.connect(&to);
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.join();
        }
        clients_done.store(true, Ordering::Relaxed);
    });
    Ok(Delivered {
        attempted: attempted.load(Ordering::Relaxed),
        delivered: accepted.load(Ordering::Relaxed),
        dropped: counter("netstat", "TcpExt", "ListenDrops").saturating_sub(drops_before),
    })
}

/// UDP datagrams received in [`WINDOW`] by `receivers` SO_REUSEPORT
/// sockets from 2 sender threads sending as fast as they can.
fn udp_rate(ctx: &mut Ctx, receivers: usize, port: u16) -> Result<Delivered, ScenarioError> {
    let mut socks = Vec::new();
    for i in 0..receivers {
        let s = ctx.udp(&format!("{receivers}x receiver {i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, &format!("127.0.0.1:{port}"))?;
        io(s.sock.set_read_timeout(Some(Duration::from_millis(100))))?;
        socks.push(s);
    }
    let drops_before = counter("snmp", "Udp", "RcvbufErrors");
    let deadline = Instant::now() + WINDOW;
    let received = AtomicUsize::new(0);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for r in &socks {
            let received = &received;
            scope.spawn(move || {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                while r.sock.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // 64 sources so the hash has flows to spread.
        for t in 0..2 {
            let sent = &sent;
            scope.spawn(move || {
                let socks: Vec<Socket> = (0..32)
                    .filter_map(|_| Socket::new(Domain::IPV4, Type::DGRAM, None).ok())
                    .collect();
                let Ok(to) = sockaddr(&format!("127.0.0.1:{port}")) else {
                    return;
                };
                let to: SockAddr = to.into();
                let mut i = t;
                while Instant::now() < deadline && i < UDP_CAP {
                    for _ in 0..64 {
                        if socks[i % socks.len()].send_to(b"inspector", &to).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                }
            });
        }
    });
    Ok(Delivered {
        attempted: sent.load(Ordering::Relaxed),
        delivered: received.load(Ordering::Relaxed),
        dropped: counter("snmp", "Udp", "RcvbufErrors").saturating_sub(drops_before),
    })
}

/// Cores the claim needs: 4 workers, each on a core of its own, plus at
/// least one for the load generator. With fewer, the workers and the
/// clients share cores and a 4x gain cannot be measured, whatever the
/// kernel does.
const CORES_NEEDED: usize = 5;

pub(super) fn throughput(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    // The CPUs this process may run on (sched_getaffinity, and a cgroup
    // quota where one is set).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Alternate single and group runs so drift hits both alike.
    let mut tcp = (Vec::new(), Vec::new());
    let mut udp = (Vec::new(), Vec::new());
    for round in 0..2u16 {
        tcp.0.push(tcp_rate(ctx, 1, 8100 + round * 10)?);
        tcp.1.push(tcp_rate(ctx, 4, 8101 + round * 10)?);
        udp.0.push(udp_rate(ctx, 1, 8102 + round * 10)?);
        udp.1.push(udp_rate(ctx, 4, 8103 + round * 10)?);
    }
    let sum = |v: &[Delivered]| {
        v.iter().fold((0usize, 0usize, 0u64), |a, d| {
            (a.0 + d.attempted, a.1 + d.delivered, a.2 + d.dropped)
        })
    };
    let (t1, t4, u1, u4) = (sum(&tcp.0), sum(&tcp.1), sum(&udp.0), sum(&udp.1));
    let ratio = |a: (usize, usize, u64), b: (usize, usize, u64)| b.1 as f64 / a.1.max(1) as f64;
    let (tcp_ratio, udp_ratio) = (ratio(t1, t4), ratio(u1, u4));
    // A one-socket run that dropped nothing was not saturated: its count
    // measures the load generator, not the server.
    let saturated = t1.2 > 0 && u1.2 > 0;
    let reason = if cores < CORES_NEEDED {
        Some(format!(
            "needs {CORES_NEEDED} cores (4 busy workers and a load generator); this machine \
             has {cores}"
        ))
    } else if !saturated {
        Some("the load generator did not saturate one socket (no drops)".to_owned())
    } else {
        None
    };
    let verdict = if reason.is_some() {
        Verdict::Untestable
    } else {
        // The claimed factors, 3.75x (TCP) and 5x (UDP).
        Verdict::of(&[tcp_ratio >= 3.75, udp_ratio >= 5.0])
    };
    let window_ms = WINDOW.as_millis() * 2;
    Ok(Outcome {
        reason,
        advice: None,
        verdict,
        summary: format!(
            "{cores} cores, 2 windows of {} ms each: TCP accepted {} of {} with 1 listener \
             ({} listen drops), {} of {} with 4 (x{tcp_ratio:.2}); UDP delivered {} of {} with \
             1 receiver ({} dropped), {} of {} with 4 ({} dropped, x{udp_ratio:.2})",
            WINDOW.as_millis(),
            t1.1,
            t1.0,
            t1.2,
            t4.1,
            t4.0,
            u1.1,
            u1.0,
            u1.2,
            u4.1,
            u4.0,
            u4.2
        ),
        details: json!({
            "cores": cores,
            "cores_needed": CORES_NEEDED,
            "window_ms": window_ms,
            "tcp_connections": { "one": tcp.0, "four": tcp.1, "ratio": tcp_ratio },
            "udp_datagrams": { "one": udp.0, "four": udp.1, "ratio": udp_ratio },
        }),
        explanation: "SO_REUSEPORT removes the single accept queue / receive queue as a point \
            of contention: reuseport_select_sock() hashes each flow to its own socket, so \
            workers on different cores do not share one lock. The gain needs free cores for \
            the workers besides the load: on fewer the measurement shows how the sockets \
            share the machine, not the claimed factor."
            .into(),
    })
}
