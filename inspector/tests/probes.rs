//! Privileged integration tests: the real kernel programs, real sockets in
//! fresh network namespaces, and assertions on what the probes reported
//! against what the syscalls returned.

mod common;

use std::{collections::HashMap, sync::mpsc, time::Duration};

use common::{addr, collect, errno_of, inode, of_type, pipeline, pipeline_with, tcp, udp};
use inspector::{
    kernel::netns::{in_new_netns, set_sysctl},
    kernel::{Errno, Phase, Proto, TcpState},
    model::filter::Filter,
    model::record::ExitReason,
};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn successful_bind_reports_flags_owner_and_phase() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, ino, pid) = in_new_netns(|netns| {
        let s = tcp();
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.bind(&addr("127.0.0.1:7001")).expect("bind");
        s.listen(16).expect("listen");
        (netns, inode(&s), std::process::id())
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| of_type(r, "bind").len() >= 2);
    let binds = of_type(&recs, "bind");
    assert_eq!(binds.len(), 2, "bind and listen decisions: {recs:#?}");
    let (bind, listen) = (binds[0], binds[1]);
    assert_eq!(bind.phase, Some(Phase::Bind));
    assert_eq!(listen.phase, Some(Phase::Listen));
    for b in [bind, listen] {
        assert_eq!(b.errno, None);
        assert_eq!(b.lport, 7001);
        assert_eq!(b.laddr.to_string(), "127.0.0.1");
        assert!(b.reuseaddr && b.reuseport && !b.v6only);
        assert_eq!(b.proto, Some(Proto::Tcp));
        assert_eq!(b.pid, Some(pid));
        assert_eq!(b.ino, Some(ino));
        assert_eq!(b.uid, Some(0));
    }
    assert_eq!(bind.req_port, Some(7001));
}

#[test]
fn rebinding_over_server_side_time_wait_fails_with_eaddrinuse() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, errno) = in_new_netns(|netns| {
        set_sysctl("net/ipv4/tcp_tw_reuse", "0").expect("sysctl");
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7002")).expect("bind");
        listener.listen(4).expect("listen");
        let client = tcp();
        client.connect(&addr("127.0.0.1:7002")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        // The server closes first: the TIME_WAIT socket is on port 7002.
        drop(server_side);
        std::thread::sleep(Duration::from_millis(50));
        drop(client);
        drop(listener);
        std::thread::sleep(Duration::from_millis(50));
        let again = tcp();
        (netns, errno_of(again.bind(&addr("127.0.0.1:7002"))))
    })
    .expect("netns");
    assert_eq!(
        errno,
        Some(libc::EADDRINUSE),
        "the kernel refuses the restart"
    );
    let recs = collect(&mut p, netns, WAIT, |r| r.iter().any(|r| r.is_failure()));
    let failed: Vec<_> = recs.iter().filter(|r| r.is_failure()).collect();
    assert_eq!(failed.len(), 1, "{recs:#?}");
    assert_eq!(failed[0].errno, Some(Errno::EADDRINUSE));
    assert_eq!(failed[0].phase, Some(Phase::Bind));
    assert_eq!(failed[0].req_port, Some(7002));
    assert!(!failed[0].reuseaddr);
    let tw = of_type(&recs, "tw_enter");
    assert!(
        tw.iter().any(|t| t.lport == 7002),
        "server-side TIME_WAIT seen: {recs:#?}"
    );
}

#[test]
fn listen_can_fail_after_a_successful_bind() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, first, second) = in_new_netns(|netns| {
        let a = tcp();
        let b = tcp();
        for s in [&a, &b] {
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&addr("127.0.0.1:7003"))
                .expect("both binds succeed with SO_REUSEADDR");
        }
        let first = errno_of(a.listen(4));
        let second = errno_of(b.listen(4));
        (netns, first, second)
    })
    .expect("netns");
    assert_eq!(first, None);
    assert_eq!(second, Some(libc::EADDRINUSE));
    let recs = collect(&mut p, netns, WAIT, |r| of_type(r, "bind").len() >= 4);
    let binds = of_type(&recs, "bind");
    let phases: Vec<_> = binds.iter().map(|b| (b.phase, b.errno)).collect();
    assert_eq!(
        phases,
        [
            (Some(Phase::Bind), None),
            (Some(Phase::Bind), None),
            (Some(Phase::Listen), None),
            (Some(Phase::Listen), Some(Errno::EADDRINUSE))
        ]
    );
}

#[test]
fn udp_binds_with_reuseaddr_share_a_port() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, results) = in_new_netns(|netns| {
        let socks: Vec<_> = (0..2).map(|_| udp()).collect();
        let results: Vec<_> = socks
            .iter()
            .map(|s| {
                s.set_reuse_address(true).expect("SO_REUSEADDR");
                errno_of(s.bind(&addr("127.0.0.1:7004")))
            })
            .collect();
        (netns, results)
    })
    .expect("netns");
    assert_eq!(results, [None, None]);
    let recs = collect(&mut p, netns, WAIT, |r| of_type(r, "bind").len() >= 2);
    let binds = of_type(&recs, "bind");
    assert_eq!(binds.len(), 2);
    for b in binds {
        assert_eq!(
            (b.proto, b.lport, b.reuseaddr, b.errno),
            (Some(Proto::Udp), 7004, true, None)
        );
    }
}

