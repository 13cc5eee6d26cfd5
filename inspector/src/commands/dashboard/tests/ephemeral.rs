//! Pane 5 at start (connections found in the kernel's table), its order
//! by pressure, and what the detail of a failed connect() says.

use std::net::Ipv4Addr;

use crossterm::event::KeyCode;
use inspector_common::{AF_INET, IPPROTO_TCP, SockRecord, sock_flag};

use super::{NS, SEC, app_with, enter, ephemeral_fixture, key, rows, screen};
use crate::{
    commands::dashboard::{
        app::{App, DetailTarget, Input, Pane},
        kernel::seed_of,
        model::HolderState,
    },
    kernel::{
        TcpState,
        sockets::{KernelSocket, SocketFile},
    },
    model::ephemeral::PortRange,
};

/// The kernel's tick rate in these fixtures.
const HZ: u32 = 250;

/// A TCP socket of namespace [`NS`] as the iterators report it, from
/// 127.0.0.1:`lport` to 127.0.0.1:`rport`.
fn sock(cookie: u64, lport: u16, rport: u16, state: TcpState) -> KernelSocket {
    let mut r = SockRecord::zeroed();
    r.cookie = cookie;
    r.netns = NS;
    r.family = AF_INET;
    r.proto = IPPROTO_TCP;
    r.state = state.raw();
    r.lport = lport;
    r.rport = rport;
    r.laddr[..4].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    if rport != 0 {
        r.raddr[..4].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    }
    KernelSocket::from_record(&r).expect("a TCP socket")
}

/// A timewait socket with `left_s` seconds on its timer.
fn time_wait(cookie: u64, lport: u16, rport: u16, left_s: u64) -> KernelSocket {
    let mut r = SockRecord::zeroed();
    r.cookie = cookie;
    r.netns = NS;
    r.family = AF_INET;
    r.proto = IPPROTO_TCP;
    r.state = TcpState::TIME_WAIT.raw();
    r.tw_substate = TcpState::TIME_WAIT.raw();
    r.flags = sock_flag::TW_TIMER;
    r.jiffies = 1_000_000;
    r.tw_expires = r.jiffies + left_s * u64::from(HZ);
    r.lport = lport;
    r.rport = rport;
    r.laddr[..4].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    r.raddr[..4].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    KernelSocket::from_record(&r).expect("a timewait socket")
}

fn file(socket: KernelSocket, pid: u32, comm: &str) -> SocketFile {
    SocketFile {
        socket,
        pid,
        tid: pid,
        fd: 3,
        comm: comm.into(),
    }
}

/// A namespace whose 10-port range a client has used up toward a server
/// on 5000 (8 connections live, 2 closed into TIME_WAIT) before the
/// dashboard started, with 3 connections toward a second server, the
/// server's side of each accepted connection, and the server side's
/// TIME_WAIT of a test server gone since (on a port from the range too).
fn at_start() -> App {
    let mut socks = vec![
        sock(1, 5000, 0, TcpState::LISTEN),
        sock(2, 6000, 0, TcpState::LISTEN),
    ];
    let mut files = vec![
        file(socks[0], 4100, "server"),
        file(socks[1], 4101, "cache"),
    ];
    for i in 0..8u16 {
        let client = sock(100 + u64::from(i), 40000 + i, 5000, TcpState::ESTABLISHED);
        // The server's side: on the listening port, not a client's.
        let server = sock(200 + u64::from(i), 5000, 40000 + i, TcpState::ESTABLISHED);
        let (pid, comm) = if i < 6 {
            (4242, "loadgen")
        } else {
            (4243, "probe")
        };
        files.push(file(client, pid, comm));
        files.push(file(server, 4100, "server"));
        socks.extend([client, server]);
    }
    socks.push(time_wait(300, 40008, 5000, 20));
    socks.push(time_wait(301, 40009, 5000, 45));
    socks.push(time_wait(302, 43642, 36346, 30));
    for i in 0..3u16 {
        let client = sock(400 + u64::from(i), 40000 + i, 6000, TcpState::ESTABLISHED);
        files.push(file(client, 4300, "worker"));
        socks.push(client);
    }
    let mut app = app_with(Vec::new());
    app.update(Input::Clock(100 * SEC));
    app.update(Input::Seed(seed_of(&socks, &files, Some(HZ))));
    app.update(Input::PortRanges(vec![(
        NS,
        PortRange::parse("40000 40009", "").expect("range"),
    )]));
    app
}

#[test]
fn pane_5_starts_with_the_connections_found_at_start() {
    let mut app = at_start();
    let rows = app.ephemeral_rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.key.port, r.in_use, r.time_wait, r.pre, r.connects))
            .collect::<Vec<_>>(),
        vec![(5000, 10, 2, 10, 0), (6000, 3, 0, 3, 0)],
        "the servers' sides are no client's: {rows:?}"
    );
    let ports = app.port_rows();
    assert!(
        ports
            .iter()
            .any(|r| r.key.port == 43642 && r.time_wait == 1),
        "a server's TIME_WAIT is pane 2's only: {ports:?}"
    );
    // The listeners and the TIME_WAIT sockets are pane 2's, as before.
    let listener = ports.iter().find(|r| r.key.port == 5000).expect("5000");
    assert_eq!(listener.states.get(&HolderState::LISTEN), Some(&1));
    assert!(
        ports
            .iter()
            .any(|r| r.key.port == 40009 && r.time_wait == 1)
    );
    key(&mut app, KeyCode::Char('5'));
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("10/10"), "{s}");
        assert!(s.contains("pre 4242 loadgen"), "{s}");
        assert!(s.contains("10 found at start"), "{s}");
        insta::assert_snapshot!(format!("at_start_{w}x{h}"), s);
    }
    // Enter: the destination's ports, and when they free.
    enter(&mut app);
    assert!(matches!(
        app.detail.as_ref().map(|d| &d.target),
        Some(DetailTarget::Destination(k)) if k.port == 5000
    ));
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("in use: 10 of 10 ports (8 live, 2 TIME_WAIT)"),
        "{s}"
    );
    assert!(s.contains("TIME_WAIT: free in 20-45 s"), "{s}");
    assert!(
        s.contains("found at start: 10, held by 4242 loadgen x6, 4243 probe x2"),
        "{s}"
    );
    insta::assert_snapshot!("destination_detail_80x24", s);
}

