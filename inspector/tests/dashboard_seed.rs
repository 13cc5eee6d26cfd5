//! The dashboard at start, against the real kernel: sockets that existed
//! before it (a listener, a UDP socket, a TIME_WAIT socket in a fresh
//! namespace) are in its model at once, marked pre-existing, and the
//! TIME_WAIT socket's time left matches `ss` within a second.

mod common;

use std::{
    io::Read as _,
    net::{TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::mpsc,
    time::Duration,
};

use inspector::{
    commands::dashboard::{
        app::{App, Header, Input},
        kernel,
        model::HolderState,
    },
    pipeline::monotonic_ns,
};

/// What the namespace thread made, and what `ss` said of it.
struct Made {
    netns: u32,
    path: PathBuf,
    listen_port: u16,
    udp_port: u16,
    /// Seconds left on the TIME_WAIT socket per `ss`, and when it ran.
    ss_left_s: f64,
    ss_at_ns: u64,
}

/// `timer:(timewait,59sec,0)` -> 59.0; `timer:(timewait,950ms,0)` -> 0.95.
fn ss_left(out: &str) -> Option<f64> {
    let t = out.split("timer:(timewait,").nth(1)?.split(',').next()?;
    if let Some(s) = t.strip_suffix("ms") {
        return s.parse::<f64>().ok().map(|ms| ms / 1e3);
    }
    if let Some(s) = t.strip_suffix("sec") {
        return s.parse().ok();
    }
    t.strip_suffix("min")
        .and_then(|m| m.parse::<f64>().ok())
        .map(|m| m * 60.0)
}

#[test]
fn sockets_from_before_the_start_are_seeded_with_their_time_left() {
    let Some(mut table) = common::socket_table() else {
        return;
    };
    let (made_tx, made_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("a namespace");
        let netns = inspector::kernel::netns::current_netns().expect("its inode");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let listen_port = listener.local_addr().expect("addr").port();
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let udp_port = udp.local_addr().expect("addr").port();
        // The server closes first: its side ends in TIME_WAIT.
        let mut client = TcpStream::connect(("127.0.0.1", listen_port)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        drop(server);
        let mut buf = [0u8; 1];
        let _ = client.read(&mut buf);
        drop(client);
        std::thread::sleep(Duration::from_millis(200));
        // `ss` forked from this thread runs in its namespace.
        let ss_at_ns = monotonic_ns();
        let out = Command::new("ss")
            .args(["-tano", "state", "time-wait"])
            .output()
            .expect("ss runs");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let ss_left_s = ss_left(&out).unwrap_or_else(|| panic!("no timewait timer in:\n{out}"));
        made_tx
            .send(Made {
                netns,
                path,
                listen_port,
                udp_port,
                ss_left_s,
                ss_at_ns,
            })
            .expect("send");
        // The namespace (and its sockets) live until the test is done.
        let _ = done_rx.recv();
        drop((listener, udp));
    });
    let made = made_rx.recv().expect("the namespace thread's sockets");
    let seeds = kernel::seed(&mut table, &made.path).expect("a snapshot of the namespace");
    let mut app = App::new(Header::default(), true);
    let now = monotonic_ns();
    app.update(Input::Clock(now));
    app.update(Input::Seed(seeds));
    let rows = app.port_rows();
    let row = |port: u16| {
        rows.iter()
            .find(|r| r.key.port == port && r.key.netns == made.netns)
            .unwrap_or_else(|| panic!("port {port} seeded: {rows:?}"))
    };
    let l = row(made.listen_port);
    assert!(l.pre, "{l:?}");
    assert_eq!(l.states.get(&HolderState::LISTEN), Some(&1), "{l:?}");
    assert_eq!(l.time_wait, 1, "the server side's TIME_WAIT: {l:?}");
    assert!(
        l.owners.iter().any(|(p, _)| *p == std::process::id()),
        "the owner from the descriptor walk: {l:?}"
    );
    let u = row(made.udp_port);
    assert!(
        u.pre && u.states.get(&HolderState::Bound) == Some(&1),
        "{u:?}"
    );
    // Time left as `ss` saw it when it ran.
    let ours = l.tw_left_max.expect("time left") as f64 / 1e9
        + now.saturating_sub(made.ss_at_ns) as f64 / 1e9;
    assert!(
        (ours - made.ss_left_s).abs() <= 1.0,
        "time left {ours:.2} s, ss {} s",
        made.ss_left_s
    );
    let _ = done_tx.send(());
    worker.join().expect("the namespace thread");
}