#[test]
fn time_wait_entry_and_exit_carry_tuple_and_flags() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, client_port, reuse_errno) = in_new_netns(|netns| {
        set_sysctl("net/ipv4/tcp_tw_reuse", "1").expect("sysctl");
        set_sysctl("net/ipv4/tcp_timestamps", "1").expect("sysctl");
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7005")).expect("bind");
        listener.listen(4).expect("listen");
        let client = tcp();
        client.set_reuse_address(true).expect("SO_REUSEADDR");
        client.bind(&addr("127.0.0.1:0")).expect("bind");
        let port = client
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet")
            .port();
        client.connect(&addr("127.0.0.1:7005")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        drop(client); // the client closes first: its side goes to TIME_WAIT
        std::thread::sleep(Duration::from_millis(50));
        drop(server_side);
        // tcp_tw_reuse lets a new connect on the same 4-tuple take over the
        // TIME_WAIT socket once it is a second old (tcp_twsk_unique()).
        std::thread::sleep(Duration::from_millis(1100));
        let again = tcp();
        again.set_reuse_address(true).expect("SO_REUSEADDR");
        again
            .bind(&addr(&format!("127.0.0.1:{port}")))
            .expect("rebind");
        let reuse = errno_of(again.connect(&addr("127.0.0.1:7005")));
        // The listener goes first: its unaccepted connection is reset, so
        // the second connection leaves no TIME_WAIT socket of its own.
        drop(listener);
        std::thread::sleep(Duration::from_millis(20));
        drop(again);
        (netns, port, reuse)
    })
    .expect("netns");
    assert_eq!(
        reuse_errno, None,
        "tcp_tw_reuse=1 lets the client reuse its TIME_WAIT slot"
    );
    let recs = collect(&mut p, netns, WAIT, |r| !of_type(r, "tw_exit").is_empty());
    let enter = of_type(&recs, "tw_enter");
    assert_eq!(enter.len(), 1, "{recs:#?}");
    let e = enter[0];
    assert_eq!(
        (e.laddr.to_string(), e.lport),
        ("127.0.0.1".to_owned(), client_port)
    );
    assert_eq!(
        (e.raddr.to_string(), e.rport),
        ("127.0.0.1".to_owned(), 7005)
    );
    assert!(
        e.reuseaddr,
        "tw_reuse copied from the client's SO_REUSEADDR"
    );
    assert!(!e.reuseport);
    assert_eq!(e.pid, None, "a TIME_WAIT socket has no owner");
    assert_eq!(
        e.last_pid,
        Some(std::process::id()),
        "the last owner is kept"
    );
    let exit = of_type(&recs, "tw_exit");
    assert_eq!(exit.len(), 1, "{recs:#?}");
    assert_eq!(exit[0].sock, e.sock);
    assert_eq!(exit[0].reason, Some(ExitReason::Reused));
    let d = exit[0].duration_ns.expect("duration");
    assert!(
        d >= 1_000_000_000,
        "the socket waited the reuse delay: {d} ns"
    );
}

#[test]
fn an_orphaned_fin_wait2_timewait_socket_expires_on_tcp_fin_timeout() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, server_port, client) = in_new_netns(|netns| {
        // The side that closes first, and whose peer never closes, waits in
        // a FIN_WAIT2 timewait socket for tcp_fin_timeout seconds.
        set_sysctl("net/ipv4/tcp_fin_timeout", "1").expect("sysctl");
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7007")).expect("bind");
        listener.listen(4).expect("listen");
        let client = tcp();
        client.connect(&addr("127.0.0.1:7007")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        common::close_into_fin_wait2(server_side);
        // Keep the client open (never sending its FIN) until the timer ran.
        std::thread::sleep(Duration::from_millis(2500));
        (netns, 7007, client)
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| !of_type(r, "tw_exit").is_empty());
    drop(client);
    let enter = of_type(&recs, "tw_enter");
    assert_eq!(enter.len(), 1, "{recs:#?}");
    assert_eq!(enter[0].lport, server_port);
    assert_eq!(enter[0].new_state, Some(TcpState::FIN_WAIT2));
    let exit = of_type(&recs, "tw_exit");
    assert_eq!(exit.len(), 1, "{recs:#?}");
    assert_eq!(
        (exit[0].reason, exit[0].old_state),
        (Some(ExitReason::Expired), Some(TcpState::FIN_WAIT2))
    );
    let d = exit[0].duration_ns.expect("duration");
    assert!(
        (900_000_000..2_500_000_000).contains(&d),
        "about tcp_fin_timeout: {d} ns"
    );
}

#[test]
fn time_wait_sockets_are_killed_with_their_namespace() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let netns = in_new_netns(|netns| {
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7006")).expect("bind");
        listener.listen(4).expect("listen");
        for _ in 0..3 {
            let client = tcp();
            client.connect(&addr("127.0.0.1:7006")).expect("connect");
            let (server_side, _) = listener.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server_side);
        }
        netns
    })
    .expect("netns");
    // The thread is gone: the namespace is torn down and its timewait
    // sockets purged (inet_twsk_purge()).
    let recs = collect(&mut p, netns, Duration::from_secs(20), |r| {
        of_type(r, "tw_exit").len() >= 3
    });
    let enters = of_type(&recs, "tw_enter").len();
    let (lost, kinds) = common::kernel_losses(&p);
    assert!(
        enters == 3 || (enters < 3 && lost > 0),
        "{enters} of 3 tw_enter, kernel-side losses: [{kinds}]: {recs:#?}"
    );
    let exits = of_type(&recs, "tw_exit");
    assert_eq!(exits.len(), 3, "{recs:#?}");
    assert!(
        exits.iter().all(|x| x.reason == Some(ExitReason::Killed)),
        "{exits:#?}"
    );
}

