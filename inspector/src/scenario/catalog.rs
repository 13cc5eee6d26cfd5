//! The catalog: each setup the documents discuss, as a function that runs it
//! and judges the document's claim from what the kernel did.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    Outcome, Scenario, ScenarioError, Verdict,
    ctx::{Ctx, Proto, Sock, accept_n, drain_udp, send_udp, settle, sockaddr},
    foreign::{NOBODY, bind_as_nobody},
    stats::Spread,
};
use crate::kernel::Errno;

type Res = Result<Outcome, ScenarioError>;

const GOLANG: &str = "golang-tcp-port-reuse.md";
const GUIDE: &str = "reuseport-vs-reuseaddr-guide.md";
const EXPLAINED: &str = "so-reuseaddr-explained.md";
const NOTES: &str = "socket-options-notes.md";

pub static CATALOG: &[Scenario] = &[
    Scenario {
        number: 1,
        name: "restart-over-time-wait",
        title: "server restart over its own TIME_WAIT, new socket without SO_REUSEADDR",
        claim: "Can't bind on the same port by the server w/o `SO_REUSEADDR` option if socket in TIME_WAIT state",
        source: GOLANG,
        run: restart_plain,
    },
    Scenario {
        number: 2,
        name: "restart-reuseaddr",
        title: "the same restart with SO_REUSEADDR on the new socket only, then on old and new",
        claim: "allows to bind to a socket even if another socket socket is in `TIME_WAIT` ... `SO_REUSEADDR` simply ignores and existing sockets in `TIME_WAIT`",
        source: NOTES,
        run: restart_reuseaddr,
    },
    Scenario {
        number: 3,
        name: "restart-reuseport",
        title: "the same restart with SO_REUSEPORT only: on the new socket, then on both",
        claim: "| **TIME_WAIT bypass** | ✅ Yes (TCP only) | ✅ Yes (TCP) |",
        source: GUIDE,
        run: restart_reuseport,
    },
    Scenario {
        number: 4,
        name: "reuseaddr-second-bind-while-listening",
        title: "two TCP sockets with SO_REUSEADDR on one address and port, the first listening",
        claim: "SO_REUSEADDR BEHAVIOR ... Multiple Binds ... ❌ No (one process)",
        source: GUIDE,
        run: reuseaddr_while_listening,
    },
    Scenario {
        number: 5,
        name: "reuseaddr-bind-both-then-listen",
        title: "two TCP sockets with SO_REUSEADDR bound to one address and port, then both listen",
        claim: "COMPLETE COMPARISON ... Multiple binds ... ❌ No",
        source: GUIDE,
        run: reuseaddr_bind_both_then_listen,
    },
    Scenario {
        number: 6,
        name: "wildcard-plus-specific",
        title: "0.0.0.0:P plus 127.0.0.1:P with SO_REUSEADDR, the first listening, then only bound",
        claim: "`0.0.0.0:80` and `127.0.0.1:80` -> NOT O.K. (would be okay with `REUSEADDR`)",
        source: NOTES,
        run: wildcard_plus_specific,
    },
    Scenario {
        number: 7,
        name: "different-addresses-or-ports",
        title: "different addresses on one port; one address on different ports; no options",
        claim: "`127.0.0.1:80` and `127.0.0.2:80` -> O.K. ... `127.0.0.1:80` and `127.0.0.1:81` -> O.K.",
        source: NOTES,
        run: different_addresses,
    },
    Scenario {
        number: 8,
        name: "udp-reuseaddr-unicast",
        title: "UDP: three SO_REUSEADDR sockets on one port, unicast from many sources, then the receiver closes",
        claim: "If two sockets are bound to the same interface and port, data will be delivered to both sockets.",
        source: EXPLAINED,
        run: udp_reuseaddr_unicast,
    },
    Scenario {
        number: 9,
        name: "udp-multicast-reuseaddr",
        title: "UDP multicast group on loopback with three SO_REUSEADDR receivers",
        claim: "Scenario: Multiple processes want to receive same multicast stream ... All three processes receive SAME packets! ✅",
        source: GUIDE,
        run: udp_multicast,
    },
    Scenario {
        number: 10,
        name: "udp-reuseport-distribution",
        title: "UDP SO_REUSEPORT group of 3: per-socket distribution and per-source stickiness",
        claim: "✅ Consistent hashing ensures: ... • Same source always goes to same process ... • Even distribution across processes ... • No packet duplication",
        source: GUIDE,
        run: udp_reuseport,
    },
    Scenario {
        number: 11,
        name: "tcp-reuseport-distribution",
        title: "TCP SO_REUSEPORT group of 3: per-listener distribution; fixed versus changing source port",
        claim: "Client 1 reconnects (same IP, different port): ... Route to → Process 1 ✅ (Same!) ... Good for session affinity!",
        source: GUIDE,
        run: tcp_reuseport,
    },
    Scenario {
        number: 12,
        name: "reuseport-other-uid",
        title: "SO_REUSEPORT bind by a process of another uid (65534), TCP and UDP",
        claim: "on Linux all sockets that want to share the same address, port combination need to belong to the same User ID to avoid **port hijacking**",
        source: NOTES,
        run: reuseport_other_uid,
    },
    Scenario {
        number: 13,
        name: "port-hijack",
        title: "wildcard bind by one party, specific bind by another, TCP and UDP: who gets which traffic",
        claim: "bind(0.0.0.0:80)  ← Binds to all IPs ... bind(192.168.1.100:80)  ← Specific IP ... 3. Traffic might go to BOTH! ... - Some requests → legitimate server ... - Some requests → attacker's process",
        source: GUIDE,
        run: port_hijack,
    },
    Scenario {
        number: 14,
        name: "ephemeral-exhaustion",
        title: "client connects with a 4-port ip_local_port_range, tcp_tw_reuse 0 then 1",
        claim: "3. Client uses random port for itself and make a lot of reconnects so it exhausted all ephemeral ports ... (left all potential available port in `TIME_WAIT` state)",
        source: GOLANG,
        run: ephemeral_exhaustion,
    },
    Scenario {
        number: 15,
        name: "client-fixed-source-port",
        title: "client binds an explicit source port, closes first and reconnects at once",
        claim: "Sometimes your TCP server written in Go fails with error `bind: address already in use` ... 4. Client uses the same port to itself",
        source: GOLANG,
        run: client_fixed_port,
    },
    Scenario {
        number: 16,
        name: "rolling-restart-reuseport",
        title: "close one of two SO_REUSEPORT listeners with connections in its accept queue, tcp_migrate_req 0 and 1",
        claim: "Stop Worker 1 ... Workers 2, 3, 4 handle all traffic ... (kernel redistributes automatically) ... Result: Zero downtime deployment!",
        source: GUIDE,
        run: rolling_restart,
    },
    Scenario {
        number: 17,
        name: "dual-stack",
        title: "[::]:P versus 0.0.0.0:P with IPV6_V6ONLY 0 and 1",
        claim: "(no document covers dual-stack; closest statement: \"`0.0.0.0` is a wildcard that matches **ALL** local addresses\") A dual-stack [::]:P (IPV6_V6ONLY=0) also covers 0.0.0.0:P, so the two cannot both be bound; with IPV6_V6ONLY=1 they are independent",
        source: NOTES,
        run: dual_stack,
    },
    Scenario {
        number: 18,
        name: "reuseport-throughput",
        title: "one listener versus 4 SO_REUSEPORT listeners (TCP conn/s), one versus 4 UDP receivers (datagrams/s)",
        claim: "Single Process vs SO_REUSEPORT (4 cores): ... Single Process: ... 20,000 conn/s ... SO_REUSEPORT (4 workers): ... 75,000 conn/s ... Improvement: 3.75x ... Single thread: ... 500K pps ... 4 processes: ... 2.5M pps ... Improvement: 5x throughput",
        source: GUIDE,
        run: throughput,
    },
];

