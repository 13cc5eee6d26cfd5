//! The cross-mode check: both sets of kernel programs loaded at once, one
//! scripted workload, and the two reports compared. fentry mode sees the
//! deciding functions, tracepoint mode the syscall boundary and timers;
//! on the same kernel they must report the same bind decisions, the same
//! TIME_WAIT entries and the same per-socket SO_REUSEPORT counts.
//!
//! Kernels that refuse fentry (lockdown) skip this with the kernel's
//! answer printed; with `INSPECTOR_REQUIRE_FENTRY=1` (set by
//! `cargo xtask vm-test`, whose guests allow fentry) a refusal fails.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use common::{addr, inode, tcp, udp};
use inspector::{
    kernel::Proto,
    kernel::netns::{in_new_netns, set_sysctl},
    kernel::probe::{Mode, ProbeError},
    model::filter::Filter,
    model::record::{Record, RecordType},
    pipeline::Pipeline,
};

const CONNECTIONS: usize = 120;
const DATAGRAM_SENDERS: usize = 40;
const TIME_WAITS: usize = 16;

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "true" || v == "1")
}

/// Both pipelines, or `None` (with the reason printed) where this kernel
/// or this user cannot run the check.
fn both() -> Option<(Pipeline, Pipeline)> {
    let ci = env_on("CI");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!ci, "CI=true but not root: the probes cannot load");
        eprintln!("SKIPPED: needs root to load eBPF programs and create network namespaces");
        return None;
    }
    let tp = Pipeline::new(Filter::default(), Mode::Tracepoint)
        .unwrap_or_else(|e| panic!("tracepoint mode cannot load: {e}"));
    match Pipeline::new(Filter::default(), Mode::Fentry) {
        Ok(fe) => {
            eprintln!("cross-mode: kernel {}", kernel_release());
            Some((tp, fe))
        }
        Err(ProbeError::FentryRefused { hook, reason }) if !env_on("INSPECTOR_REQUIRE_FENTRY") => {
            eprintln!("SKIPPED: this kernel refuses fentry ({hook}: {reason}); nothing to compare");
            None
        }
        Err(e) => panic!("fentry mode cannot load: {e}"),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// What user space itself saw of the workload.
struct Truth {
    netns: u32,
    /// Per-listener accepts and per-receiver datagrams, by socket inode.
    tcp_accepts: HashMap<u64, usize>,
    udp_receives: HashMap<u64, usize>,
    /// Refused binds: (port, errno).
    refused: Vec<(u16, i32)>,
}

fn workload() -> Truth {
    in_new_netns(|netns| {
        set_sysctl("net/ipv4/tcp_tw_reuse", "0").expect("sysctl");
        let mut refused = Vec::new();
        let mut keep = Vec::new();
        let mut refuse = |port: u16, r: std::io::Result<()>| {
            if let Err(e) = r {
                refused.push((port, e.raw_os_error().unwrap_or(-1)));
            }
        };

        // Plain conflict, at bind.
        let a = tcp();
        a.bind(&addr("127.0.0.1:7201")).expect("bind");
        let b = tcp();
        refuse(7201, b.bind(&addr("127.0.0.1:7201")));
        // Both SO_REUSEADDR: bind shares, the second listen is refused.
        let c = tcp();
        c.set_reuse_address(true).expect("SO_REUSEADDR");
        c.bind(&addr("127.0.0.1:7202")).expect("bind");
        let d = tcp();
        d.set_reuse_address(true).expect("SO_REUSEADDR");
        d.bind(&addr("127.0.0.1:7202")).expect("bind");
        c.listen(4).expect("listen");
        refuse(7202, d.listen(4));
        // Autobind by bind(port 0) and by listen() on an unbound socket.
        let e = tcp();
        e.bind(&addr("127.0.0.1:0")).expect("bind");
        let f = tcp();
        f.listen(4).expect("listen");
        // Refused before any port decision: not a local address.
        let g = tcp();
        refuse(7203, g.bind(&addr("192.0.2.1:7203")));
        // UDP: conflict, then a SO_REUSEADDR pair.
        let h = udp();
        h.bind(&addr("127.0.0.1:7204")).expect("bind");
        let i = udp();
        refuse(7204, i.bind(&addr("127.0.0.1:7204")));
        keep.extend([a, b, c, d, e, f, g, h, i]);

        // A TCP SO_REUSEPORT group.
        let listeners: Vec<_> = (0..4)
            .map(|_| {
                let s = tcp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&addr("127.0.0.1:7210")).expect("bind");
                s.listen(1024).expect("listen");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let c = tcp();
                c.connect(&addr("127.0.0.1:7210")).expect("connect");
                c
            })
            .collect();
        let mut tcp_accepts = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut total = 0;
        while total < CONNECTIONS && Instant::now() < deadline {
            for l in &listeners {
                while l.accept().is_ok() {
                    *tcp_accepts.entry(inode(l)).or_default() += 1;
                    total += 1;
                }
            }
        }
        drop(clients);

        // A UDP SO_REUSEPORT group, senders bound explicitly.
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let s = udp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&addr("127.0.0.1:7211")).expect("bind");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let mut udp_receives = HashMap::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        for _ in 0..DATAGRAM_SENDERS {
            let s = udp();
            s.bind(&addr("127.0.0.1:0")).expect("bind");
            s.send_to(b"ping", &addr("127.0.0.1:7211")).expect("send");
            for r in &receivers {
                while r.recv(&mut buf).is_ok() {
                    *udp_receives.entry(inode(r)).or_default() += 1;
                }
            }
        }

        // Server-side TIME_WAIT: the server closes first.
        let server = tcp();
        server.bind(&addr("127.0.0.1:7220")).expect("bind");
        server.listen(64).expect("listen");
        for _ in 0..TIME_WAITS {
            let c = tcp();
            c.connect(&addr("127.0.0.1:7220")).expect("connect");
            let (conn, _) = server.accept().expect("accept");
            drop(conn);
            std::thread::sleep(Duration::from_millis(5));
            drop(c);
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(keep);
        Truth {
            netns,
            tcp_accepts,
            udp_receives,
            refused,
        }
    })
    .expect("netns")
}