#[test]
fn tcp_reuseport_deliveries_match_accepts_exactly() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    if common::reuseport_hook_missing(&p) {
        return;
    }
    const CONNECTIONS: usize = 240;
    let (netns, accepted) = in_new_netns(|netns| {
        let listeners: Vec<_> = (0..3)
            .map(|_| {
                let s = tcp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&addr("127.0.0.1:7007")).expect("bind");
                s.listen(1024).expect("listen");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            let c = tcp();
            c.connect(&addr("127.0.0.1:7007")).expect("connect");
            clients.push(c);
        }
        let mut accepted: HashMap<u64, usize> = HashMap::new();
        let mut total = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while total < CONNECTIONS && std::time::Instant::now() < deadline {
            for l in &listeners {
                while let Ok((_conn, _)) = l.accept() {
                    *accepted.entry(inode(l)).or_default() += 1;
                    total += 1;
                }
            }
        }
        (netns, accepted)
    })
    .expect("netns");
    assert_eq!(accepted.values().sum::<usize>(), CONNECTIONS);
    let recs = collect(&mut p, netns, WAIT, |r| {
        of_type(r, "reuseport").len() >= CONNECTIONS
    });
    let mut delivered: HashMap<u64, usize> = HashMap::new();
    for r in of_type(&recs, "reuseport") {
        assert_eq!((r.proto, r.lport), (Some(Proto::Tcp), 7007));
        assert_ne!(r.rport, 0, "the connection's client port is reported");
        *delivered.entry(r.ino.expect("listener inode")).or_default() += 1;
    }
    assert_eq!(
        delivered, accepted,
        "per-listener deliveries equal per-listener accepts"
    );
}

#[test]
fn udp_reuseport_deliveries_match_receives_exactly() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    if common::reuseport_hook_missing(&p) {
        return;
    }
    const SENDERS: usize = 60;
    const PER_SENDER: usize = 5;
    let (netns, received, sources) = in_new_netns(|netns| {
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let s = udp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&addr("127.0.0.1:7008")).expect("bind");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let mut sources = Vec::new();
        let mut received: HashMap<u64, usize> = HashMap::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        for _ in 0..SENDERS {
            let s = udp();
            s.bind(&addr("127.0.0.1:0")).expect("bind");
            sources.push(
                s.local_addr()
                    .expect("addr")
                    .as_socket()
                    .expect("inet")
                    .port(),
            );
            for _ in 0..PER_SENDER {
                s.send_to(b"ping", &addr("127.0.0.1:7008")).expect("send");
            }
            for r in &receivers {
                while r.recv(&mut buf).is_ok() {
                    *received.entry(inode(r)).or_default() += 1;
                }
            }
        }
        (netns, received, sources)
    })
    .expect("netns");
    assert_eq!(
        received.values().sum::<usize>(),
        SENDERS * PER_SENDER,
        "nothing lost on lo"
    );
    let recs = collect(&mut p, netns, WAIT, |r| {
        of_type(r, "reuseport").len() >= SENDERS * PER_SENDER
    });
    let mut delivered: HashMap<u64, usize> = HashMap::new();
    for r in of_type(&recs, "reuseport") {
        assert_eq!((r.proto, r.lport), (Some(Proto::Udp), 7008));
        assert!(
            sources.contains(&r.rport),
            "source port {} is one of the senders",
            r.rport
        );
        *delivered.entry(r.ino.expect("receiver inode")).or_default() += 1;
    }
    assert_eq!(
        delivered, received,
        "per-socket deliveries equal per-socket receives"
    );
}

#[test]
fn ephemeral_exhaustion_reports_eaddrnotavail_with_destination() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let (netns, results) = in_new_netns(|netns| {
        set_sysctl("net/ipv4/ip_local_port_range", "40000 40001").expect("sysctl");
        set_sysctl("net/ipv4/tcp_tw_reuse", "0").expect("sysctl");
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7009")).expect("bind");
        listener.listen(16).expect("listen");
        let mut keep = Vec::new();
        let mut results = Vec::new();
        for _ in 0..3 {
            let c = tcp();
            results.push(errno_of(c.connect(&addr("127.0.0.1:7009"))));
            keep.push(c);
        }
        (netns, results)
    })
    .expect("netns");
    assert_eq!(results, [None, None, Some(libc::EADDRNOTAVAIL)]);
    let recs = collect(&mut p, netns, WAIT, |r| r.iter().any(|r| r.is_failure()));
    let connects = of_type(&recs, "connect");
    assert_eq!(connects.len(), 3, "{recs:#?}");
    let ports: Vec<_> = connects[..2].iter().map(|c| c.lport).collect();
    assert!(
        ports.iter().all(|p| (40000..=40001).contains(p)),
        "{ports:?}"
    );
    let failed = connects[2];
    assert_eq!(failed.errno, Some(Errno::EADDRNOTAVAIL));
    assert_eq!(failed.phase, Some(Phase::Connect));
    assert_eq!(
        (failed.raddr.to_string(), failed.rport),
        ("127.0.0.1".to_owned(), 7009)
    );
}

#[test]
fn netns_filter_keeps_only_the_chosen_namespace() {
    // Two namespaces that bind the same port; the probes are loaded with a
    // kernel-side filter for the first one only.
    let (tx_a, rx_a) = mpsc::channel();
    let (go_a, wait_a) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        tx_a.send(inspector::kernel::netns::current_netns().expect("ino"))
            .expect("send");
        wait_a.recv().expect("go");
        let s = tcp();
        s.bind(&addr("127.0.0.1:7010")).expect("bind");
    });
    let ns_a = rx_a.recv().expect("netns a");
    let filter = Filter {
        netns: Some(ns_a),
        ..Filter::default()
    };
    let Some(mut p) = pipeline(filter) else {
        drop(go_a);
        let _ = a.join();
        return;
    };
    let ns_b = in_new_netns(|netns| {
        let s = tcp();
        s.bind(&addr("127.0.0.1:7010")).expect("bind");
        netns
    })
    .expect("netns b");
    go_a.send(()).expect("go");
    a.join().expect("thread a");
    let mut batch = Vec::new();
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline
        && !all
            .iter()
            .any(|r: &inspector::model::record::Record| r.lport == 7010)
    {
        p.poll(&mut batch, false);
        all.append(&mut batch);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        all.iter().any(|r| r.netns == ns_a && r.lport == 7010),
        "namespace A is traced"
    );
    assert!(
        all.iter().all(|r| r.netns == ns_a),
        "nothing from elsewhere, B is {ns_b}"
    );
}