fn io<T>(r: std::io::Result<T>) -> Result<T, ScenarioError> {
    r.map_err(ScenarioError::Io)
}

fn show(errno: &Option<String>) -> &str {
    errno.as_deref().unwrap_or("ok")
}

/// A server on 127.0.0.1:`port` (with the given options) that served one
/// connection and closed it first, so its side of it is now TIME_WAIT;
/// the listener is closed too, as a server that exits.
fn server_left_time_wait(
    ctx: &mut Ctx,
    port: u16,
    reuseaddr: bool,
    reuseport: bool,
) -> Result<(), ScenarioError> {
    let old = ctx.tcp("old-server")?;
    if reuseaddr {
        ctx.reuseaddr(&old)?;
    }
    if reuseport {
        ctx.reuseport(&old)?;
    }
    let addr = format!("127.0.0.1:{port}");
    if let Some(e) = ctx.bind(&old, &addr)? {
        return Err(ScenarioError::Setup(format!("old server bind: {e}")));
    }
    if let Some(e) = ctx.listen(&old, 8) {
        return Err(ScenarioError::Setup(format!("old server listen: {e}")));
    }
    let client = ctx.tcp("client")?;
    if let Some(e) = ctx.connect(&client, &addr)? {
        return Err(ScenarioError::Setup(format!("client connect: {e}")));
    }
    let (conn, _) = io(old.sock.accept())?;
    drop(conn); // the server closes first: its side goes to TIME_WAIT
    settle();
    drop(client);
    drop(old);
    settle();
    ctx.expect_time_wait.push(port);
    ctx.note(format!(
        "old server on {addr} served one connection and closed it first; the server exited"
    ));
    Ok(())
}

/// A new server socket's bind + listen on 127.0.0.1:`port`.
fn restart(
    ctx: &mut Ctx,
    label: &str,
    port: u16,
    reuseaddr: bool,
    reuseport: bool,
) -> Result<Option<String>, ScenarioError> {
    let new = ctx.tcp(label)?;
    if reuseaddr {
        ctx.reuseaddr(&new)?;
    }
    if reuseport {
        ctx.reuseport(&new)?;
    }
    let mut errno = ctx.bind(&new, &format!("127.0.0.1:{port}"))?;
    if errno.is_none() {
        errno = ctx.listen(&new, 8);
    }
    Ok(errno)
}

fn restart_plain(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, 8001, false, false)?;
    let errno = restart(ctx, "new-server", 8001, false, false)?;
    let refused = errno.as_deref() == Some("EADDRINUSE");
    Ok(Outcome {
        verdict: Verdict::of(&[refused]),
        summary: format!("restart without SO_REUSEADDR: {}", show(&errno)),
        details: json!({ "restart": errno }),
        explanation: "inet_csk_get_port() finds the port's bind bucket still owned by the \
            timewait socket; inet_csk_bind_conflict() lets a new socket share it only when both \
            have SO_REUSEADDR (sk_reuse, and tw_reuse copied from the closed socket) or both \
            SO_REUSEPORT with the same uid."
            .into(),
    })
}

/// A restart over TIME_WAIT with `option` set on the new socket only, then
/// on the old and the new one: (new only, old and new) results.
fn restart_with(
    ctx: &mut Ctx,
    port: u16,
    option: &str,
) -> Result<(Option<String>, Option<String>), ScenarioError> {
    let (addr, port_opt) = (option == "SO_REUSEADDR", option == "SO_REUSEPORT");
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, port, false, false)?;
    let label = format!("new-server ({option}, old without)");
    let new_only = restart(ctx, &label, port, addr, port_opt)?;
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, port, addr, port_opt)?;
    let both = restart(
        ctx,
        &format!("new-server ({option}, old too)"),
        port,
        addr,
        port_opt,
    )?;
    Ok((new_only, both))
}

