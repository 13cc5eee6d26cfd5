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

/// TCP connections per second through `listeners` SO_REUSEPORT listeners,
/// each drained by its own accept thread; `total` connections from 2 client
/// threads.
fn tcp_rate(
    ctx: &mut Ctx,
    listeners: usize,
    port: u16,
    total: usize,
) -> Result<f64, ScenarioError> {
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
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let accepted = AtomicUsize::new(0);
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
                scope.spawn(move || {
                    for _ in 0..total / 2 {
                        if Instant::now() > deadline {
                            break;
                        }
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
    // The accept threads stop 50 ms after the last connection.
    let n = accepted.load(Ordering::Relaxed);
    Ok(n as f64 / (start.elapsed().as_secs_f64() - 0.05).max(1e-3))
}

/// UDP datagrams per second received by `receivers` SO_REUSEPORT sockets.
fn udp_rate(
    ctx: &mut Ctx,
    receivers: usize,
    port: u16,
    total: usize,
) -> Result<f64, ScenarioError> {
    let mut socks = Vec::new();
    for i in 0..receivers {
        let s = ctx.udp(&format!("{receivers}x receiver {i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, &format!("127.0.0.1:{port}"))?;
        io(s.sock.set_read_timeout(Some(Duration::from_millis(100))))?;
        socks.push(s);
    }
    let start = Instant::now();
    let received = AtomicUsize::new(0);
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
            scope.spawn(move || {
                let socks: Vec<Socket> = (0..32)
                    .filter_map(|_| Socket::new(Domain::IPV4, Type::DGRAM, None).ok())
                    .collect();
                let Ok(to) = sockaddr(&format!("127.0.0.1:{port}")) else {
                    return;
                };
                let to: SockAddr = to.into();
                for i in 0..total / 2 {
                    let _ = socks[(i + t) % socks.len()].send_to(b"inspector", &to);
                }
            });
        }
    });
    let n = received.load(Ordering::Relaxed);
    // The receivers stop 100 ms after the last datagram.
    let secs = (start.elapsed().as_secs_f64() - 0.1).max(1e-3);
    Ok(n as f64 / secs)
}

pub(super) fn throughput(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    const CONNS: usize = 1500;
    const DATAGRAMS: usize = 20_000;
    // Alternate single and group runs so drift hits both alike.
    let mut tcp = (Vec::new(), Vec::new());
    let mut udp = (Vec::new(), Vec::new());
    for round in 0..2u16 {
        tcp.0.push(tcp_rate(ctx, 1, 8100 + round * 10, CONNS)?);
        tcp.1.push(tcp_rate(ctx, 4, 8101 + round * 10, CONNS)?);
        udp.0.push(udp_rate(ctx, 1, 8102 + round * 10, DATAGRAMS)?);
        udp.1.push(udp_rate(ctx, 4, 8103 + round * 10, DATAGRAMS)?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (t1, t4, u1, u4) = (mean(&tcp.0), mean(&tcp.1), mean(&udp.0), mean(&udp.1));
    let tcp_ratio = t4 / t1;
    let udp_ratio = u4 / u1;
    Ok(Outcome {
        reason: None,
        advice: None,
        // The claimed factors, 3.75x (TCP) and 5x (UDP), on 4 cores.
        verdict: Verdict::of(&[tcp_ratio >= 3.75, udp_ratio >= 5.0]),
        summary: format!(
            "{cores} cores: TCP {t1:.0} conn/s with 1 listener, {t4:.0} with 4 (x{tcp_ratio:.2}); \
             UDP {u1:.0} datagrams/s with 1 receiver, {u4:.0} with 4 (x{udp_ratio:.2})"
        ),
        details: json!({
            "cores": cores,
            "tcp_conn_per_s": { "one": t1, "four": t4, "ratio": tcp_ratio, "rounds": [tcp.0, tcp.1] },
            "udp_datagrams_per_s": { "one": u1, "four": u4, "ratio": udp_ratio, "rounds": [udp.0, udp.1] },
        }),
        explanation: "SO_REUSEPORT removes the single accept queue / receive queue as a point \
            of contention: reuseport_select_sock() hashes each flow to its own socket, so \
            workers on different cores do not share one lock. The gain needs free cores: the \
            clients here run on the same machine, so the gain is bounded by the cores left \
            (at most x4 with 4 workers) and a 5x gain from 4 processes cannot happen."
            .into(),
    })
}