/// A thread in a fresh namespace that runs `work` once told to, so the
/// probes can be loaded with a kernel filter for that namespace first.
fn namespace_worker<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> (u32, mpsc::Sender<()>, std::thread::JoinHandle<T>) {
    let (tx, rx) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        tx.send(inspector::kernel::netns::current_netns().expect("ino"))
            .expect("send");
        wait.recv().expect("go");
        work()
    });
    (rx.recv().expect("netns"), go, handle)
}

/// Drains until the kernel's emitted count is all read (the namespace is
/// quiet by then), or the timeout.
fn drain_all(
    p: &mut inspector::pipeline::Pipeline,
    out: &mut Vec<inspector::model::record::Record>,
) -> inspector::kernel::probe::Counters {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // What is read here belongs to the caller's records too: the tail
        // of a workload may still be in the ring when it finishes.
        p.poll(out, true);
        let c = p.counters();
        if c.emitted == p.seen || std::time::Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_ring_counts_drops_and_the_stats_record_reports_them() {
    const BINDS: usize = 2000;
    // A 16 KiB ring holds about a hundred events: two thousand binds made
    // while nobody reads overflow it.
    let (netns, go, worker) = namespace_worker(|| {
        for _ in 0..BINDS {
            let s = udp();
            s.bind(&addr("127.0.0.1:0")).expect("bind");
        }
    });
    let filter = Filter {
        netns: Some(netns),
        ..Filter::default()
    };
    let opts = inspector::kernel::probe::LoadOptions {
        ring_bytes: Some(16 << 10),
        ..Default::default()
    };
    let Some(mut p) = pipeline_with(filter, opts) else {
        drop(go);
        let _ = worker.join();
        return;
    };
    go.send(()).expect("go");
    worker.join().expect("worker");
    let c = drain_all(&mut p, &mut Vec::new());
    assert!(c.dropped > 0, "the ring overflowed: {c:?}");
    assert!(c.emitted > 0, "{c:?}");
    assert_eq!(c.emitted, p.seen, "every committed event was read: {c:?}");
    assert_eq!(
        c.emitted + c.dropped,
        BINDS as u64,
        "one event per bind, committed or counted as dropped: {c:?}"
    );
    assert_eq!(c.read_errors, 0, "{c:?}");

    let stats = p.stats(0, true);
    let mut line = Vec::new();
    inspector::output::ndjson::write_stats(&stats, &mut line);
    let v: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
    assert_eq!(v["type"], "stats");
    assert_eq!(v["dropped"], c.dropped);
    assert_eq!(v["emitted"], c.emitted);
    assert_eq!(v["events_read"], p.seen);
    assert_eq!(v["kernel_errors"], 0);
}

#[test]
fn an_unreadable_bind_address_is_counted_and_not_an_autobind() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let before = p.counters();
    let (netns, errno, ino) = in_new_netns(|netns| {
        use std::os::fd::AsRawFd as _;
        let s = tcp();
        // SAFETY: an invalid user pointer is the point: the kernel checks
        // it (`move_addr_to_kernel`) and answers EFAULT; nothing here
        // dereferences it.
        let rc = unsafe {
            libc::bind(
                s.as_raw_fd(),
                std::ptr::without_provenance::<libc::sockaddr>(1),
                16,
            )
        };
        let errno = (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error());
        (netns, errno.flatten(), inode(&s))
    })
    .expect("netns");
    assert_eq!(errno, Some(libc::EFAULT), "the kernel refuses the address");
    let recs = collect(&mut p, netns, Duration::from_secs(1), |r| {
        !of_type(r, "bind").is_empty()
    });
    let binds = of_type(&recs, "bind");
    let after = p.counters();
    let unreadable = |c: &inspector::kernel::probe::Counters| {
        c.by_kind[inspector_common::counter::READ_USER_ADDR as usize]
    };
    if p.probes.mode == inspector::kernel::probe::Mode::Fentry {
        // `__sys_bind` fails before `inet_bind` runs: no decision to see.
        assert!(binds.is_empty(), "{binds:#?}");
        return;
    }
    // The syscall boundary sees the call and its EFAULT, but not what was
    // asked for.
    assert_eq!(binds.len(), 1, "{recs:#?}");
    let b = binds[0];
    assert_eq!(b.errno, Some(inspector::kernel::Errno::EFAULT));
    assert_eq!(
        b.phase,
        Some(inspector::kernel::Phase::Bind),
        "not an autobind: {b:?}"
    );
    assert_eq!(b.req_addr, None);
    assert_eq!(b.req_port, None);
    assert_eq!(b.ino, Some(ino));
    let mut json = Vec::new();
    inspector::output::ndjson::write(b, &mut json);
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert!(v["req_addr"].is_null() && v["req_port"].is_null(), "{v}");
    assert!(
        unreadable(&after) > unreadable(&before),
        "counted: {before:?} -> {after:?}"
    );
}