fn restart_outcome(
    option: &str,
    new_only: Option<String>,
    both: Option<String>,
    why: &str,
) -> Outcome {
    Outcome {
        verdict: Verdict::of(&[new_only.is_none(), both.is_none()]),
        summary: format!(
            "{option} on the new socket only: {}; on the old and the new: {}",
            show(&new_only),
            show(&both)
        ),
        details: json!({ "new_only": new_only, "old_and_new": both }),
        explanation: why.into(),
    }
}

fn restart_reuseaddr(ctx: &mut Ctx) -> Res {
    let (new_only, both) = restart_with(ctx, 8002, "SO_REUSEADDR")?;
    Ok(restart_outcome(
        "SO_REUSEADDR",
        new_only,
        both,
        "The timewait socket keeps the SO_REUSEADDR of the socket it replaced (tw_reuse). \
         inet_bind_conflict() ignores a TIME_WAIT holder only when both it and the new socket \
         have sk_reuse: setting SO_REUSEADDR on the restarted server helps only if the old \
         server had it too. Set it on every listener, before the restart is needed.",
    ))
}

fn restart_reuseport(ctx: &mut Ctx) -> Res {
    let (new_only, both) = restart_with(ctx, 8003, "SO_REUSEPORT")?;
    Ok(restart_outcome(
        "SO_REUSEPORT",
        new_only,
        both,
        "inet_bind_conflict() lets SO_REUSEPORT sockets share a port when both have \
         sk_reuseport and either the holder is TIME_WAIT or the uids match; the timewait \
         socket's tw_reuseport is copied from the closed socket, so the old server must have \
         set it.",
    ))
}

fn reuseaddr_while_listening(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a")?;
    let b = ctx.tcp("b")?;
    ctx.reuseaddr(&a)?;
    ctx.reuseaddr(&b)?;
    let a_bind = ctx.bind(&a, "127.0.0.1:8004")?;
    let a_listen = ctx.listen(&a, 8);
    let b_bind = ctx.bind(&b, "127.0.0.1:8004")?;
    // The claim: SO_REUSEADDR gives no second bind next to a listener.
    let refused = a_listen.is_none() && b_bind.is_some();
    Ok(Outcome {
        verdict: Verdict::of(&[refused]),
        summary: format!(
            "a bind {}, a listen {}, b bind {}",
            show(&a_bind),
            show(&a_listen),
            show(&b_bind)
        ),
        details: json!({ "a_bind": a_bind, "a_listen": a_listen, "b_bind": b_bind }),
        explanation: "inet_bind_conflict(): two sk_reuse sockets share a port only while the \
            holder is not in LISTEN. A listening socket owns its address:port exclusively; \
            SO_REUSEADDR on Linux is for TIME_WAIT and not-yet-listening sockets, not for two \
            live listeners (that is SO_REUSEPORT)."
            .into(),
    })
}

fn reuseaddr_bind_both_then_listen(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a")?;
    let b = ctx.tcp("b")?;
    ctx.reuseaddr(&a)?;
    ctx.reuseaddr(&b)?;
    let a_bind = ctx.bind(&a, "127.0.0.1:8005")?;
    let b_bind = ctx.bind(&b, "127.0.0.1:8005")?;
    let a_listen = ctx.listen(&a, 8);
    let b_listen = ctx.listen(&b, 8);
    let both_bound = a_bind.is_none() && b_bind.is_none();
    let both_listen = a_listen.is_none() && b_listen.is_none();
    Ok(Outcome {
        // The claim: no two binds. Both bind; only the listen is refused.
        verdict: Verdict::of(&[!both_bound, !both_listen]),
        summary: format!(
            "binds: a {}, b {}; listens: a {}, b {}",
            show(&a_bind),
            show(&b_bind),
            show(&a_listen),
            show(&b_listen)
        ),
        details: json!({ "a_bind": a_bind, "b_bind": b_bind, "a_listen": a_listen, "b_listen": b_listen }),
        explanation: "Both binds pass inet_bind_conflict() (both sk_reuse, neither listening), \
            but listen() runs the check again: inet_csk_listen_start() -> inet_csk_get_port() \
            now finds a LISTEN holder and returns EADDRINUSE. The error surfaces at listen(), \
            not at bind()."
            .into(),
    })
}

fn wildcard_plus_specific(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let wild = ctx.tcp("wildcard (listening)")?;
    let spec = ctx.tcp("specific")?;
    ctx.reuseaddr(&wild)?;
    ctx.reuseaddr(&spec)?;
    ctx.bind(&wild, "0.0.0.0:8006")?;
    ctx.listen(&wild, 8);
    let listening = ctx.bind(&spec, "127.0.0.1:8006")?;
    drop((wild, spec));
    let wild = ctx.tcp("wildcard (bound only)")?;
    let spec = ctx.tcp("specific 2")?;
    ctx.reuseaddr(&wild)?;
    ctx.reuseaddr(&spec)?;
    ctx.bind(&wild, "0.0.0.0:8006")?;
    let bound = ctx.bind(&spec, "127.0.0.1:8006")?;
    let spec_listen = if bound.is_none() {
        ctx.listen(&spec, 8)
    } else {
        None
    };
    let wild_listen = ctx.listen(&wild, 8);
    Ok(Outcome {
        // The claim: with SO_REUSEADDR the pair is fine.
        verdict: Verdict::of(&[
            listening.is_none(),
            bound.is_none(),
            spec_listen.is_none() && wild_listen.is_none(),
        ]),
        summary: format!(
            "specific bind while the wildcard listens: {}; while it is only bound: {}, \
             then listen: specific {}, wildcard {}",
            show(&listening),
            show(&bound),
            show(&spec_listen),
            show(&wild_listen)
        ),
        details: json!({
            "specific_bind_while_wildcard_listens": listening,
            "specific_bind_while_wildcard_bound": bound,
            "specific_listen": spec_listen,
            "wildcard_listen": wild_listen,
        }),
        explanation: "inet_rcv_saddr_equal() treats 0.0.0.0 as equal to every address, so a \
            wildcard and a specific socket on one port conflict like two identical ones: \
            allowed while neither listens and both have SO_REUSEADDR, refused once one listens \
            (inet_bind_conflict(): holder in LISTEN). Whichever listens second gets EADDRINUSE."
            .into(),
    })
}

