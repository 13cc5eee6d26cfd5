//! Privileged integration test of the socket-table iterators: real sockets
//! in a fresh network namespace, read back from the kernel's tables and
//! compared with what the test set on them, with `/proc/self/fd` and with
//! `ss`.

mod common;

use std::{
    io::Read as _,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{addr, tcp, udp};
use inspector::{
    kernel::Proto,
    kernel::TcpState,
    kernel::netns::current_netns,
    kernel::netns::enter_new_netns,
    kernel::sockets::{Entry, KernelSocket, SnapshotFilter, SocketTable},
};

const WAIT: Duration = Duration::from_secs(5);
const TIME_WAIT: u8 = 6;
const FIN_WAIT2: u8 = 5;
const LISTEN: u8 = 10;
const CLOSE: u8 = 7;
const NOBODY: u32 = 65534;

/// The inode `/proc/self/fd/N` names for a socket (`socket:[N]`).
fn fd_inode(s: &impl AsRawFd) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).expect("readlink");
    let text = link.to_string_lossy().into_owned();
    text.strip_prefix("socket:[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a socket link: {text}"))
}

/// One socket the snapshot must contain.
#[derive(Debug, Clone)]
struct Want {
    what: &'static str,
    proto: Proto,
    local: SocketAddr,
    /// `None`: the unspecified address of the local family, port 0.
    remote: Option<SocketAddr>,
    state: u8,
    reuseaddr: bool,
    reuseport: bool,
    v6only: bool,
    /// `None` for timewait sockets.
    uid: Option<u32>,
    /// `None` for timewait sockets.
    ino: Option<u64>,
    tw_substate: Option<u8>,
}

impl Want {
    fn listener(what: &'static str, local: &str, ino: u64) -> Self {
        Self {
            what,
            proto: Proto::Tcp,
            local: local.parse().expect("addr"),
            remote: None,
            state: LISTEN,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            uid: Some(0),
            ino: Some(ino),
            tw_substate: None,
        }
    }

    fn remote(&self) -> SocketAddr {
        self.remote.unwrap_or_else(|| {
            let ip: std::net::IpAddr = if self.local.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(ip, 0)
        })
    }

    fn matches(&self, s: &KernelSocket) -> bool {
        s.proto == self.proto && s.local == self.local && s.remote == self.remote()
    }

    fn check(&self, s: &KernelSocket) {
        let w = self.what;
        assert_eq!(s.state, TcpState::from(self.state), "{w}: state of {s:?}");
        assert_eq!(s.reuseaddr, self.reuseaddr, "{w}: SO_REUSEADDR of {s:?}");
        assert_eq!(s.reuseport, self.reuseport, "{w}: SO_REUSEPORT of {s:?}");
        assert_eq!(s.v6only, self.v6only, "{w}: V6ONLY of {s:?}");
        assert_eq!(s.uid, self.uid, "{w}: uid of {s:?}");
        assert_eq!(s.ino, self.ino, "{w}: inode of {s:?}");
        assert_ne!(s.cookie, 0, "{w}: cookie of {s:?}");
        assert_eq!(s.bound_dev_if, None, "{w}: bound device of {s:?}");
        match (self.tw_substate, s.entry) {
            (
                Some(want),
                Entry::TimeWait {
                    substate,
                    expires_in_jiffies,
                },
            ) => {
                assert_eq!(substate, want, "{w}: tw_substate of {s:?}");
                let left = expires_in_jiffies.expect("timewait timer read");
                assert!(left > 0, "{w}: timer already expired: {s:?}");
            }
            (None, Entry::Full) => {}
            (want, got) => panic!("{w}: expected substate {want:?}, got entry {got:?}"),
        }
    }
}

/// What the namespace thread built, sent to the test.
struct Setup {
    netns: u32,
    path: PathBuf,
    wants: Vec<Want>,
    /// The client-first connection's client address (its TIME_WAIT side).
    client_first: SocketAddr,
    /// Port of a bound, not listening TCP socket.
    bound_only: u16,
}