#[test]
fn binds_under_a_storm_of_softirq_state_changes_stay_consistent() {
    // Pinned to one CPU, connections over loopback change TCP states in
    // softirq (the SYN/ACK and FIN processing) while another thread binds
    // in process context: the programs of the two nest on that CPU. Every
    // bind record must still carry its own socket's port, and every event
    // must be read or counted.
    const CONNECTIONS: usize = 300;
    const BINDS: usize = 600;
    fn pin() {
        // SAFETY: a zeroed cpu_set_t is valid; CPU 0 exists.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let (netns, go, worker) = namespace_worker(|| {
        pin();
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7020")).expect("bind");
        listener.listen(1024).expect("listen");
        let storm = std::thread::spawn(move || {
            pin();
            for _ in 0..CONNECTIONS {
                let c = tcp();
                c.connect(&addr("127.0.0.1:7020")).expect("connect");
                let (a, _) = listener.accept().expect("accept");
                drop(c);
                drop(a);
            }
        });
        let mut ports = HashMap::new();
        for _ in 0..BINDS {
            let s = udp();
            s.bind(&addr("127.0.0.1:0")).expect("bind");
            let port = s
                .local_addr()
                .expect("getsockname")
                .as_socket()
                .expect("inet")
                .port();
            ports.insert(inode(&s), port);
        }
        storm.join().expect("storm");
        ports
    });
    let filter = Filter {
        netns: Some(netns),
        ..Filter::default()
    };
    let Some(mut p) = pipeline(filter) else {
        drop(go);
        let _ = worker.join();
        return;
    };
    go.send(()).expect("go");
    let mut all = Vec::new();
    let mut batch = Vec::new();
    while !worker.is_finished() {
        p.poll(&mut batch, false);
        all.append(&mut batch);
        std::thread::sleep(Duration::from_millis(5));
    }
    let ports = worker.join().expect("worker");
    let c = drain_all(&mut p, &mut all);
    p.poll(&mut batch, true);
    all.append(&mut batch);
    assert_eq!(c.emitted, p.seen, "every committed event was read: {c:?}");
    assert_eq!(c.dropped, 0, "a 4 MiB ring read every 5 ms keeps up: {c:?}");
    let skipped = c.by_kind[inspector_common::counter::SKIPPED as usize];
    assert_eq!(
        c.read_errors - skipped,
        0,
        "no read failed, no scratch slot ran out: {c:?}"
    );
    let udp_binds: Vec<_> = all
        .iter()
        .filter(|r| r.kind.as_str() == "bind" && r.proto == Some(inspector::kernel::Proto::Udp))
        .collect();
    // The kernel may skip a classic tracepoint program (the per-syscall
    // hooks) while a BPF map syscall holds the CPU: every such loss is
    // counted, and nothing else is lost.
    eprintln!(
        "binds: {} records of {BINDS}; programs skipped by the kernel: {skipped}",
        udp_binds.len()
    );
    assert!(
        udp_binds.len() <= BINDS && udp_binds.len() as u64 + skipped >= BINDS as u64,
        "one record per bind, or a counted skip: {} records, {skipped} skipped",
        udp_binds.len()
    );
    for b in udp_binds {
        assert_eq!(b.phase, Some(inspector::kernel::Phase::Autobind));
        let ino = b.ino.expect("ino");
        assert_eq!(
            Some(&b.lport),
            ports.get(&ino),
            "the record's port is what getsockname() said: {b:?}"
        );
        assert_eq!(b.laddr.to_string(), "127.0.0.1");
    }
    let states = of_type(&all, "state").len();
    assert!(
        states >= CONNECTIONS * 4,
        "the storm happened: {states} state changes"
    );
}

#[test]
fn unaccepted_connections_keep_the_listener_owner() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    const PORT: u16 = 7011;
    let (netns, pid, listener) = in_new_netns(|netns| {
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7011")).expect("bind");
        listener.listen(16).expect("listen");
        // Three handshakes the kernel completes on its own; nobody
        // accepts. The clients then close, so each queued child moves on
        // (ESTABLISHED -> CLOSE_WAIT) with its listener still open.
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let c = tcp();
                c.connect(&addr("127.0.0.1:7011")).expect("connect");
                c
            })
            .collect();
        drop(clients);
        (netns, std::process::id(), listener)
    })
    .expect("netns");
    let child = |r: &inspector::model::record::Record| {
        r.kind.as_str() == "state" && r.lport == PORT && r.rport != 0
    };
    let recs = collect(&mut p, netns, WAIT, |r| {
        r.iter()
            .filter(|r| child(r) && r.new_state == Some(TcpState::CLOSE_WAIT))
            .count()
            >= 3
    });
    drop(listener);
    let children: Vec<_> = recs.iter().filter(|r| child(r)).collect();
    let tuples: std::collections::HashSet<_> = children.iter().map(|r| r.rport).collect();
    assert_eq!(tuples.len(), 3, "three connections: {children:#?}");
    // Every child reaches ESTABLISHED and CLOSE_WAIT; whether its first
    // move (LISTEN -> SYN_RECV at the clone) carries its ports depends on
    // the kernel.
    for rport in &tuples {
        for state in [TcpState::ESTABLISHED, TcpState::CLOSE_WAIT] {
            assert!(
                children
                    .iter()
                    .any(|r| r.rport == *rport && r.new_state == Some(state)),
                "{rport} -> {state}: {children:#?}"
            );
        }
    }
    for r in children {
        assert_eq!(r.pid, Some(pid), "attributed to the listener: {r:#?}");
    }
}