fn different_addresses(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a 127.0.0.1:8007")?;
    let b = ctx.tcp("b 127.0.0.2:8007")?;
    let c = ctx.tcp("c 127.0.0.1:8008")?;
    let mut results = Vec::new();
    for (s, addr) in [
        (&a, "127.0.0.1:8007"),
        (&b, "127.0.0.2:8007"),
        (&c, "127.0.0.1:8008"),
    ] {
        let mut e = ctx.bind(s, addr)?;
        if e.is_none() {
            e = ctx.listen(s, 8);
        }
        results.push(e);
    }
    let all_ok = results.iter().all(Option::is_none);
    Ok(Outcome {
        verdict: Verdict::of(&[all_ok]),
        summary: format!(
            "127.0.0.1:8007 {}, 127.0.0.2:8007 {}, 127.0.0.1:8008 {} (bind + listen, no options)",
            show(&results[0]),
            show(&results[1]),
            show(&results[2])
        ),
        details: json!({ "results": results }),
        explanation: "Ports are separate bind buckets; within one port, inet_rcv_saddr_equal() \
            compares addresses, and two distinct specific addresses never match (only a \
            wildcard matches everything)."
            .into(),
    })
}

/// Sends `per_source` datagrams from each of `sources` sockets on
/// 127.0.0.1 to `to`; returns the source ports.
fn udp_burst(to: &str, sources: usize, per_source: usize) -> Result<Vec<u16>, ScenarioError> {
    (0..sources)
        .map(|_| send_udp("127.0.0.1:0", to, per_source))
        .collect()
}

fn counts_by_socket(socks: &[Sock]) -> (Vec<u64>, HashMap<u16, Vec<String>>) {
    settle();
    let mut counts = Vec::new();
    let mut by_source: HashMap<u16, Vec<String>> = HashMap::new();
    for s in socks {
        let got = drain_udp(s);
        counts.push(got.len() as u64);
        for from in got {
            by_source
                .entry(from.port())
                .or_default()
                .push(s.label.clone());
        }
    }
    (counts, by_source)
}

fn udp_reuseaddr_unicast(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("u{i}"))?;
        ctx.reuseaddr(&s)?;
        ctx.bind(&s, "127.0.0.1:8009")?;
        socks.push(s);
    }
    udp_burst("127.0.0.1:8009", 20, 5)?;
    let (first, _) = counts_by_socket(&socks);
    let receiver = first.iter().position(|&c| c > 0);
    for (s, &c) in socks.iter().zip(&first) {
        ctx.delivered(s, c, false);
    }
    // Close the socket that got the traffic and send again.
    let mut after = Vec::new();
    let mut closed = None;
    if let Some(i) = receiver {
        let gone = socks.remove(i);
        closed = Some(gone.label.clone());
        drop(gone);
        udp_burst("127.0.0.1:8009", 20, 5)?;
        after = counts_by_socket(&socks).0;
    }
    let receivers_first = first.iter().filter(|&&c| c > 0).count();
    let receivers_after = after.iter().filter(|&&c| c > 0).count();
    // The claim: every socket bound to the port gets the data.
    let delivered_to_all = receivers_first == first.len();
    Ok(Outcome {
        verdict: Verdict::of(&[delivered_to_all]),
        summary: format!(
            "100 datagrams from 20 sources: per socket {first:?} ({receivers_first} receiving); \
             after closing {}: per remaining socket {after:?}",
            closed.as_deref().unwrap_or("-")
        ),
        details: json!({
            "per_socket_first": first,
            "closed": closed,
            "per_socket_after": after,
            "receivers_after": receivers_after,
        }),
        explanation: "Unicast UDP goes to exactly one socket. Without SO_REUSEPORT, \
            udp4_lib_lookup2() scores the sockets bound to the port and keeps the first best \
            one, the most recently bound of equal scores: one socket gets every datagram, \
            and the next takes over only when it closes. Nothing is duplicated."
            .into(),
    })
}

fn set_multicast_on_lo() -> Result<(), ScenarioError> {
    let sock = io(Socket::new(Domain::IPV4, Type::DGRAM, None))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: valid socket and ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_MULTICAST as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn udp_multicast(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    set_multicast_on_lo()?;
    ctx.note("lo: multicast on; group 239.1.2.3 joined on 127.0.0.1 by each receiver");
    let group = std::net::Ipv4Addr::new(239, 1, 2, 3);
    let lo = std::net::Ipv4Addr::LOCALHOST;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("m{i}"))?;
        ctx.reuseaddr(&s)?;
        ctx.bind(&s, "0.0.0.0:8010")?;
        io(s.sock.join_multicast_v4(&group, &lo))?;
        socks.push(s);
    }
    let sender = io(Socket::new(Domain::IPV4, Type::DGRAM, None))?;
    io(sender.set_multicast_if_v4(&lo))?;
    io(sender.set_multicast_loop_v4(true))?;
    let to: SockAddr = SocketAddr::from((group, 8010)).into();
    const SENT: u64 = 30;
    for _ in 0..SENT {
        io(sender.send_to(b"inspector", &to))?;
    }
    let (counts, _) = counts_by_socket(&socks);
    for (s, &c) in socks.iter().zip(&counts) {
        ctx.delivered(s, c, false);
    }
    let every_copy = counts.iter().all(|&c| c == SENT);
    Ok(Outcome {
        verdict: Verdict::of(&[every_copy]),
        summary: format!("{SENT} datagrams to 239.1.2.3:8010: received per socket {counts:?}"),
        details: json!({ "sent": SENT, "per_socket": counts }),
        explanation: "__udp4_lib_mcast_deliver() clones a multicast or broadcast datagram to \
            every socket bound to the port that matches it (and has joined the group): \
            SO_REUSEADDR sharing means each receiver gets its own copy, unlike unicast."
            .into(),
    })
}