/// Polls snapshots of `path` until `done` holds, or fails after [`WAIT`]
/// naming `what` it waited for.
fn until(
    t: &mut SocketTable,
    path: &Path,
    what: &str,
    done: impl Fn(&[KernelSocket]) -> bool,
) -> Vec<KernelSocket> {
    let start = Instant::now();
    loop {
        let snap = t
            .snapshot_in(path, &SnapshotFilter::default())
            .expect("snapshot");
        if done(&snap) {
            return snap;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}; last snapshot: {snap:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_ss(path: &Path, args: &str) -> Option<usize> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ss", args])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("ss {args}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("ss {args}:\n{text}");
    Some(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// Creates the namespace's sockets. Runs on its own thread, which has
/// entered a fresh namespace, and keeps them open until `done` fires.
fn build(
    tx: mpsc::Sender<Setup>,
    close_server: mpsc::Receiver<()>,
    closed: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
) {
    enter_new_netns().expect("netns");
    let netns = current_netns().expect("netns inode");
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let path = PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
    let mut wants = Vec::new();
    let mut keep = Vec::new();

    // Listener with SO_REUSEADDR; its accepted socket closes first below.
    let l1 = tcp();
    l1.set_reuse_address(true).expect("SO_REUSEADDR");
    l1.bind(&addr("127.0.0.1:7101")).expect("bind");
    l1.listen(8).expect("listen");
    wants.push(Want {
        reuseaddr: true,
        ..Want::listener("reuseaddr listener", "127.0.0.1:7101", fd_inode(&l1))
    });

    let l2 = tcp();
    l2.set_reuse_port(true).expect("SO_REUSEPORT");
    l2.bind(&addr("0.0.0.0:7102")).expect("bind");
    l2.listen(8).expect("listen");
    wants.push(Want {
        reuseport: true,
        ..Want::listener("reuseport listener", "0.0.0.0:7102", fd_inode(&l2))
    });

    // Plain listener; its client closes first below.
    let l3 = tcp();
    l3.bind(&addr("127.0.0.1:7103")).expect("bind");
    l3.listen(8).expect("listen");
    wants.push(Want::listener(
        "plain listener",
        "127.0.0.1:7103",
        fd_inode(&l3),
    ));

    // Bound, never listening: only in the bind hash, which the TCP
    // iterator does not walk.
    let bound = tcp();
    bound.bind(&addr("127.0.0.1:7104")).expect("bind");

    let v6only =
        socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).expect("tcp6");
    v6only.set_only_v6(true).expect("V6ONLY");
    v6only.bind(&addr("[::]:7105")).expect("bind");
    v6only.listen(8).expect("listen");
    wants.push(Want {
        v6only: true,
        ..Want::listener("v6only listener", "[::]:7105", fd_inode(&v6only))
    });

    let dual =
        socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).expect("tcp6");
    dual.set_only_v6(false).expect("V6ONLY off");
    dual.bind(&addr("[::]:7106")).expect("bind");
    dual.listen(8).expect("listen");
    wants.push(Want::listener(
        "dual-stack listener",
        "[::]:7106",
        fd_inode(&dual),
    ));

    // `sk_uid` is the socket inode's owner, the creator's fsuid
    // (`sock_alloc`, `sock_init_data`); setfsuid is per thread, so this
    // thread alone creates one socket as nobody.
    // SAFETY: setfsuid only changes this thread's filesystem uid.
    unsafe { libc::syscall(libc::SYS_setfsuid, NOBODY) };
    let other = tcp();
    // SAFETY: setfsuid only changes this thread's filesystem uid (back to root).
    unsafe { libc::syscall(libc::SYS_setfsuid, 0) };
    other.bind(&addr("127.0.0.1:7107")).expect("bind");
    other.listen(8).expect("listen");
    wants.push(Want {
        uid: Some(NOBODY),
        ..Want::listener(
            "listener of another uid",
            "127.0.0.1:7107",
            fd_inode(&other),
        )
    });

    let u1 = udp();
    u1.set_reuse_address(true).expect("SO_REUSEADDR");
    u1.bind(&addr("127.0.0.1:7108")).expect("bind");
    wants.push(Want {
        proto: Proto::Udp,
        state: CLOSE,
        reuseaddr: true,
        ..Want::listener("udp reuseaddr", "127.0.0.1:7108", fd_inode(&u1))
    });
    let u2 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).expect("udp6");
    u2.set_only_v6(true).expect("V6ONLY");
    u2.set_reuse_port(true).expect("SO_REUSEPORT");
    u2.bind(&addr("[::]:7109")).expect("bind");
    wants.push(Want {
        proto: Proto::Udp,
        state: CLOSE,
        reuseport: true,
        v6only: true,
        ..Want::listener("udp6 v6only reuseport", "[::]:7109", fd_inode(&u2))
    });

    // Server closes first: the accepted socket (which inherits the
    // listener's SO_REUSEADDR) ends in TIME_WAIT.
    let c1 = tcp();
    c1.connect(&addr("127.0.0.1:7101")).expect("connect");
    let c1_addr = c1.local_addr().expect("local").as_socket().expect("inet");
    let (s1, _) = l1.accept().expect("accept");
    drop(s1);
    let mut c1: std::net::TcpStream = c1.into();
    let mut buf = [0u8; 1];
    assert_eq!(c1.read(&mut buf).expect("EOF"), 0);
    drop(c1);
    wants.push(Want {
        what: "server-side TIME_WAIT",
        remote: Some(c1_addr),
        state: TIME_WAIT,
        reuseaddr: true,
        uid: None,
        ino: None,
        tw_substate: Some(TIME_WAIT),
        ..Want::listener("", "127.0.0.1:7101", 0)
    });

    // Client closes first, with SO_REUSEPORT set: its timewait socket
    // carries that flag, first in substate FIN_WAIT2 (closed before the
    // peer's FIN), then TIME_WAIT once the server closes.
    let c2 = tcp();
    c2.set_reuse_port(true).expect("SO_REUSEPORT");
    c2.connect(&addr("127.0.0.1:7103")).expect("connect");
    let c2_addr = c2.local_addr().expect("local").as_socket().expect("inet");
    let (s2, _) = l3.accept().expect("accept");
    common::close_into_fin_wait2(c2);
    wants.push(Want {
        what: "client-side TIME_WAIT",
        local: c2_addr,
        remote: Some(addr("127.0.0.1:7103").as_socket().expect("inet")),
        state: TIME_WAIT,
        reuseport: true,
        uid: None,
        ino: None,
        tw_substate: Some(TIME_WAIT),
        ..Want::listener("", "127.0.0.1:7103", 0)
    });

    keep.extend([l1, l2, l3, bound, v6only, dual, other, u1, u2]);
    tx.send(Setup {
        netns,
        path,
        wants,
        client_first: c2_addr,
        bound_only: 7104,
    })
    .expect("send setup");

    if close_server.recv().is_ok() {
        let mut s2: std::net::TcpStream = s2.into();
        assert_eq!(s2.read(&mut buf).expect("EOF"), 0);
        drop(s2);
        let _ = closed.send(());
    }
    let _ = done.recv();
    drop(keep);
}

#[test]
fn snapshot_lists_the_namespace_sockets_with_their_flags() {
    let Some(mut t) = common::socket_table() else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || build(tx, close_rx, closed_tx, done_rx));

    // Another namespace with a listener of its own: never in A's snapshot.
    let (other_tx, other_rx) = mpsc::channel();
    let (other_done_tx, other_done_rx) = mpsc::channel::<()>();
    let b = std::thread::spawn(move || {
        enter_new_netns().expect("netns");
        let l = tcp();
        l.bind(&addr("127.0.0.1:7199")).expect("bind");
        l.listen(8).expect("listen");
        other_tx.send(current_netns().expect("ino")).expect("send");
        let _ = other_done_rx.recv();
    });
    let other_netns = other_rx.recv().expect("namespace b");
    let setup = rx.recv().expect("namespace a");
    let path = setup.path.clone();

    // The client-first timewait socket, before the server closed.
    let c2 = setup.client_first;
    let snap = until(
        &mut t,
        &path,
        "the client's FIN_WAIT2 timewait socket",
        |s| {
            s.iter().any(|k| {
                k.local == c2
                    && matches!(
                        k.entry,
                        Entry::TimeWait {
                            substate: FIN_WAIT2,
                            ..
                        }
                    )
            })
        },
    );
    let tw = snap.iter().find(|k| k.local == c2).expect("timewait");
    assert_eq!(tw.state, TcpState::TIME_WAIT, "{tw:?}");
    assert!(tw.reuseport && !tw.reuseaddr, "{tw:?}");
    assert_eq!((tw.ino, tw.uid), (None, None), "{tw:?}");

    close_tx.send(()).expect("close server");
    closed_rx.recv().expect("server closed");

    // Settled: both timewait sockets in TIME_WAIT, no connection left in
    // a closing state.
    let snap = until(&mut t, &path, "both timewait sockets in TIME_WAIT", |s| {
        let settled = s.iter().all(|k| {
            k.proto == Proto::Udp || k.state == TcpState::LISTEN || k.state == TcpState::TIME_WAIT
        });
        let tws = s
            .iter()
            .filter(|k| {
                matches!(
                    k.entry,
                    Entry::TimeWait {
                        substate: TIME_WAIT,
                        ..
                    }
                )
            })
            .count();
        settled && tws == 2
    });
    eprintln!("snapshot of namespace {}: {snap:#?}", setup.netns);

    for k in &snap {
        assert_eq!(k.netns, setup.netns, "socket of another namespace: {k:?}");
        assert_ne!(
            k.local.port(),
            7199,
            "socket of namespace {other_netns}: {k:?}"
        );
        assert_ne!(
            k.local.port(),
            setup.bound_only,
            "a bound-only TCP socket is not in the tables the iterator walks: {k:?}"
        );
    }
    for w in &setup.wants {
        let found: Vec<_> = snap.iter().filter(|k| w.matches(k)).collect();
        assert_eq!(found.len(), 1, "{}: {found:#?} in {snap:#?}", w.what);
        w.check(found[0]);
    }
    assert_eq!(snap.len(), setup.wants.len(), "exactly these: {snap:#?}");

    // Kernel-side filters.
    let by_port = t
        .snapshot_in(
            &path,
            &SnapshotFilter {
                port: Some(7101),
                ..SnapshotFilter::default()
            },
        )
        .expect("snapshot");
    assert_eq!(
        by_port.len(),
        2,
        "listener and its timewait child: {by_port:#?}"
    );
    assert!(by_port.iter().all(|k| k.local.port() == 7101));
    let udp_only = t
        .snapshot_in(
            &path,
            &SnapshotFilter {
                proto: Some(Proto::Udp),
                ..SnapshotFilter::default()
            },
        )
        .expect("snapshot");
    assert_eq!(udp_only.len(), 2, "{udp_only:#?}");
    assert!(udp_only.iter().all(|k| k.proto == Proto::Udp));
    let wrong_ns = t
        .snapshot_in(
            &path,
            &SnapshotFilter {
                netns: Some(other_netns),
                ..SnapshotFilter::default()
            },
        )
        .expect("snapshot");
    assert!(wrong_ns.is_empty(), "{wrong_ns:#?}");

    // The calling thread's own namespace holds none of them.
    let here = t.snapshot(&SnapshotFilter::default()).expect("snapshot");
    assert!(
        here.iter().all(|k| k.netns != setup.netns),
        "namespace A's sockets seen from outside it"
    );

    // `ss` in the namespace sees the same tables (sock_diag walks the same
    // hashes; it too leaves bound-only TCP sockets out unless asked for).
    let tcp_count = snap.iter().filter(|k| k.proto == Proto::Tcp).count();
    let udp_count = snap.len() - tcp_count;
    match (count_ss(&path, "-tanH"), count_ss(&path, "-uanH")) {
        (Some(t_ss), Some(u_ss)) => {
            assert_eq!(t_ss, tcp_count, "ss -tanH against the TCP iterator");
            assert_eq!(u_ss, udp_count, "ss -uanH against the UDP iterator");
        }
        _ => eprintln!("SKIPPED the ss comparison: nsenter or ss unavailable"),
    }

    let _ = done_tx.send(());
    let _ = other_done_tx.send(());
    a.join().expect("namespace thread a");
    b.join().expect("namespace thread b");
}