/// `trace` without `--states`: the kernel reports only the state changes
/// into LISTEN, SYN_RECV and CLOSE, a connection's end in TIME_WAIT only
/// by its tw_enter, and every decision stays: each connect, accept and
/// TIME_WAIT entry, whose last owner is still known.
#[test]
fn lifecycle_states_keep_every_decision_and_the_timewait_owner() {
    let filter = Filter {
        lifecycle_states: true,
        ..Filter::default()
    };
    let Some(mut p) = pipeline(filter) else {
        return;
    };
    const PORT: u16 = 7012;
    const N: usize = 6;
    let (netns, pid) = in_new_netns(|netns| {
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7012")).expect("bind");
        listener.listen(16).expect("listen");
        for i in 0..N {
            let c = tcp();
            c.connect(&addr("127.0.0.1:7012")).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            // Half the connections close from the server (its side enters
            // TIME_WAIT), half from the client.
            let (first, second) = if i % 2 == 0 { (s, c) } else { (c, s) };
            drop(first);
            std::thread::sleep(Duration::from_millis(20));
            drop(second);
        }
        (netns, std::process::id())
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| of_type(r, "tw_enter").len() >= N);
    let on_port = |r: &inspector::model::record::Record| r.lport == PORT || r.rport == PORT;
    for r in recs.iter().filter(|r| r.kind.as_str() == "state") {
        assert!(
            matches!(
                r.new_state,
                Some(TcpState::LISTEN | TcpState::SYN_RECV | TcpState::CLOSE)
            ),
            "only lifecycle changes: {r:#?}"
        );
    }
    assert_eq!(
        of_type(&recs, "connect")
            .iter()
            .filter(|r| on_port(r))
            .count(),
        N
    );
    assert_eq!(
        of_type(&recs, "accept")
            .iter()
            .filter(|r| on_port(r))
            .count(),
        N
    );
    // Each connection ends twice: one side in TIME_WAIT, reported by its
    // tw_enter alone, and the other side's close. Which side is which
    // alternates, so both a server's and a client's handover are seen.
    let closes: Vec<_> = recs
        .iter()
        .filter(|r| r.kind.as_str() == "state" && r.new_state == Some(TcpState::CLOSE))
        .filter(|r| on_port(r) && r.old_state != Some(TcpState::LISTEN))
        .collect();
    assert_eq!(closes.len(), N, "one close per connection: {closes:#?}");
    let tw = of_type(&recs, "tw_enter");
    // Every entry is reported, or its loss counted: on a loaded machine the
    // kernel may skip a program run (`skipped_by_kernel`), never silently.
    let (lost, kinds) = common::kernel_losses(&p);
    assert!(
        tw.len() == N || (tw.len() < N && lost > 0),
        "{} of {N} tw_enter, kernel-side losses: [{kinds}]: {recs:#?}",
        tw.len()
    );
    if tw.len() == N {
        assert!(tw.iter().any(|e| e.lport == PORT) && tw.iter().any(|e| e.rport == PORT));
    } else {
        eprintln!(
            "{} of {N} tw_enter, the rest lost and counted: {kinds}",
            tw.len()
        );
    }
    for e in &tw {
        assert_eq!(e.last_pid, Some(pid), "last owner kept: {e:#?}");
        assert!(e.cookie.is_some(), "a connection's cookie: {e:#?}");
        assert!(
            !closes.iter().any(|c| c.cookie == e.cookie),
            "the close of a socket that went to TIME_WAIT is left out: {e:#?}"
        );
    }
}

/// The probes as `trace` without `--connections` loads them.
fn decisions_only() -> Option<inspector::pipeline::Pipeline> {
    pipeline_with(
        Filter::default(),
        inspector::kernel::probe::LoadOptions {
            decisions_only: true,
            ..Default::default()
        },
    )
}

/// `trace` without `--connections`: the kernel reports no state change of
/// a connection, only a listener's own (into LISTEN, and LISTEN -> CLOSE;
/// not a child's LISTEN -> SYN_RECV), no successful connect or accept, and
/// still every failed connect and every TIME_WAIT entry, which names its
/// connection's last owner itself. User space then prints the decisions
/// (checked here too, through the filter).
#[test]
fn decisions_only_leave_connections_states_in_the_kernel() {
    let Some(mut p) = decisions_only() else {
        return;
    };
    const PORT: u16 = 7014;
    const N: usize = 6;
    let (netns, pid) = in_new_netns(|netns| {
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7014")).expect("bind");
        listener.listen(16).expect("listen");
        for _ in 0..N {
            let c = tcp();
            c.connect(&addr("127.0.0.1:7014")).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            // The server closes first: its side enters TIME_WAIT.
            drop(s);
            std::thread::sleep(Duration::from_millis(20));
            drop(c);
        }
        // A refused connect: a failure, always reported.
        let c = tcp();
        assert!(c.connect(&addr("127.0.0.1:7015")).is_err());
        (netns, std::process::id())
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| {
        of_type(r, "tw_enter").len() >= N
            && of_type(r, "state")
                .iter()
                .any(|s| s.old_state == Some(TcpState::LISTEN))
    });
    let on_port = |r: &inspector::model::record::Record| r.lport == PORT || r.rport == PORT;
    // The tracker's own state records (a timewait socket's substate
    // moving on) are not the kernel's: only full sockets' are checked.
    let tw_socks: Vec<u64> = of_type(&recs, "tw_enter").iter().map(|r| r.sock).collect();
    for r in of_type(&recs, "state") {
        if tw_socks.contains(&r.sock) {
            continue;
        }
        assert!(
            r.new_state == Some(TcpState::LISTEN)
                || (r.old_state == Some(TcpState::LISTEN) && r.new_state == Some(TcpState::CLOSE)),
            "only a listener's own changes: {r:#?}"
        );
    }
    let count = |t: &str| of_type(&recs, t).iter().filter(|r| on_port(r)).count();
    assert_eq!(count("connect"), 0, "no successful connect: {recs:#?}");
    assert_eq!(count("accept"), 0, "no successful accept: {recs:#?}");
    let tw = of_type(&recs, "tw_enter");
    let (lost, kinds) = common::kernel_losses(&p);
    assert!(
        tw.len() == N || (tw.len() < N && lost > 0),
        "{} of {N} tw_enter, kernel-side losses: [{kinds}]",
        tw.len()
    );
    for e in &tw {
        assert_eq!(e.last_pid, Some(pid), "last owner kept: {e:#?}");
    }
    // What `trace` prints of them: no successful connect or accept, the
    // failed connect, the binds, the listener's changes, TIME_WAIT.
    let printed = Filter {
        decisions_only: true,
        lifecycle_states: true,
        ..Filter::default()
    };
    let shown: Vec<_> = recs.iter().filter(|r| printed.matches(r)).collect();
    assert!(
        !shown
            .iter()
            .any(|r| matches!(r.kind.as_str(), "connect" | "accept") && r.errno.is_none()),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|r| r.kind.as_str() == "connect" && r.errno == Some(Errno::ECONNREFUSED))
    );
    assert_eq!(
        shown
            .iter()
            .filter(|r| r.kind.as_str() == "tw_enter")
            .count(),
        tw.len()
    );
}

/// `trace` without `--connections`, which has no event of a successful
/// connect() or accept(): a timewait socket taken over by a new connection
/// on its 4-tuple still ends `reused`, whether the new connection's
/// connect() took it over (`tcp_twsk_unique()`, client side) or its SYN
/// did (`TCP_TW_SYN`, server side); and a new timewait socket on the same
/// 4-tuple is reported as an entry of its own.
#[test]
fn decisions_only_report_timewait_takeovers_as_reused() {
    let Some(mut p) = decisions_only() else {
        return;
    };
    const CONNECT_PORT: u16 = 7016;
    const SYN_PORT: u16 = 7017;
    let (netns, pid, ports) = in_new_netns(|netns| {
        set_sysctl("net/ipv4/tcp_tw_reuse", "1").expect("sysctl");
        set_sysctl("net/ipv4/tcp_timestamps", "1").expect("sysctl");
        // The same client port twice to each server; the second time the
        // new connection finds the first one's timewait socket.
        let mut ports = Vec::new();
        for (server, server_first) in [(CONNECT_PORT, false), (SYN_PORT, true)] {
            let listener = tcp();
            listener
                .bind(&addr(&format!("127.0.0.1:{server}")))
                .expect("bind");
            listener.listen(4).expect("listen");
            let mut port = 0;
            for round in 0..2 {
                let c = tcp();
                c.set_reuse_address(true).expect("SO_REUSEADDR");
                c.bind(&addr(&format!("127.0.0.1:{port}"))).expect("bind");
                port = c
                    .local_addr()
                    .expect("addr")
                    .as_socket()
                    .expect("inet")
                    .port();
                let to = addr(&format!("127.0.0.1:{server}"));
                if server_first && round == 1 {
                    // The SYN from sendto(MSG_FASTOPEN), not from inside a
                    // connect(), as a remote peer's SYN arrives: only the
                    // takeover itself tells the timewait socket was reused.
                    c.send_to_with_flags(b"x", &to, libc::MSG_FASTOPEN)
                        .expect("sendto(MSG_FASTOPEN) over the timewait socket");
                } else {
                    c.connect(&to).expect("connect over the timewait socket");
                }
                let (s, _) = listener.accept().expect("accept");
                if server_first && round == 1 {
                    // Its byte read, so that the close sends a FIN, not an
                    // RST.
                    let mut byte = [std::mem::MaybeUninit::uninit(); 1];
                    s.recv(&mut byte).expect("the Fast Open byte");
                }
                if server_first && round == 1 {
                    // Reset, leaving no timewait socket: the reuse must be
                    // known from the takeover itself, not from a new
                    // timewait entry on the same 4-tuple.
                    s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
                    c.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
                }
                let (first, second) = if server_first { (s, c) } else { (c, s) };
                drop(first); // its side goes to TIME_WAIT
                std::thread::sleep(Duration::from_millis(50));
                drop(second);
                if round == 0 {
                    // tcp_tw_reuse lets a connect() take the client's
                    // timewait socket over once it is a second old.
                    std::thread::sleep(Duration::from_millis(1100));
                }
            }
            ports.push(port);
        }
        (netns, std::process::id(), ports)
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| {
        of_type(r, "tw_enter").len() >= 3 && of_type(r, "tw_exit").len() >= 2
    });
    for ((server, entries), port) in [(CONNECT_PORT, 2), (SYN_PORT, 1)].into_iter().zip(ports) {
        let on = |r: &&inspector::model::record::Record| {
            (r.lport, r.rport) == (server, port) || (r.lport, r.rport) == (port, server)
        };
        let enter: Vec<_> = of_type(&recs, "tw_enter").into_iter().filter(on).collect();
        assert_eq!(enter.len(), entries, "entries on port {server}: {recs:#?}");
        for e in &enter {
            assert_eq!(e.last_pid, Some(pid), "named by the kernel: {e:#?}");
        }
        // The first one's exit comes before the second's entry; the
        // namespace's end kills the second one too.
        let exit: Vec<_> = of_type(&recs, "tw_exit").into_iter().filter(on).collect();
        assert!(
            !exit.is_empty(),
            "the first one ended on port {server}: {recs:#?}"
        );
        assert_eq!(exit[0].sock, enter[0].sock);
        if let Some(second) = enter.get(1) {
            assert!(exit[0].ts_ns < second.ts_ns, "{recs:#?}");
        }
        assert_eq!(
            exit[0].reason,
            Some(ExitReason::Reused),
            "taken over on port {server}: {recs:#?}"
        );
    }
}

/// The fallback where the per-syscall tracepoints are missing (no tracefs,
/// no CONFIG_FTRACE_SYSCALLS): `raw_syscalls:sys_enter`/`sys_exit` on
/// every system call report the same decisions.
#[test]
fn the_raw_syscall_fallback_reports_binds_and_connects() {
    if common::test_mode() == inspector::kernel::probe::Mode::Fentry {
        eprintln!("SKIPPED: fentry mode has no syscall hooks");
        return;
    }
    let Some(mut p) = pipeline_with(
        Filter::default(),
        inspector::kernel::probe::LoadOptions {
            mode: inspector::kernel::probe::Mode::Tracepoint,
            raw_syscalls: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    assert!(
        p.probes.attached.iter().any(|h| h == "sys_exit"),
        "{:?}",
        p.probes.attached
    );
    let (netns, refused) = in_new_netns(|netns| {
        let s = tcp();
        s.bind(&addr("127.0.0.1:7013")).expect("bind");
        s.listen(4).expect("listen");
        let c = tcp();
        c.connect(&addr("127.0.0.1:7013")).expect("connect");
        let (accepted, _) = s.accept().expect("accept");
        let second = tcp();
        let refused = errno_of(second.bind(&addr("127.0.0.1:7013")));
        drop((accepted, c));
        (netns, refused)
    })
    .expect("netns");
    let recs = collect(&mut p, netns, WAIT, |r| {
        of_type(r, "bind").len() >= 3 && !of_type(r, "accept").is_empty()
    });
    let binds = of_type(&recs, "bind");
    let phases: Vec<_> = binds.iter().map(|b| (b.phase, b.errno)).collect();
    assert_eq!(
        phases,
        vec![
            (Some(Phase::Bind), None),
            (Some(Phase::Listen), None),
            (Some(Phase::Bind), refused.map(Errno::from)),
        ],
        "{recs:#?}"
    );
    assert_eq!(of_type(&recs, "connect").len(), 1, "{recs:#?}");
    assert_eq!(of_type(&recs, "accept").len(), 1, "{recs:#?}");
}

/// Timewait sockets of the calling thread's namespace by `tw_substate`
/// (`/proc/thread-self/net/tcp`: a timewait row's timer column `tr` is 3).
fn timewait_rows() -> HashMap<u8, u64> {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("/proc/net/tcp");
    let mut by_state = HashMap::new();
    for row in table.lines().skip(1) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        if cols.get(5).is_some_and(|t| t.starts_with("03:")) {
            let st = u8::from_str_radix(cols[3], 16).expect("st");
            *by_state.entry(st).or_default() += 1;
        }
    }
    by_state
}

#[test]
fn time_wait_counted_in_the_kernel_matches_the_namespace_s_own_counters() {
    // The namespace comes first: the count is of it alone (`--netns` is
    // fixed when the programs load).
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<bool>();
    let (made_tx, made_rx) = mpsc::channel();
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        let netns = inode(&std::fs::File::open("/proc/thread-self/ns/net").expect("ns"));
        ready_tx.send(netns as u32).expect("send");
        if !go_rx.recv().unwrap_or(false) {
            return;
        }
        set_sysctl("net/ipv4/tcp_fin_timeout", "1").expect("sysctl");
        let listener = tcp();
        listener.bind(&addr("127.0.0.1:7014")).expect("bind");
        listener.listen(64).expect("listen");
        // Entries: the server closes first, 20 times.
        for _ in 0..20 {
            let client = tcp();
            client.connect(&addr("127.0.0.1:7014")).expect("connect");
            let (server_side, _) = listener.accept().expect("accept");
            drop(server_side);
            std::thread::sleep(Duration::from_millis(5));
            drop(client);
        }
        // Reuse: three clients close first, then connect again from the
        // same ports once their timewait sockets are a second old.
        let mut ports = vec![];
        for _ in 0..3 {
            let client = tcp();
            client.set_reuse_address(true).expect("SO_REUSEADDR");
            client.bind(&addr("127.0.0.1:0")).expect("bind");
            let port = client
                .local_addr()
                .expect("addr")
                .as_socket()
                .expect("inet");
            client.connect(&addr("127.0.0.1:7014")).expect("connect");
            let (server_side, _) = listener.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server_side);
            ports.push(port);
        }
        std::thread::sleep(Duration::from_millis(1100));
        let again: Vec<_> = ports
            .iter()
            .map(|port| {
                let c = tcp();
                c.set_reuse_address(true).expect("SO_REUSEADDR");
                c.bind(&(*port).into()).expect("rebind");
                c.connect(&addr("127.0.0.1:7014")).expect("reuse");
                c
            })
            .collect();
        // Expiry: an orphaned FIN_WAIT2 waits tcp_fin_timeout (1 s).
        let client = tcp();
        client.connect(&addr("127.0.0.1:7014")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        common::close_into_fin_wait2(server_side);
        let start = std::time::Instant::now();
        while timewait_rows().contains_key(&TcpState::FIN_WAIT2.raw()) {
            assert!(start.elapsed() < Duration::from_secs(10), "no expiry");
            std::thread::sleep(Duration::from_millis(50));
        }
        let made = (
            common::tcp_ext("TW") + common::tcp_ext("TWKilled"),
            common::tcp_ext("TWRecycled"),
            timewait_rows().values().sum::<u64>(),
        );
        made_tx.send(made).expect("send");
        // Closing the sockets makes entries and exits of its own (a
        // client closing first enters FIN_WAIT2, then the listener's RST
        // kills it): they stay open until the kernel's count is read.
        let _ = read_rx.recv_timeout(Duration::from_secs(60));
        drop((again, client, listener));
    });
    let netns = ready_rx.recv().expect("namespace");
    let opts = inspector::kernel::probe::LoadOptions {
        aggregate: true,
        netns: Some(netns),
        ..Default::default()
    };
    let p = pipeline_with(Filter::default(), opts);
    let _ = go_tx.send(p.is_some());
    let Some(p) = p else {
        let _ = worker.join();
        return;
    };
    let (entered, recycled, left) = made_rx.recv().expect("the namespace's counts");
    let t = p.probes.timewait_counts().expect("counted in the kernel");
    let _ = read_tx.send(());
    worker.join().expect("worker");
    assert_eq!(
        t.entered, entered,
        "entries as the namespace counted them: {t:?}"
    );
    assert_eq!(
        t.reused, recycled,
        "reuses as the namespace counted them: {t:?}"
    );
    assert!(
        recycled >= 1 && t.expired >= 1,
        "{t:?}, {recycled} recycled"
    );
    assert_eq!(
        i128::from(t.entered) - i128::from(t.reused + t.expired + t.killed),
        i128::from(left),
        "every entry still waiting or ended once: {t:?}"
    );
}