fn udp_reuseport(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("w{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, "127.0.0.1:8011")?;
        socks.push(s);
    }
    const SOURCES: usize = 90;
    const PER_SOURCE: usize = 4;
    udp_burst("127.0.0.1:8011", SOURCES, PER_SOURCE)?;
    let (counts, by_source) = counts_by_socket(&socks);
    for (s, &c) in socks.iter().zip(&counts) {
        ctx.delivered(s, c, true);
    }
    let sticky = by_source
        .values()
        .filter(|v| v.iter().all(|l| *l == v[0]))
        .count();
    let spread = Spread::of(&counts);
    let all_sticky = sticky == by_source.len();
    // "Even" as a statistician would accept it from a uniform choice.
    let even = spread.p_value > 0.001 && counts.iter().all(|&c| c > 0);
    let no_duplicates = spread.total == (SOURCES * PER_SOURCE) as u64;
    Ok(Outcome {
        verdict: Verdict::of(&[all_sticky, even, no_duplicates]),
        summary: format!(
            "{} datagrams from {SOURCES} sources: per socket {counts:?}, max/mean {:.2}, \
             chi-square p {:.3}; {sticky}/{} sources always reached the same socket",
            SOURCES * PER_SOURCE,
            spread.imbalance,
            spread.p_value,
            by_source.len()
        ),
        details: json!({ "per_socket": counts, "spread": spread, "sticky_sources": sticky, "sources": by_source.len() }),
        explanation: "reuseport_select_sock() picks a member by the flow hash of the 4-tuple \
            (udp_ehashfn()), so one source always lands on the same socket and the split \
            follows the hash, not a round-robin: even only on average."
            .into(),
    })
}