/// `iter/task_file` finds the processes holding sockets, and the TCP
/// sockets only bound (which the TCP walk misses), in one namespace only.
#[test]
fn task_file_walk_names_owners_and_bound_only_sockets() {
    let Some(mut t) = common::socket_table() else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        enter_new_netns().expect("netns");
        let bound = tcp();
        bound.set_reuse_address(true).expect("SO_REUSEADDR");
        bound.bind(&addr("127.0.0.1:7301")).expect("bind");
        let l = tcp();
        l.set_reuse_port(true).expect("SO_REUSEPORT");
        l.bind(&addr("127.0.0.1:7302")).expect("bind");
        l.listen(8).expect("listen");
        let u = udp();
        u.bind(&addr("127.0.0.1:7301")).expect("bind");
        let inos = (fd_inode(&bound), fd_inode(&l), fd_inode(&u));
        let fds = (bound.as_raw_fd(), l.as_raw_fd(), u.as_raw_fd());
        tx.send((current_netns().expect("ino"), inos, fds))
            .expect("send");
        let _ = done_rx.recv();
    });
    let (netns, (bound_ino, l_ino, u_ino), (bound_fd, _, _)) = rx.recv().expect("setup");
    let path = PathBuf::from(format!("/proc/self/task/{}/ns/net", tid_of_netns(netns)));
    let files = t.files_in(Some(&path), None).expect("task_file walk");
    eprintln!("{files:#?}");
    assert_eq!(files.len(), 3, "{files:#?}");
    let me = std::process::id();
    assert!(files.iter().all(|f| f.pid == me && f.socket.netns == netns));
    let b = files
        .iter()
        .find(|f| f.socket.ino == Some(bound_ino))
        .expect("bound-only TCP socket");
    assert_eq!(
        (b.socket.proto, b.socket.state),
        (Proto::Tcp, TcpState::CLOSE)
    );
    assert_eq!(
        b.socket.local,
        "127.0.0.1:7301".parse::<SocketAddr>().expect("addr")
    );
    assert!(b.socket.reuseaddr && !b.socket.reuseport);
    assert_eq!(b.fd, u32::try_from(bound_fd).expect("fd"));
    let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", b.tid))
        .expect("comm")
        .trim_end()
        .to_owned();
    assert_eq!(b.comm, comm);
    let l = files
        .iter()
        .find(|f| f.socket.ino == Some(l_ino))
        .expect("listener");
    assert!(l.socket.state == TcpState::LISTEN && l.socket.reuseport);
    assert!(files.iter().any(|f| f.socket.ino == Some(u_ino)));
    let by_port = t.files_in(Some(&path), Some(7302)).expect("walk");
    assert_eq!(by_port.len(), 1, "{by_port:#?}");
    let here = t.files_in(None, None).expect("walk");
    assert!(here.iter().all(|f| f.socket.netns != netns));
    let _ = done_tx.send(());
    a.join().expect("thread");
}

/// A thread of this process inside namespace `netns`.
fn tid_of_netns(netns: u32) -> u32 {
    for e in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let p = e.path().join("ns/net");
        if std::fs::metadata(&p).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino() == u64::from(netns)
        }) {
            return e.file_name().to_string_lossy().parse().expect("tid");
        }
    }
    panic!("no thread in namespace {netns}");
}