/// Polls both pipelines until the namespace has gone quiet.
fn collect_both(tp: &mut Pipeline, fe: &mut Pipeline, netns: u32) -> (Vec<Record>, Vec<Record>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut batch = Vec::new();
    let start = Instant::now();
    let mut quiet = 0;
    while start.elapsed() < Duration::from_secs(15) && quiet < 10 {
        let before = (a.len(), b.len());
        for (p, out) in [(&mut *tp, &mut a), (&mut *fe, &mut b)] {
            p.poll(&mut batch, false);
            out.extend(batch.drain(..).filter(|r| r.netns == netns));
        }
        quiet = if (a.len(), b.len()) == before {
            quiet + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(50));
    }
    (a, b)
}

/// Bind and listen decisions, as a multiset of what a user compares.
fn decisions(records: &[Record]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == RecordType::Bind) {
        let key = format!(
            "{:?} ino={:?} lport={} req_port={:?} phase={:?} errno={:?} reuseaddr={} reuseport={}",
            r.proto, r.ino, r.lport, r.req_port, r.phase, r.errno, r.reuseaddr, r.reuseport
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn connects(records: &[Record]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == RecordType::Connect) {
        let key = format!(
            "{:?} ino={:?} lport={} rport={} errno={:?}",
            r.proto, r.ino, r.lport, r.rport, r.errno
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn tw_entries(records: &[Record]) -> BTreeMap<(u16, u16), usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == RecordType::TwEnter) {
        *out.entry((r.lport, r.rport)).or_default() += 1;
    }
    out
}

fn reuseport_counts(records: &[Record], proto: Proto) -> HashMap<u64, usize> {
    let mut out = HashMap::new();
    for r in records
        .iter()
        .filter(|r| r.kind == RecordType::Reuseport && r.proto == Some(proto))
    {
        *out.entry(r.ino.expect("member inode")).or_default() += 1;
    }
    out
}

#[test]
fn fentry_and_tracepoint_modes_report_the_same_decisions() {
    let Some((mut tp, mut fe)) = both() else {
        return;
    };
    assert_eq!(
        (tp.probes.mode, fe.probes.mode),
        (Mode::Tracepoint, Mode::Fentry)
    );
    let truth = workload();
    let (a, b) = collect_both(&mut tp, &mut fe, truth.netns);

    let (da, db) = (decisions(&a), decisions(&b));
    assert_eq!(da, db, "bind/listen decisions: tracepoint vs fentry");
    // Every refusal user space saw is among them, with its errno.
    for (port, errno) in &truth.refused {
        let refused = b
            .iter()
            .filter(|r| r.kind == RecordType::Bind && r.req_port == Some(*port))
            .filter_map(|r| r.errno)
            .count();
        assert!(
            refused >= 1,
            "refusal on port {port} (errno {errno}) reported"
        );
    }
    assert_eq!(
        da.values().sum::<usize>(),
        // 1 + 1 refused, 2 binds + 2 listens, 1 bind + 1 listen autobind,
        // 1 refused early, UDP 1 + 1 refused, 4 + 4 group binds and
        // listens, 4 UDP group binds, the UDP senders, the TIME_WAIT server
        // bind + listen.
        2 + 4 + 2 + 1 + 2 + 8 + 4 + DATAGRAM_SENDERS + 2,
        "{da:#?}"
    );
    assert_eq!(connects(&a), connects(&b), "connect() outcomes");

    let (ta, tb) = (tw_entries(&a), tw_entries(&b));
    assert_eq!(ta, tb, "TIME_WAIT entries: tracepoint vs fentry");
    // The reuseport connections close too (either side first, as it
    // happens); the TIME_WAIT server's are known exactly.
    assert_eq!(
        tb.keys().filter(|(l, _)| *l == 7220).count(),
        TIME_WAITS,
        "one entry per server-closed connection: {tb:?}"
    );

    let (tcp_fe, udp_fe) = (
        reuseport_counts(&b, Proto::Tcp),
        reuseport_counts(&b, Proto::Udp),
    );
    assert_eq!(tcp_fe, truth.tcp_accepts, "fentry: TCP choices = accepts");
    assert_eq!(udp_fe, truth.udp_receives, "fentry: UDP choices = receives");
    if tp
        .probes
        .missing
        .iter()
        .any(|m| m.contains("sk_data_ready"))
    {
        eprintln!(
            "cross-mode: no sk_data_ready in tracepoint mode here: fentry's choices checked \
             against accepts and receives only"
        );
    } else {
        assert_eq!(
            reuseport_counts(&a, Proto::Tcp),
            tcp_fe,
            "TCP per-socket counts"
        );
        assert_eq!(
            reuseport_counts(&a, Proto::Udp),
            udp_fe,
            "UDP per-socket counts"
        );
    }
    eprintln!(
        "cross-mode: agree on {} bind/listen decisions, {} connects, {} TIME_WAIT entries, {} + {} reuseport choices",
        da.values().sum::<usize>(),
        connects(&b).values().sum::<usize>(),
        tb.values().sum::<usize>(),
        tcp_fe.values().sum::<usize>(),
        udp_fe.values().sum::<usize>()
    );
}

#[test]
fn auto_mode_uses_fentry_exactly_when_the_kernel_accepts_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !env_on("CI"),
            "CI=true but not root: the probes cannot load"
        );
        eprintln!("SKIPPED: needs root to load eBPF programs");
        return;
    }
    // Ask the kernel: does an explicit fentry load succeed?
    let accepts = match Pipeline::new(Filter::default(), Mode::Fentry) {
        Ok(_) => true,
        Err(ProbeError::FentryRefused { .. }) => false,
        Err(e) => panic!("fentry mode failed for another reason: {e}"),
    };
    let auto = Pipeline::new(Filter::default(), Mode::Auto).expect("auto mode loads");
    let p = &auto.probes;
    eprintln!(
        "cross-mode: kernel {}: auto chose {} ({})",
        kernel_release(),
        p.mode,
        p.attached.join(", ")
    );
    let refusal_noted = p.missing.iter().any(|m| m.contains("fentry/fexit refused"));
    if accepts {
        assert_eq!(p.mode, Mode::Fentry);
        assert!(!refusal_noted);
        for hook in [
            "fexit:inet_csk_get_port",
            "fexit:udp_lib_get_port",
            "fexit:reuseport_select_sock",
            "fentry:tw_timer_handler",
        ] {
            assert!(p.attached.iter().any(|a| a == hook), "{hook} attached");
        }
        assert!(
            !p.attached
                .iter()
                .any(|a| a == "sys_enter" || a.starts_with("syscalls:"))
        );
    } else {
        assert_eq!(p.mode, Mode::Tracepoint);
        assert!(refusal_noted, "the fallback is said: {:?}", p.missing);
        // The per-syscall tracepoints, or raw sys_enter where tracefs
        // lacks them.
        assert!(
            p.attached
                .iter()
                .any(|a| a == "sys_enter" || a == "syscalls:sys_enter_bind")
        );
        assert!(!p.attached.iter().any(|a| a.starts_with("fexit:")));
    }
    assert!(
        env_on("INSPECTOR_REQUIRE_FENTRY") <= accepts,
        "fentry required here"
    );
}