#[test]
fn seeded_connections_leave_when_they_close() {
    let mut app = at_start();
    // One of them closes into TIME_WAIT, another is gone for good: the
    // records name them by cookie.
    let mut records = Vec::new();
    let mut tracker = crate::model::tracker::Tracker::new();
    let ev = crate::fixture::EventBuilder::time_wait(
        inspector_common::kind::TW_ARM,
        TcpState::TIME_WAIT,
    )
    .ports(40000, 5000)
    .netns(NS)
    .sock(0x9000)
    .cookie(100)
    .at(101 * SEC)
    .build();
    tracker.apply(&ev, &mut records);
    for (cookie, sock) in [(100, 0x9100), (101, 0x9101)] {
        let ev = crate::fixture::EventBuilder::state(TcpState::FIN_WAIT1, TcpState::CLOSE)
            .ports(40000, 5000)
            .netns(NS)
            .sock(sock)
            .cookie(cookie)
            .at(101 * SEC)
            .build();
        tracker.apply(&ev, &mut records);
    }
    app.update(Input::Records(records));
    let rows = app.ephemeral_rows();
    let r = rows.iter().find(|r| r.key.port == 5000).expect("5000");
    assert_eq!((r.in_use, r.time_wait, r.pre), (9, 3, 9), "{r:?}");
}

#[test]
fn destinations_are_ordered_by_pressure_not_address() {
    let mut app = at_start();
    // Another namespace, a far larger range: more ports in use, less
    // pressure.
    const WIDE: u32 = NS + 1;
    let mut socks = Vec::new();
    for i in 0..20u16 {
        let mut s = sock(500 + u64::from(i), 50000 + i, 80, TcpState::ESTABLISHED);
        // Toward another host: no listener of its own here.
        s.netns = WIDE;
        s.remote = "10.0.0.80:80".parse().expect("address");
        socks.push(s);
    }
    app.update(Input::Seed(seed_of(&socks, &[], Some(HZ))));
    app.update(Input::PortRanges(vec![(
        WIDE,
        PortRange::parse("32768 60999", "").expect("range"),
    )]));
    let order = |app: &App| -> Vec<(u32, u16)> {
        app.ephemeral_rows()
            .iter()
            .map(|r| (r.key.netns, r.key.port))
            .collect()
    };
    assert_eq!(order(&app), vec![(NS, 5000), (NS, 6000), (WIDE, 80)]);
    // At equal shares, failed connect() calls come first: 6000 gets three.
    let mut records = Vec::new();
    let mut tracker = crate::model::tracker::Tracker::new();
    for i in 0..7u16 {
        let ev = crate::fixture::EventBuilder::connect(6000)
            .lport(40003 + i)
            .netns(NS)
            .sock(0xa000 + u64::from(i))
            .owner(4300, "worker")
            .at(101 * SEC)
            .build();
        tracker.apply(&ev, &mut records);
    }
    for i in 0..3u64 {
        let ev = crate::fixture::EventBuilder::connect(6000)
            .errno(libc::EADDRNOTAVAIL)
            .lport(0)
            .rport(0)
            .requested(6000)
            .netns(NS)
            .sock(0xb000 + i)
            .owner(4300, "worker")
            .at(102 * SEC)
            .build();
        tracker.apply(&ev, &mut records);
    }
    app.update(Input::Records(records));
    assert_eq!(order(&app), vec![(NS, 6000), (NS, 5000), (WIDE, 80)]);
}

#[test]
fn a_failed_connect_shows_its_destinations_ports_not_a_listener() {
    let mut app = app_with(Vec::new());
    // The range is known before the failures, as live.
    app.update(Input::PortRanges(vec![(
        NS,
        PortRange::parse("40000 40004", "40004").expect("range"),
    )]));
    app.update(Input::Records(ephemeral_fixture()));
    app.update(Input::Clock(5 * SEC));
    // The newest failure is pinned first and selected.
    enter(&mut app);
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("Decision: tcp connect() 127.0.0.1:8018"), "{s}");
        assert!(s.contains("EADDRNOTAVAIL"), "{s}");
        assert!(
            s.contains("Local ports toward 127.0.0.1:8018 (netns 4026532999) when it failed"),
            "{s}"
        );
        assert!(
            s.contains("in use: 4 of 4 ports (3 live, 1 TIME_WAIT)"),
            "{s}"
        );
        assert!(!s.contains("Holders of"), "no listener's table: {s}");
        insta::assert_snapshot!(format!("failed_connect_{w}x{h}"), s);
    }
    let s = rows(&screen(&app, 160, 48)).join("\n");
    assert!(s.contains("TIME_WAIT: free in 57 s"), "{s}");
    assert!(
        s.contains("range: ip_local_port_range 40000-40004 less 1 reserved = 4 ports"),
        "{s}"
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.pane, Pane::Binds);
}