fn tcp_reuseport(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut listeners = Vec::new();
    for i in 0..3 {
        let s = ctx.tcp(&format!("l{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, "127.0.0.1:8012")?;
        ctx.listen(&s, 512);
        listeners.push(s);
    }
    // A worker that forgot SO_REUSEPORT cannot join the group.
    let late = ctx.tcp("late worker without SO_REUSEPORT")?;
    let late_bind = ctx.bind(&late, "127.0.0.1:8012")?;
    drop(late);
    const CONNECTIONS: usize = 150;
    let to: SockAddr = sockaddr("127.0.0.1:8012")?.into();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
    }
    let mut counts: Vec<u64> = listeners
        .iter()
        .map(|l| accept_n(l, CONNECTIONS, Duration::from_millis(300)).len() as u64)
        .collect();
    drop(clients);
    // The same client address and source port, again and again: closed
    // with RST (SO_LINGER 0) so no TIME_WAIT blocks the next one.
    const FIXED: usize = 20;
    let mut fixed = vec![0u64; listeners.len()];
    for _ in 0..FIXED {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.set_reuse_address(true))?;
        io(c.bind(&sockaddr("127.0.0.1:40999")?.into()))?;
        io(c.connect(&to))?;
        for (i, l) in listeners.iter().enumerate() {
            let got = accept_n(l, 1, Duration::from_millis(5));
            for s in got {
                fixed[i] += 1;
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
        io(c.set_linger(Some(Duration::ZERO)))?;
    }
    for (i, l) in listeners.iter().enumerate() {
        counts[i] += fixed[i];
        ctx.delivered(l, counts[i], true);
    }
    let varied: Vec<u64> = counts.iter().zip(&fixed).map(|(c, f)| c - f).collect();
    let spread = Spread::of(&varied);
    let fixed_members = fixed.iter().filter(|&&c| c > 0).count();
    // The claim: one client IP reconnecting from new ports keeps reaching
    // the same listener.
    let same_listener = varied.iter().filter(|&&c| c > 0).count() == 1;
    Ok(Outcome {
        verdict: Verdict::of(&[same_listener]),
        summary: format!(
            "{CONNECTIONS} connections from changing source ports: per listener {varied:?}, \
             max/mean {:.2}, chi-square p {:.3}; {FIXED} from fixed source port 40999: {fixed:?}; \
             a 4th worker without SO_REUSEPORT: {}",
            spread.imbalance,
            spread.p_value,
            show(&late_bind)
        ),
        details: json!({
            "per_listener": varied,
            "spread": spread,
            "fixed_source_port": fixed,
            "fixed_port_listeners": fixed_members,
            "late_joiner_without_reuseport": late_bind,
        }),
        explanation: "For each SYN, reuseport_select_sock() maps the 4-tuple hash \
            (inet_ehashfn()) onto the group. The source port is in the hash: one client IP \
            reconnecting from new ports is spread over all listeners, statistically (not \
            round-robin); only a fixed 4-tuple always lands on the same listener. There is no \
            per-client affinity."
            .into(),
    })
}

fn reuseport_other_uid(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut results = BTreeMap::new();
    for (proto, port) in [(Proto::Tcp, 8013u16), (Proto::Udp, 8014)] {
        let owner = ctx.socket(&format!("{proto:?} owner (uid 0)"), proto, false)?;
        ctx.reuseport(&owner)?;
        ctx.bind(&owner, &format!("127.0.0.1:{port}"))?;
        if proto == Proto::Tcp {
            ctx.listen(&owner, 8);
        }
        let addr = sockaddr(&format!("127.0.0.1:{port}"))?;
        let other = io(bind_as_nobody(proto, addr, true, false))?;
        let errno = other.errno.map(|e| Errno::from(e).to_string());
        ctx.calls.push(super::Call {
            socket: format!("{proto:?} intruder (uid {NOBODY}, pid {})", other.pid),
            proto,
            op: "bind",
            addr: addr.ip().to_string(),
            port,
            errno: errno.clone(),
        });
        results.insert(format!("{proto:?}").to_lowercase(), errno);
        drop(other);
        ctx.hold(owner);
    }
    let tcp = results.get("tcp").cloned().flatten();
    let udp = results.get("udp").cloned().flatten();
    Ok(Outcome {
        verdict: Verdict::of(&[tcp.is_some(), udp.is_some()]),
        summary: format!(
            "SO_REUSEPORT bind by uid {NOBODY} next to uid 0: tcp {}, udp {}",
            show(&tcp),
            show(&udp)
        ),
        details: json!(results),
        explanation: "inet_csk_bind_conflict() and udp_lib_lport_inuse() share a port between \
            SO_REUSEPORT sockets only when uid_eq(sock_i_uid()) holds (the socket owners' \
            uids match) or, for TCP, the holder is TIME_WAIT; a process of another user gets \
            EADDRINUSE."
            .into(),
    })
}

fn port_hijack(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    // TCP: the victim listens on the wildcard, without and with SO_REUSEADDR.
    let victim = ctx.tcp("tcp victim 0.0.0.0")?;
    ctx.bind(&victim, "0.0.0.0:8015")?;
    ctx.listen(&victim, 8);
    let thief = ctx.tcp("tcp thief 127.0.0.1")?;
    ctx.reuseaddr(&thief)?;
    let tcp_plain = ctx.bind(&thief, "127.0.0.1:8015")?;
    let victim2 = ctx.tcp("tcp victim 0.0.0.0 (SO_REUSEADDR)")?;
    ctx.reuseaddr(&victim2)?;
    ctx.bind(&victim2, "0.0.0.0:8016")?;
    ctx.listen(&victim2, 8);
    let thief2 = ctx.tcp("tcp thief 127.0.0.1 (SO_REUSEADDR)")?;
    ctx.reuseaddr(&thief2)?;
    let tcp_reuse = ctx.bind(&thief2, "127.0.0.1:8016")?;
    // UDP: both with SO_REUSEADDR, the thief on the specific address.
    let uvictim = ctx.udp("udp victim 0.0.0.0")?;
    ctx.reuseaddr(&uvictim)?;
    ctx.bind(&uvictim, "0.0.0.0:8017")?;
    let uthief = ctx.udp("udp thief 127.0.0.1")?;
    ctx.reuseaddr(&uthief)?;
    let udp_bind = ctx.bind(&uthief, "127.0.0.1:8017")?;
    udp_burst("127.0.0.1:8017", 5, 2)?;
    udp_burst("127.0.0.2:8017", 5, 2)?;
    settle();
    let per_dest = |s: &Sock| -> (u64, u64) {
        let mut to_1 = 0;
        let mut to_2 = 0;
        let _ = s.sock.set_nonblocking(true);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        // recvmsg with IP_PKTINFO would name the destination; the
        // thief is bound to 127.0.0.1 only, so it can only get those.
        while s.sock.recv_from(&mut buf).is_ok() {
            if s.label.contains("thief") {
                to_1 += 1;
            } else {
                to_2 += 1;
            }
        }
        (to_1, to_2)
    };
    let thief_got = per_dest(&uthief).0;
    let victim_got = per_dest(&uvictim).1;
    ctx.delivered(&uthief, thief_got, false);
    ctx.delivered(&uvictim, victim_got, false);
    // The claim: both parties bind, and traffic is split between them.
    let tcp_coexist = tcp_plain.is_none() || tcp_reuse.is_none();
    let udp_split = udp_bind.is_none() && thief_got > 0 && thief_got < 10;
    Ok(Outcome {
        verdict: Verdict::of(&[tcp_coexist, udp_split]),
        summary: format!(
            "TCP specific bind next to a wildcard listener: {} (victim without SO_REUSEADDR), \
             {} (victim with it); UDP with SO_REUSEADDR on both: bind {}, the specific socket \
             got {thief_got}/10 datagrams sent to 127.0.0.1, the wildcard got {victim_got}/10 sent to 127.0.0.2",
            show(&tcp_plain),
            show(&tcp_reuse),
            show(&udp_bind)
        ),
        details: json!({
            "tcp_thief_bind_victim_plain": tcp_plain,
            "tcp_thief_bind_victim_reuseaddr": tcp_reuse,
            "udp_thief_bind": udp_bind,
            "udp_thief_received_of_10": thief_got,
            "udp_victim_received_of_10": victim_got,
        }),
        explanation: "TCP: a listening wildcard socket conflicts with any specific bind on its \
            port (inet_bind_conflict(), LISTEN holder), SO_REUSEADDR or not: no hijack. UDP: \
            udp_lib_lport_inuse() lets two sk_reuse sockets share a port regardless of uid, and \
            udp4_lib_lookup2() scores an exact local address above the wildcard, so the \
            specific socket takes the traffic for its address. The risk is real for UDP \
            services that set SO_REUSEADDR; SO_REUSEPORT requires the same uid."
            .into(),
    })
}

/// Connects `n` clients to `to` one after another, each closing first
/// (client-side TIME_WAIT); returns the errno of each attempt.
fn connect_and_close(
    ctx: &mut Ctx,
    listener: &Sock,
    to: &str,
    n: usize,
) -> Result<Vec<Option<String>>, ScenarioError> {
    let mut out = Vec::new();
    for i in 0..n {
        let c = ctx.tcp(&format!("client {i}"))?;
        let errno = ctx.connect(&c, to)?;
        let server_side = if errno.is_none() {
            accept_n(listener, 1, Duration::from_millis(200))
        } else {
            Vec::new()
        };
        out.push(errno);
        // The client closes first, so the TIME_WAIT is on its side.
        drop(c);
        settle();
        drop(server_side);
    }
    settle();
    Ok(out)
}

fn ephemeral_exhaustion(ctx: &mut Ctx) -> Res {
    let mut runs = BTreeMap::new();
    for reuse in ["0", "1"] {
        ctx.fresh_netns()?;
        ctx.sysctl("net/ipv4/ip_local_port_range", "40000 40003")?;
        ctx.sysctl("net/ipv4/tcp_tw_reuse", reuse)?;
        ctx.sysctl("net/ipv4/tcp_timestamps", "1")?;
        let listener = ctx.tcp(&format!("server (tcp_tw_reuse={reuse})"))?;
        ctx.bind(&listener, "127.0.0.1:8018")?;
        ctx.listen(&listener, 64);
        let first = connect_and_close(ctx, &listener, "127.0.0.1:8018", 4)?;
        // tcp_tw_reuse waits tcp_tw_reuse_delay (1 s) before reusing.
        std::thread::sleep(Duration::from_millis(1100));
        let again = connect_and_close(ctx, &listener, "127.0.0.1:8018", 2)?;
        runs.insert(
            format!("tcp_tw_reuse={reuse}"),
            json!({ "first_4": first, "next_2": again }),
        );
        ctx.hold(listener);
    }
    let exhausted = |key: &str| {
        runs[key]["next_2"]
            .as_array()
            .is_some_and(|a| a.iter().all(|e| e.as_str() == Some("EADDRNOTAVAIL")))
    };
    let no_reuse_exhausted = exhausted("tcp_tw_reuse=0");
    let reuse_exhausted = exhausted("tcp_tw_reuse=1");
    Ok(Outcome {
        verdict: Verdict::of(&[no_reuse_exhausted, reuse_exhausted]),
        summary: format!(
            "4 ephemeral ports, 4 connections closed by the client, then 2 more after 1.1 s: \
             with tcp_tw_reuse=0 {}; with tcp_tw_reuse=1 {}",
            if no_reuse_exhausted {
                "EADDRNOTAVAIL (all ports held by TIME_WAIT)"
            } else {
                "connected"
            },
            if reuse_exhausted {
                "EADDRNOTAVAIL"
            } else {
                "connected (TIME_WAIT slots reused)"
            }
        ),
        details: json!(runs),
        explanation: "connect() picks a port in __inet_hash_connect(); a port whose 4-tuple is \
            held by a TIME_WAIT socket is usable only if tcp_twsk_unique() allows taking it \
            over: tcp_tw_reuse=1 (with timestamps) after tcp_tw_reuse_delay. With 0, every \
            port is taken and connect() fails with EADDRNOTAVAIL for 60 s (TCP_TIMEWAIT_LEN)."
            .into(),
    })
}

fn client_fixed_port(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    ctx.sysctl("net/ipv4/tcp_timestamps", "1")?;
    let listener = ctx.tcp("server")?;
    ctx.bind(&listener, "127.0.0.1:8019")?;
    ctx.listen(&listener, 8);
    let mut rounds = BTreeMap::new();
    for (round, reuse) in [("plain", false), ("SO_REUSEADDR", true)] {
        let c = ctx.tcp(&format!("client ({round})"))?;
        if reuse {
            ctx.reuseaddr(&c)?;
        }
        let port = if reuse {
            "127.0.0.1:41001"
        } else {
            "127.0.0.1:41000"
        };
        ctx.bind(&c, port)?;
        ctx.connect(&c, "127.0.0.1:8019")?;
        let server_side = accept_n(&listener, 1, Duration::from_millis(200));
        drop(c); // the client closes first: its side goes to TIME_WAIT
        settle();
        drop(server_side);
        settle();
        let again = ctx.tcp(&format!("client again ({round})"))?;
        if reuse {
            ctx.reuseaddr(&again)?;
        }
        let bind = ctx.bind(&again, port)?;
        let connect = if bind.is_none() {
            ctx.connect(&again, "127.0.0.1:8019")?
        } else {
            None
        };
        rounds.insert(round, json!({ "rebind": bind, "reconnect": connect }));
        ctx.expect_time_wait.push(if reuse { 41001 } else { 41000 });
    }
    let plain_blocked = rounds["plain"]["rebind"].as_str() == Some("EADDRINUSE");
    let reuse_rebinds = rounds["SO_REUSEADDR"]["rebind"].is_null();
    let reuse_reconnect = rounds["SO_REUSEADDR"]["reconnect"]
        .as_str()
        .map(str::to_owned);
    ctx.hold(listener);
    Ok(Outcome {
        verdict: Verdict::of(&[plain_blocked]),
        summary: format!(
            "rebinding the source port after closing: plain {}; with SO_REUSEADDR bind {} and \
             connect to the same server {}",
            rounds["plain"]["rebind"].as_str().unwrap_or("ok"),
            if reuse_rebinds { "ok" } else { "refused" },
            reuse_reconnect.as_deref().unwrap_or("ok")
        ),
        details: json!(rounds),
        explanation: "The client's TIME_WAIT socket holds its port: a plain bind() conflicts \
            (inet_bind_conflict()); with SO_REUSEADDR on both the bind succeeds, but the same \
            4-tuple is still in TIME_WAIT. connect() on an explicitly bound port asks \
            __inet_check_established() with no twp, and tcp_twsk_unique() then takes over a \
            TIME_WAIT socket that has TCP timestamps whatever tcp_tw_reuse says; without \
            timestamps it fails with EADDRNOTAVAIL."
            .into(),
    })
}

/// Clients queued on two SO_REUSEPORT listeners; the first is closed with
/// its queue unaccepted. Returns (queued on the closed one, accepted by the
/// survivor, clients reset).
fn restart_round(ctx: &mut Ctx, migrate: &str) -> Result<serde_json::Value, ScenarioError> {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_migrate_req", migrate)?;
    let old = ctx.tcp(&format!("old (tcp_migrate_req={migrate})"))?;
    let new = ctx.tcp(&format!("new (tcp_migrate_req={migrate})"))?;
    for s in [&old, &new] {
        ctx.reuseport(s)?;
        ctx.bind(s, "127.0.0.1:8020")?;
        ctx.listen(s, 128);
    }
    const CLIENTS: usize = 40;
    let to: SockAddr = sockaddr("127.0.0.1:8020")?.into();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
    }
    settle();
    let (old_label, old_ino) = (old.label.clone(), old.ino);
    drop(old); // the old server exits without accepting its queue
    settle();
    let accepted = accept_n(&new, CLIENTS, Duration::from_millis(300)).len();
    let mut reset = 0u64;
    for c in &clients {
        let _ = c.set_nonblocking(true);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8];
        if let Err(e) = c.recv(&mut buf)
            && e.raw_os_error() == Some(libc::ECONNRESET)
        {
            reset += 1;
        }
    }
    if migrate == "0" {
        // Without migration, the clients reset are exactly those the kernel
        // queued to the old listener, and the rest went to the new one.
        ctx.deliveries.push(super::ctx::Delivery {
            socket: old_label,
            ino: old_ino,
            count: reset,
            checked: true,
        });
        ctx.delivered(&new, accepted as u64, true);
    }
    ctx.hold(new);
    Ok(json!({ "clients": CLIENTS, "accepted_by_new": accepted, "reset": reset }))
}

fn rolling_restart(ctx: &mut Ctx) -> Res {
    let off = restart_round(ctx, "0")?;
    let on = restart_round(ctx, "1")?;
    let reset_off = off["reset"].as_u64().unwrap_or(0);
    let reset_on = on["reset"].as_u64().unwrap_or(0);
    Ok(Outcome {
        verdict: Verdict::of(&[reset_off == 0, reset_on == 0]),
        summary: format!(
            "40 clients queued on 2 listeners, the old one closed unaccepted: \
             tcp_migrate_req=0: {reset_off} reset, {} accepted by the new one; \
             tcp_migrate_req=1: {reset_on} reset, {} accepted",
            off["accepted_by_new"], on["accepted_by_new"]
        ),
        details: json!({ "tcp_migrate_req=0": off, "tcp_migrate_req=1": on }),
        explanation: "Closing a listener runs inet_csk_listen_stop(): connections in its accept \
            queue are reset, because the hash chose that listener when the SYN came. With \
            net.ipv4.tcp_migrate_req=1, reuseport_migrate_sock() moves them to another member \
            of the group instead. Without it, a restart by SO_REUSEPORT alone drops clients."
            .into(),
    })
}

fn dual_stack(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut rows = BTreeMap::new();
    for (v6only, port) in [(false, 8021u16), (true, 8022)] {
        let six = ctx.socket(
            &format!("[::]:{port} V6ONLY={}", u8::from(v6only)),
            Proto::Tcp,
            true,
        )?;
        ctx.v6only(&six, v6only)?;
        ctx.bind(&six, &format!("[::]:{port}"))?;
        ctx.listen(&six, 8);
        let four = ctx.tcp(&format!("0.0.0.0:{port}"))?;
        let mut errno = ctx.bind(&four, &format!("0.0.0.0:{port}"))?;
        if errno.is_none() {
            errno = ctx.listen(&four, 8);
        }
        // Who answers an IPv4 client?
        let client = ctx.tcp("v4 client")?;
        let connect = ctx.connect(&client, &format!("127.0.0.1:{port}"))?;
        let by_six = accept_n(&six, 1, Duration::from_millis(100)).len();
        let by_four = accept_n(&four, 1, Duration::from_millis(100)).len();
        rows.insert(
            format!("v6only={}", u8::from(v6only)),
            json!({ "ipv4_wildcard": errno, "v4_connect": connect, "accepted_by_v6": by_six, "accepted_by_v4": by_four }),
        );
        ctx.hold(six);
        ctx.hold(four);
    }
    let coexist_dual = rows["v6only=0"]["ipv4_wildcard"].is_null();
    let coexist_v6only = rows["v6only=1"]["ipv4_wildcard"].is_null();
    Ok(Outcome {
        // The claim: they conflict without V6ONLY and coexist with it.
        verdict: Verdict::of(&[!coexist_dual, coexist_v6only]),
        summary: format!(
            "0.0.0.0:P next to a listening [::]:P: with V6ONLY=0 {}; with V6ONLY=1 {}",
            rows["v6only=0"]["ipv4_wildcard"].as_str().unwrap_or("ok"),
            rows["v6only=1"]["ipv4_wildcard"].as_str().unwrap_or("ok")
        ),
        details: json!(rows),
        explanation: "A [::] socket without IPV6_V6ONLY also accepts IPv4 (v4-mapped), so \
            inet_rcv_saddr_equal() -> ipv6_rcv_saddr_equal() makes it conflict with 0.0.0.0 \
            on the same port; with IPV6_V6ONLY=1 (ipv6_only_sock()) they are disjoint and both \
            bind. The default comes from net.ipv6.bindv6only (0)."
            .into(),
    })
}

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

fn throughput(ctx: &mut Ctx) -> Res {
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
