//! `inspector explain` against the real kernel: random sets of sockets are
//! built for real in fresh network namespaces, and every bind() and
//! listen() the kernel decides, of the set-up and of one more socket, is
//! compared with what `explain::rules` predicts. Replay a run with
//! `INSPECTOR_SEED=<seed>`.

mod common;

use common::{Rng, needs_root};

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use inspector::kernel::sys::{BindSpec, Forked, fork_as};
use inspector::{
    explain::{
        Outcome, inventory,
        rules::{Port, Proto, Sock, SockState, UdpWalk},
    },
    kernel::netns,
};
use socket2::{Domain, Socket, Type};

const ADDRS: [&str; 5] = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::"];
const NOBODY: u32 = 65534;
/// Listeners that "connected" and TIME_WAIT sockets connect to, one per
/// socket index, so that no two sockets of a case share a 4-tuple.
const HELPER_PORT: u16 = 10000;

#[derive(Debug, Clone)]
struct Spec {
    sock: Sock,
    /// The v6only flag set with setsockopt (the model's may differ after
    /// bind: the kernel sets it for a specific IPv6 address).
    set_v6only: bool,
    target: SockState,
    /// A listener whose accepted connection is closed server-first, so
    /// that its side becomes a timewait socket on the port with the
    /// listener's flags; `Some(true)` keeps the listener afterwards.
    server_tw: Option<bool>,
}

fn random_spec(rng: &mut Rng, proto: Proto, port: u16, existing: bool) -> Spec {
    let addr: IpAddr = ADDRS[rng.below(ADDRS.len() as u64) as usize]
        .parse()
        .expect("address");
    let mut sock = Sock::new(proto, addr, port);
    sock.reuseaddr = Some(rng.chance(50));
    sock.reuseport = Some(rng.chance(50));
    let set_v6only = addr.is_ipv6() && rng.chance(40);
    sock.v6only = set_v6only;
    sock.uid = if rng.chance(30) { NOBODY } else { 0 };
    let mut server_tw = None;
    let target = match (existing, proto, rng.below(5)) {
        (false, _, _) => SockState::Bound,
        (true, Proto::Udp, 0 | 1) => SockState::Bound,
        (true, Proto::Udp, _) => SockState::Connected,
        (true, Proto::Tcp, 0) => SockState::Bound,
        (true, Proto::Tcp, 1) => SockState::Listen,
        (true, Proto::Tcp, 2) => SockState::Connected,
        (true, Proto::Tcp, 3) => SockState::TimeWait,
        (true, Proto::Tcp, _) => {
            // Held in this process, which accepts the connection: a
            // timewait socket's conflicts never depend on its uid
            // (inet_bind_conflict() lets TIME_WAIT pass before uid_eq).
            sock.uid = 0;
            server_tw = Some(rng.chance(50));
            SockState::Listen
        }
    };
    Spec {
        sock,
        set_v6only,
        target,
        server_tw,
    }
}

/// What to do with one socket: bind, then listen or connect.
struct Plan {
    spec: BindSpec,
    close_after: bool,
}

impl Plan {
    fn new(spec: &Spec, helper: u16) -> Self {
        let s = &spec.sock;
        let (listen, connect, close_after) = match spec.target {
            SockState::Bound => (false, false, false),
            SockState::Listen => (true, false, false),
            SockState::Connected => (false, true, false),
            SockState::TimeWait => (false, true, true),
        };
        let dst: IpAddr = if s.addr.is_ipv6() {
            "::1".parse().expect("address")
        } else {
            "127.0.0.1".parse().expect("address")
        };
        Self {
            spec: BindSpec {
                addr: SocketAddr::new(s.addr, s.port),
                stream: s.proto == Proto::Tcp,
                reuseaddr: s.reuseaddr == Some(true),
                reuseport: s.reuseport == Some(true),
                v6only: spec.set_v6only.then_some(true),
                listen: listen.then_some(16),
                count_on_release: false,
                connect: connect.then(|| SocketAddr::new(dst, helper)),
                comm: None,
            },
            close_after,
        }
    }
}

/// Errnos of bind, listen and connect; 0 for success, -1 for not tried.
type Report = [libc::c_int; 3];

/// A socket of a case: held by this process, or by a child of another uid.
enum Holder {
    Local {
        sock: Option<Socket>,
    },
    #[expect(dead_code, reason = "held for its socket, released when dropped")]
    Child(Forked),
}

/// Runs the plan's steps on `sock` in this process.
fn steps(sock: &Socket, plan: &BindSpec) -> Report {
    let mut r: Report = [-1; 3];
    let errno = |res: std::io::Result<()>| match res {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    let _ = sock.set_reuse_address(plan.reuseaddr);
    let _ = sock.set_reuse_port(plan.reuseport);
    if plan.v6only == Some(true) {
        let _ = sock.set_only_v6(true);
    }
    r[0] = errno(sock.bind(&plan.addr.into()));
    if r[0] != 0 {
        return r;
    }
    if let Some(backlog) = plan.listen {
        r[1] = errno(sock.listen(backlog));
    }
    if let Some(dst) = plan.connect {
        r[2] = errno(sock.connect(&dst.into()));
    }
    r
}

/// Carries out the plan as `uid`: 0 in this process, otherwise in a child
/// that drops to `uid` ([`inspector::kernel::sys::fork_as`]) and holds its
/// socket until dropped (unless the plan closes it at once).
fn run_plan(plan: &Plan, uid: u32) -> std::io::Result<(Holder, Report)> {
    if uid == 0 {
        let ty = if plan.spec.stream {
            Type::STREAM
        } else {
            Type::DGRAM
        };
        let sock = Socket::new(Domain::for_address(plan.spec.addr), ty, None)?;
        let r = steps(&sock, &plan.spec);
        let sock = (!plan.close_after).then_some(sock);
        return Ok((Holder::Local { sock }, r));
    }
    let child = fork_as(uid, &plan.spec, !plan.close_after)?;
    let rep = child.report;
    if rep.setup != 0 {
        return Err(std::io::Error::from_raw_os_error(rep.setup));
    }
    let r = [
        rep.bind.unwrap_or(-1),
        rep.listen.unwrap_or(-1),
        rep.connect.unwrap_or(-1),
    ];
    Ok((Holder::Child(child), r))
}

/// What the kernel returned, as the prediction states it.
fn outcome(e: libc::c_int) -> Outcome {
    Outcome::of_errno(e)
}

/// Timewait sockets on `port` in this thread's namespace, from
/// /proc/thread-self/net/tcp{,6} (timer 3 is the timewait timer).
fn timewait_count(port: u16) -> usize {
    tcp_count(port, |_, timer| timer.starts_with("03:"))
}

/// Listening sockets on `port` in this thread's namespace (state 0A).
fn listen_count(port: u16) -> usize {
    tcp_count(port, |state, _| state == "0A")
}

/// TCP sockets on `port` whose state and timer columns of
/// /proc/thread-self/net/tcp{,6} pass `pick`.
fn tcp_count(port: u16, pick: impl Fn(&str, &str) -> bool) -> usize {
    let mut n = 0;
    for f in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(timer)) = (cols.get(1), cols.get(3), cols.get(5))
            else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if lport == Some(port) && pick(state, timer) {
                n += 1;
            }
        }
    }
    n
}

/// Waits until `n` timewait sockets are on `port`; false after 2 s.
fn wait_for_timewait(port: u16, n: usize) -> bool {
    let start = Instant::now();
    while timewait_count(port) < n {
        if start.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Connects to `listener` (the model's `l`), accepts, and closes the
/// accepted socket first, then the client: the accepted side goes through
/// FIN_WAIT2 into TIME_WAIT on the listener's port. Returns the model of
/// that timewait socket: the accepted socket is a clone of the listener
/// (`sk_clone_lock()`: flags, `sk_ipv6only`, uid) on the address the
/// client reached; an IPv6 one gets `LOOPBACK4_IPV6` as its IPv4 address
/// (tcp_v6_syn_recv_sock()).
fn server_time_wait(listener: &Socket, l: &Sock, port: u16) -> Option<Sock> {
    let dst: IpAddr = match l.addr {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".parse().ok()?,
        IpAddr::V6(a) if a.is_unspecified() => "::1".parse().ok()?,
        a => a,
    };
    let to = SocketAddr::new(dst, port);
    let client = Socket::new(Domain::for_address(to), Type::STREAM, None).ok()?;
    client.connect(&to.into()).ok()?;
    // Another listener of the case (an SO_REUSEPORT group, or a more
    // specific address) may have taken the connection: give up on the
    // case rather than wait for it.
    listener.set_nonblocking(true).ok()?;
    let start = Instant::now();
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > Duration::from_millis(100) {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => return None,
        }
    };
    drop(conn);
    // The client reads end of stream once the server's FIN is in: the
    // server side is then in FIN_WAIT2 and the client's FIN moves it to
    // TIME_WAIT rather than crossing it (which would make it CLOSING).
    client.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    if client.recv(&mut buf).ok()? != 0 {
        return None;
    }
    drop(client);
    let mut tw = l.clone();
    tw.addr = dst;
    tw.connected_from_any = tw.is_v6() && !tw.v6only;
    tw.state = SockState::TimeWait;
    Some(tw)
}

#[derive(Default)]
struct Tally {
    cases: usize,
    checks: usize,
    disagreements: Vec<String>,
    skipped: usize,
    /// The same cases predicted from the inventory alone (sock_diag +
    /// getsockopt, no history): compared unless the kernel took a fast path.
    inventory_checks: usize,
    inventory_fast_path: usize,
    /// Verdicts from the inventory hedged on unknown flags.
    hedged: usize,
    /// The inventory's flags came from the kernel's tables.
    exact: bool,
    /// How the kernel's `udp_lib_lport_inuse()` ends its walk, measured
    /// before the cases.
    udp_walk: Option<UdpWalk>,
}

/// What must match between the model's sockets and the inventory's;
/// `exact`: the inventory read the flags from the kernel's tables.
fn key(s: &Sock, exact: bool) -> String {
    let tw = s.state == SockState::TimeWait && !exact;
    format!(
        "{:?} {} {:?} v6only={} flags={}",
        s.proto,
        inspector::explain::fmt_addr(s.addr, s.port),
        s.state,
        // sock_diag does not say for an IPv6 timewait socket.
        if tw && s.addr.is_ipv6() {
            "unknown".to_owned()
        } else {
            s.v6only.to_string()
        },
        if tw {
            "unknown".to_owned()
        } else {
            format!("{:?}/{:?}", s.reuseaddr, s.reuseport)
        }
    )
}

fn describe(s: &Sock, target: Option<SockState>) -> String {
    format!(
        "{:?} {} ra={} rp={} v6only={} uid={}{}",
        s.proto,
        inspector::explain::fmt_addr(s.addr, s.port),
        u8::from(s.reuseaddr == Some(true)),
        u8::from(s.reuseport == Some(true)),
        u8::from(s.v6only),
        s.uid,
        target.map(|t| format!(" -> {t:?}")).unwrap_or_default()
    )
}

/// Where a case's sockets come from: random draws, or a fixed list (the
/// named regression cases). The random source draws in the order the
/// cases are built, so a seed replays the same cases.
trait Cases {
    /// The protocol of the case and how many sockets it sets up.
    fn start(&mut self) -> (Proto, usize);
    /// The `i`th socket set up before the one predicted.
    fn existing(&mut self, i: usize, proto: Proto, port: u16) -> Spec;
    /// The socket whose bind (and listen) is predicted.
    fn new_socket(&mut self, proto: Proto, port: u16) -> Spec;
}

impl Cases for Rng {
    fn start(&mut self) -> (Proto, usize) {
        let proto = if self.chance(50) {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        (proto, 1 + self.below(3) as usize)
    }

    fn existing(&mut self, _: usize, proto: Proto, port: u16) -> Spec {
        let p = if self.chance(10) {
            match proto {
                Proto::Tcp => Proto::Udp,
                Proto::Udp => Proto::Tcp,
            }
        } else {
            proto
        };
        random_spec(self, p, port, true)
    }

    fn new_socket(&mut self, proto: Proto, port: u16) -> Spec {
        random_spec(self, proto, port, false)
    }
}

/// A named case: sockets set up in order, then the one predicted.
struct Fixed {
    proto: Proto,
    existing: Vec<Spec>,
    new: Spec,
}

impl Cases for Fixed {
    fn start(&mut self) -> (Proto, usize) {
        (self.proto, self.existing.len())
    }

    fn existing(&mut self, i: usize, _: Proto, port: u16) -> Spec {
        let mut s = self.existing[i].clone();
        s.sock.port = port;
        s
    }

    fn new_socket(&mut self, _: Proto, port: u16) -> Spec {
        let mut s = self.new.clone();
        s.sock.port = port;
        s
    }
}

/// Builds one case on `port` and checks every decision. Returns false when
/// the set-up could not be built as planned (skipped).
fn run_case(
    cases: &mut impl Cases,
    port: u16,
    t: &mut Tally,
    source: &mut inventory::Source,
) -> bool {
    let (proto, n) = cases.start();
    let mut model = Port::new().with_udp_walk(t.udp_walk);
    let mut held: Vec<Holder> = Vec::new();
    let mut log = String::new();
    let mut tw_expected = 0;
    for i in 0..n {
        let spec = cases.existing(i, proto, port);
        let p = spec.sock.proto;
        let _ = writeln!(
            log,
            "  existing {i}: {}{}",
            describe(&spec.sock, Some(spec.target)),
            match spec.server_tw {
                Some(true) => ", accepted connection closed server-first",
                Some(false) => ", accepted connection closed server-first, then the listener",
                None => "",
            }
        );
        let plan = Plan::new(&spec, HELPER_PORT + i as u16);
        let (predicted, idx) = model.bind(&spec.sock);
        let Ok((holder, r)) = run_plan(&plan, spec.sock.uid) else {
            return false;
        };
        held.push(holder);
        t.checks += 1;
        if predicted.result != outcome(r[0]) {
            t.disagreements.push(format!(
                "port {port}: set-up bind of existing {i}: predicted {} ({}), kernel {}\n{log}",
                predicted.result,
                predicted.rule.condition,
                outcome(r[0])
            ));
            return true;
        }
        let Some(idx) = idx else { continue };
        if plan.spec.listen.is_some() {
            let predicted = model.listen(idx);
            t.checks += 1;
            if predicted.result != outcome(r[1]) {
                t.disagreements.push(format!(
                    "port {port}: set-up listen of existing {i}: predicted {} ({}), kernel {}\n{log}",
                    predicted.result,
                    predicted.rule.condition,
                    outcome(r[1])
                ));
                return true;
            }
            if let Some(keep) = spec.server_tw
                && r[1] == 0
            {
                let Some(Holder::Local {
                    sock: Some(listener),
                }) = held.last()
                else {
                    return false;
                };
                let Some(tw) = server_time_wait(listener, &model.socks[idx], port) else {
                    return false;
                };
                tw_expected += 1;
                if !wait_for_timewait(port, tw_expected) {
                    return false;
                }
                if !keep {
                    // The bucket keeps its cache while the timewait socket
                    // stays in it (inet_put_port() frees only an empty one).
                    let listening = listen_count(port);
                    held.pop();
                    model.socks.remove(idx);
                    // A child the other worker is forking may hold the
                    // listener until it closes what it inherited.
                    let start = Instant::now();
                    while listen_count(port) >= listening {
                        if start.elapsed() > Duration::from_secs(2) {
                            return false;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                model.socks.push(tw);
            }
        }
        if plan.spec.connect.is_some() {
            if r[2] != 0 {
                // A connect that fails leaves nothing worth comparing.
                return false;
            }
            let src: IpAddr = if spec.sock.addr.is_ipv6() {
                "::1".parse().expect("address")
            } else {
                "127.0.0.1".parse().expect("address")
            };
            model.connect(idx, src);
            if plan.close_after && p == Proto::Tcp {
                // Until the timewait socket replaces it, the closing socket
                // is a full socket (FIN_WAIT1) and counts as one.
                tw_expected += 1;
                if !wait_for_timewait(port, tw_expected) {
                    return false;
                }
                model.time_wait(idx);
            }
        }
    }
    let new = cases.new_socket(proto, port);
    let _ = writeln!(log, "  new: {}", describe(&new.sock, None));
    let (bind, listen) = model.predict(&new.sock);
    // The inventory must find exactly the model's sockets, and predict the
    // same from them alone.
    let inv = match source.collect(None, port) {
        Ok(inv) => inv,
        Err(e) => {
            t.disagreements
                .push(format!("port {port}: inventory failed: {e}\n{log}"));
            return true;
        }
    };
    let found: Vec<Sock> = inv.holders.iter().map(|h| h.to_rule_sock()).collect();
    let exact = inv.flags_source == inventory::FLAGS_KERNEL;
    t.exact = exact;
    let mut want: Vec<String> = model.socks.iter().map(|s| key(s, exact)).collect();
    let mut got: Vec<String> = found.iter().map(|s| key(s, exact)).collect();
    want.sort();
    got.sort();
    if want != got {
        t.disagreements.push(format!(
            "port {port}: inventory {got:?}, expected {want:?}\n{log}"
        ));
        return true;
    }
    let same: Vec<Sock> = found.into_iter().filter(|s| s.proto == proto).collect();
    let mut from_inventory = Port::from_inventory(same);
    from_inventory.udp_walk = inv.udp_walk.or(t.udp_walk);
    let from_inventory = from_inventory.predict(&new.sock);
    let mut plan = Plan::new(&new, 0);
    plan.spec.listen = (proto == Proto::Tcp).then_some(16);
    let Ok((holder, r)) = run_plan(&plan, new.sock.uid) else {
        return false;
    };
    held.push(holder);
    t.cases += 1;
    t.checks += 1;
    if bind.result != outcome(r[0]) {
        t.disagreements.push(format!(
            "port {port}: bind predicted {} ({}: {}), kernel {}\n{log}",
            bind.result,
            bind.rule.function,
            bind.rule.condition,
            outcome(r[0])
        ));
    } else if r[0] == 0 && proto == Proto::Tcp {
        t.checks += 1;
        if listen.result != outcome(r[1]) {
            t.disagreements.push(format!(
                "port {port}: listen predicted {} ({}: {}), kernel {}\n{log}",
                listen.result,
                listen.rule.function,
                listen.rule.condition,
                outcome(r[1])
            ));
        }
    }
    // From the inventory: the kernel's answer must be the prediction, or
    // the one for unknown (TIME_WAIT) flags set; a fast path taken from the
    // port's history is invisible to it.
    let fast = |v: &inspector::explain::rules::Verdict| v.rule.condition.starts_with("fast path");
    if fast(&bind) || fast(&listen) {
        t.inventory_fast_path += 1;
    } else {
        let fits = |v: &inspector::explain::rules::Verdict, kernel: Outcome| {
            v.result == kernel
                || v.if_unknown_flags_set == Some(kernel)
                || v.if_chain_order_differs == Some(kernel)
                || v.if_udp_walk_differs == Some(kernel)
        };
        let (ib, il) = &from_inventory;
        t.inventory_checks += 1;
        if ib.if_unknown_flags_set.is_some() || il.if_unknown_flags_set.is_some() {
            t.hedged += 1;
        }
        if !fits(ib, outcome(r[0])) {
            t.disagreements.push(format!(
                "port {port}: bind from the inventory predicted {} (or {:?}), kernel {}\n{log}",
                ib.result,
                ib.if_unknown_flags_set,
                outcome(r[0])
            ));
        } else if r[0] == 0 && proto == Proto::Tcp && !fits(il, outcome(r[1])) {
            t.disagreements.push(format!(
                "port {port}: listen from the inventory predicted {} (or {:?}), kernel {}\n{log}",
                il.result,
                il.if_unknown_flags_set,
                outcome(r[1])
            ));
        }
    }
    drop(held);
    true
}

/// Runs `f` in a fresh namespace with the helper listeners that
/// "connected" sockets connect to, with the kernel's UDP walk measured.
fn in_case_netns<T, F>(f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Tally, &mut inventory::Source) -> std::io::Result<T> + Send + 'static,
{
    netns::in_new_netns(move |_| {
        let mut helpers = Vec::new();
        for i in 0..3 {
            let l = Socket::new(Domain::IPV6, Type::STREAM, None)?;
            l.set_only_v6(false)?;
            let a: SocketAddr = format!("[::]:{}", HELPER_PORT + i)
                .parse()
                .expect("address");
            l.bind(&a.into())?;
            l.listen(4096)?;
            helpers.push(l);
        }
        let walk = inventory::measured_udp_walk().map_err(std::io::Error::other)?;
        let mut t = Tally {
            udp_walk: Some(walk),
            ..Tally::default()
        };
        let mut source = inventory::Source::open();
        if let Some(why) = source.refused() {
            eprintln!("socket iterators refused, sock_diag fallback: {why}");
        }
        f(&mut t, &mut source)
    })?
}

/// One worker: its own namespace, its own range of ports.
fn worker(seed: u64, first_port: u16, cases: usize) -> std::io::Result<Tally> {
    in_case_netns(move |t, source| {
        let mut rng = Rng(seed | 1);
        let mut port = first_port;
        while t.cases < cases {
            if !run_case(&mut rng, port, t, source) {
                t.skipped += 1;
            }
            port += 1;
            if t.skipped > cases {
                return Err(std::io::Error::other("too many cases could not be built"));
            }
        }
        Ok(std::mem::take(t))
    })
}

/// `cases` random cases from `seed` over two workers, each in its own
/// namespace; every disagreement with the kernel is printed and counted.
fn differential(seed: u64, cases: usize) -> Tally {
    eprintln!("differential test: seed {seed} (replay with INSPECTOR_SEED={seed}), {cases} cases");
    let start = Instant::now();
    let workers = 2;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let s = seed
                .wrapping_add(w as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let per = cases.div_ceil(workers);
            std::thread::spawn(move || worker(s, 20000 + (w as u16) * 20000, per))
        })
        .collect();
    let mut total = Tally {
        exact: true,
        ..Tally::default()
    };
    for h in handles {
        let t = h.join().expect("worker").expect("worker namespace");
        total.cases += t.cases;
        total.checks += t.checks;
        total.skipped += t.skipped;
        total.inventory_checks += t.inventory_checks;
        total.inventory_fast_path += t.inventory_fast_path;
        total.hedged += t.hedged;
        total.exact &= t.exact;
        total.udp_walk = t.udp_walk;
        total.disagreements.extend(t.disagreements);
    }
    let took = start.elapsed();
    for d in &total.disagreements {
        eprintln!("DISAGREEMENT {d}");
    }
    eprintln!(
        "differential test: seed {seed}: {} cases, {} kernel decisions compared, {} disagreements, {} set-ups skipped; UDP walk {:?}; inventory ({}): {} cases found as built and predicted from it alone, {} hedged, {} left out (kernel fast path); {:.1} s",
        total.cases,
        total.checks,
        total.disagreements.len(),
        total.skipped,
        total.udp_walk,
        if total.exact {
            "socket iterators"
        } else {
            "sock_diag fallback"
        },
        total.inventory_checks,
        total.hedged,
        total.inventory_fast_path,
        took.as_secs_f64()
    );
    assert!(total.cases >= cases, "only {} cases ran", total.cases);
    total
}

fn assert_agrees(t: &Tally, seed: u64) {
    assert!(
        t.disagreements.is_empty(),
        "{} disagreements with the kernel (seed {seed})",
        t.disagreements.len()
    );
    if t.exact {
        assert_eq!(
            t.hedged, 0,
            "exact flags from the kernel leave nothing to hedge"
        );
    }
}

#[test]
fn predictions_match_the_kernel() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let (seed, cases) = common::seed_and_cases(2000);
    let t = differential(seed, cases);
    assert_agrees(&t, seed);
}

/// Seeds that once found a disagreement, replayed as far as their last one
/// (a seed draws the same cases whatever their count): a fix stays fixed.
const REGRESSION_SEEDS: &[(u64, usize)] = &[
    // UDP: a SO_REUSEPORT match at the head of the port's chain, a socket
    // that refuses the bind behind it; Linux 6.18 walks on (UdpWalk).
    (1_796_536_293_358_183_291, 2000),
];

#[test]
fn regression_seeds_match_the_kernel() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    // INSPECTOR_CASES caps them, as it sizes the random run (the guests'
    // emulated CPUs replay a prefix).
    let (_, cap) = common::seed_and_cases(usize::MAX);
    for &(seed, cases) in REGRESSION_SEEDS {
        let t = differential(seed, cases.min(cap));
        assert_agrees(&t, seed);
    }
}

fn spec(proto: Proto, addr: &str, reuseaddr: bool, reuseport: bool, uid: u32) -> Spec {
    let mut sock = Sock::new(proto, addr.parse().expect("address"), 0);
    sock.reuseaddr = Some(reuseaddr);
    sock.reuseport = Some(reuseport);
    sock.uid = uid;
    Spec {
        sock,
        set_v6only: false,
        target: SockState::Bound,
        server_tw: None,
    }
}

fn connected(mut s: Spec) -> Spec {
    s.target = SockState::Connected;
    s
}

/// The kinds of disagreement the random cases found, each built as it was
/// found and checked against the kernel on its own port.
#[test]
fn regression_cases_match_the_kernel() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    use Proto::Udp;
    let cases: Vec<(&str, Fixed)> = vec![
        (
            // Seed 1796536293358183291, port 40684: B (uid 0) is the head
            // of the chain and a SO_REUSEPORT match for C; A (uid 65534)
            // behind it is not.
            "udp_reuseport_match_at_the_head_other_uid_behind",
            Fixed {
                proto: Udp,
                existing: vec![
                    spec(Udp, "0.0.0.0", true, true, NOBODY),
                    spec(Udp, "0.0.0.0", true, true, 0),
                ],
                new: spec(Udp, "127.0.0.2", false, true, 0),
            },
        ),
        (
            // Seed 1796536293358183291, port 40469: behind the match, a
            // connected SO_REUSEADDR-only socket.
            "udp_reuseport_match_at_the_head_connected_reuseaddr_behind",
            Fixed {
                proto: Udp,
                existing: vec![
                    connected(spec(Udp, "127.0.0.1", true, false, 0)),
                    spec(Udp, "0.0.0.0", true, true, 0),
                ],
                new: spec(Udp, "0.0.0.0", false, true, 0),
            },
        ),
        (
            // Seed 1796536293358183291, port 20021: the IPv6 wildcard meets
            // the IPv4 sockets; the match is first, the blocker second.
            "udp_dual_stack_wildcard_behind_a_reuseport_match",
            Fixed {
                proto: Udp,
                existing: vec![
                    connected(spec(Udp, "127.0.0.2", true, false, 0)),
                    connected(spec(Udp, "127.0.0.2", true, true, 0)),
                ],
                new: spec(Udp, "::", false, true, 0),
            },
        ),
        (
            // The same, with the blocker at the head: EADDRINUSE under
            // every kernel's rule.
            "udp_blocker_at_the_head",
            Fixed {
                proto: Udp,
                existing: vec![
                    spec(Udp, "0.0.0.0", true, true, 0),
                    spec(Udp, "0.0.0.0", true, false, 0),
                ],
                new: spec(Udp, "127.0.0.2", false, true, 0),
            },
        ),
        (
            // Every overlapping socket a match: ok under every rule.
            "udp_every_overlap_a_reuseport_match",
            Fixed {
                proto: Udp,
                existing: vec![
                    spec(Udp, "0.0.0.0", true, true, 0),
                    spec(Udp, "127.0.0.2", false, true, 0),
                ],
                new: spec(Udp, "127.0.0.2", false, true, 0),
            },
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    let t = in_case_netns(move |t, source| {
        for (i, (name, mut case)) in cases.into_iter().enumerate() {
            let before = t.disagreements.len();
            assert!(
                run_case(&mut case, 30000 + i as u16, t, source),
                "{name}: the set-up could not be built"
            );
            for d in &mut t.disagreements[before..] {
                *d = format!("{name}: {d}");
            }
        }
        Ok(std::mem::take(t))
    })
    .expect("case namespace");
    for d in &t.disagreements {
        eprintln!("DISAGREEMENT {d}");
    }
    eprintln!(
        "regression cases: {} ({}), UDP walk {:?}: {} disagreements",
        names.len(),
        names.join(", "),
        t.udp_walk,
        t.disagreements.len()
    );
    assert_eq!(t.cases, names.len());
    assert_agrees(&t, 0);
}

const BIN: &str = env!("CARGO_BIN_EXE_inspector");

/// Runs `inspector explain` with `args`; returns (success, stdout, stderr).
fn explain_cmd(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("explain")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run inspector");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_json_names_the_listener_and_the_time_wait_sockets() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let (json, text) = netns::in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener.set_reuse_address(true).expect("SO_REUSEADDR");
        let a: SocketAddr = "0.0.0.0:7400".parse().expect("address");
        listener.bind(&a.into()).expect("bind");
        listener.listen(16).expect("listen");
        let to: SocketAddr = "127.0.0.1:7400".parse().expect("address");
        let mut clients = Vec::new();
        for _ in 0..2 {
            let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            c.connect(&to.into()).expect("connect");
            // The server closes first: its side goes to TIME_WAIT once
            // the client closes too.
            drop(listener.accept().expect("accept"));
            clients.push(c);
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(clients);
        let start = Instant::now();
        while timewait_count(7400) < 2 {
            assert!(start.elapsed() < Duration::from_secs(5), "no TIME_WAIT");
            std::thread::sleep(Duration::from_millis(5));
        }
        let json = explain_cmd(&["7400", "--netns", &ns, "--json"]);
        let text = explain_cmd(&["7400", "--netns", &ns, "--addr", "127.0.0.1", "--reuseaddr"]);
        drop(listener);
        (json, text)
    })
    .expect("namespace");
    let (ok, stdout, stderr) = json;
    assert!(ok, "inspector explain failed: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let holders = v["holders"].as_array().expect("holders");
    let listeners: Vec<_> = holders.iter().filter(|h| h["state"] == "LISTEN").collect();
    let tw: Vec<_> = holders.iter().filter(|h| h["timewait"] == true).collect();
    assert_eq!(listeners.len(), 1, "{stdout}");
    assert_eq!(tw.len(), 2, "{stdout}");
    let l = listeners[0];
    assert_eq!(l["pid"], u64::from(std::process::id()), "{l}");
    assert_eq!(l["laddr"], "0.0.0.0");
    assert_eq!(l["lport"], 7400);
    assert_eq!(l["proto"], "tcp");
    assert_eq!(l["family"], "inet");
    assert_eq!(l["reuseaddr"], true);
    assert_eq!(l["reuseport"], false);
    assert_eq!(l["flags_source"], "kernel");
    assert_eq!(v["flags_source"], "kernel", "{stdout}");
    assert_eq!(v["hijack_risk"], serde_json::json!([]), "{stdout}");
    assert!(l["ino"].as_u64().is_some_and(|i| i > 0), "{l}");
    for t in &tw {
        assert_eq!(t["pid"], serde_json::Value::Null, "{t}");
        assert_eq!(t["state"], "TIME_WAIT", "{t}");
        // The timewait socket's own flags: the accepted socket inherited
        // SO_REUSEADDR from the listener (`sk_clone_lock` copies it).
        assert_eq!(t["flags_source"], "kernel");
        assert_eq!(t["reuseaddr"], true, "{t}");
        assert_eq!(t["reuseport"], false, "{t}");
        assert_eq!(t["laddr"], "127.0.0.1");
        let left = t["expires_ms"].as_u64().expect("expires_ms");
        assert!(left > 0 && left <= 60_000, "{t}");
    }
    // A plain bind of 0.0.0.0:7400 is refused by the listener (and the
    // TIME_WAIT sockets), and listen() is never reached.
    let bind = &v["bind"];
    assert_eq!(bind["result"], "EADDRINUSE", "{bind}");
    assert!(
        bind["rule"]["function"]
            .as_str()
            .is_some_and(|f| f.contains("conflict")),
        "{bind}"
    );
    let blockers = bind["blockers"].as_array().expect("blockers");
    assert!(
        blockers.iter().any(|b| b["cookie"] == l["cookie"]),
        "{bind}"
    );
    assert!(!bind["advice"].as_array().expect("advice").is_empty());
    assert_eq!(v["listen"]["result"], "not_reached");
    // The text form: one screen with the table and both verdicts.
    let (ok, stdout, stderr) = text;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("LISTEN") && stdout.contains("TIME_WAIT"),
        "{stdout}"
    );
    assert!(stdout.contains("bind()    EADDRINUSE"), "{stdout}");
    assert!(stdout.contains("listening"), "{stdout}");
    assert!(stdout.lines().count() < 40, "{stdout}");
}

/// `inspector explain` as an operator runs it at an 80-column terminal.
fn explain_at_80(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("explain")
        .args(args)
        .env("COLUMNS", "80")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run inspector");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port with a listener and 30 TIME_WAIT sockets of connections it
/// accepted fits a screen: one row per kind of socket with its count and
/// expiry range, the blockers rolled up the same way, nothing printed twice;
/// `--limit` and `--all` size the table; JSON keeps every socket.
#[test]
fn explain_rolls_up_time_wait_sockets_into_one_row() {
    if !needs_root("create network namespaces") {
        return;
    }
    const PORT: u16 = 7410;
    let (text, limited, all, json) = netns::in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let listener = common::tcp();
        listener.set_reuse_address(true).expect("SO_REUSEADDR");
        listener
            .bind(&common::addr(&format!("0.0.0.0:{PORT}")))
            .expect("bind");
        listener.listen(64).expect("listen");
        let mut clients = Vec::new();
        for _ in 0..30 {
            let c = common::tcp();
            c.connect(&common::addr(&format!("127.0.0.1:{PORT}")))
                .expect("connect");
            // The server closes first: its side goes to TIME_WAIT once
            // the client closes too.
            drop(listener.accept().expect("accept"));
            clients.push(c);
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(clients);
        assert!(wait_for_timewait(PORT, 30), "30 timewait sockets");
        let port = PORT.to_string();
        let runs = (
            explain_at_80(&[&port, "--netns", &ns]),
            explain_at_80(&[&port, "--netns", &ns, "--limit", "1"]),
            explain_at_80(&[&port, "--netns", &ns, "--all"]),
            explain_at_80(&[&port, "--netns", &ns, "--json"]),
        );
        drop(listener);
        runs
    })
    .expect("namespace");
    let (ok, stdout, stderr) = text;
    assert!(ok, "{stderr}");
    eprintln!("{stdout}");
    assert!(stdout.lines().count() <= 40, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.chars().count() <= 80),
        "80 columns: {stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                && l.contains("TIME_WAIT 127.0.0.1:7410")
        })
        .collect();
    assert_eq!(rows.len(), 1, "one row for the 30: {stdout}");
    assert!(rows[0].trim_start().starts_with("30 TIME_WAIT"), "{stdout}");
    assert!(
        rows[0].trim_end().ends_with(" s"),
        "the expiry range: {stdout}"
    );
    assert!(stdout.contains("127.0.0.1:*"), "the peers: {stdout}");
    assert!(
        stdout.contains("blocked by: 30 TIME_WAIT 127.0.0.1:7410"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("blocked by:").count(), 2, "{stdout}");
    assert!(stdout.contains("bind()    EADDRINUSE"), "{stdout}");
    let (ok, stdout, stderr) = limited;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("... 1 more row (30 sockets): --all lists every row"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = all;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("more row"), "{stdout}");
    let (ok, stdout, stderr) = json;
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(v["holders"].as_array().map(Vec::len), Some(31), "{stdout}");
    assert_eq!(v["bind"]["blockers"].as_array().map(Vec::len), Some(31));
}

/// A listener of another user on the port: the advice says to find it
/// (and stop it if it should not be there) before anything else, and never
/// offers SO_REUSEPORT, which cannot share a port across users.
#[test]
fn a_stray_holder_of_another_user_is_found_first() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let (text, json) = netns::in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let plan = Plan {
            spec: BindSpec {
                addr: "0.0.0.0:7411".parse().expect("address"),
                stream: true,
                reuseaddr: false,
                reuseport: true,
                v6only: None,
                listen: Some(16),
                count_on_release: false,
                connect: None,
                comm: None,
            },
            close_after: false,
        };
        let (child, r) = run_plan(&plan, NOBODY).expect("child");
        assert_eq!(r[..2], [0, 0], "nobody listens");
        let runs = (
            explain_at_80(&["7411", "--netns", &ns]),
            explain_at_80(&["7411", "--netns", &ns, "--json"]),
        );
        drop(child);
        runs
    })
    .expect("namespace");
    let (ok, stdout, stderr) = text;
    assert!(ok, "{stderr}");
    eprintln!("{stdout}");
    let (ok, json, stderr) = json;
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    let advice: Vec<&str> = v["bind"]["advice"]
        .as_array()
        .expect("advice")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        advice
            .first()
            .is_some_and(|a| a.contains("as uid 65534, another user")
                && a.contains("ps -o pid,user,args -p")),
        "{advice:#?}"
    );
    assert!(
        !advice
            .iter()
            .any(|a| a.contains("set SO_REUSEPORT") || a.contains("with SO_REUSEPORT")),
        "{advice:#?}"
    );
    assert!(stdout.contains("`ps -o pid,user,args -p"), "{stdout}");
}

#[test]
fn explain_bad_input_is_one_line() {
    for (args, needle) in [
        (vec!["0"], "1 to 65535"),
        (vec!["70000"], "1 to 65535"),
        (vec!["80", "--tcp", "--udp"], "--tcp and --udp"),
        (
            vec!["80", "--netns", "/proc/self/ns/net", "--pid", "1"],
            "--netns and --pid",
        ),
        (
            vec!["80", "--pid", "4194305"],
            "no process with pid 4194305",
        ),
        (
            vec!["80", "--netns", "/run/netns/does-not-exist"],
            "/run/netns/does-not-exist",
        ),
    ] {
        let (ok, _, err) = explain_cmd(&args);
        assert!(!ok, "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn explain_probe_binds_as_the_requested_uid() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let runs = netns::in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        l.set_reuse_port(true).expect("SO_REUSEPORT");
        let a: SocketAddr = "0.0.0.0:7401".parse().expect("address");
        l.bind(&a.into()).expect("bind");
        l.listen(16).expect("listen");
        let run = |uid: &str| {
            explain_cmd(&[
                "7401",
                "--netns",
                &ns,
                "--reuseport",
                "--uid",
                uid,
                "--probe",
                "--json",
            ])
        };
        let runs = (run("0"), run("65534"));
        drop(l);
        runs
    })
    .expect("namespace");
    // SO_REUSEPORT joins a group only with the same uid
    // (inet_bind_conflict: uid_eq); the probe confirms both ways.
    for ((ok, stdout, stderr), bind, listen) in
        [(runs.0, "ok", Some("ok")), (runs.1, "EADDRINUSE", None)]
    {
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(v["bind"]["result"], bind, "{stdout}");
        assert_eq!(v["probe"]["bind"], bind, "{stdout}");
        assert_eq!(v["probe"]["listen"].as_str(), listen, "{stdout}");
        assert_eq!(v["probe"]["agrees"], true, "{stdout}");
    }
}

/// `explain` reads the kernel's tables and never reaches into the holder:
/// no `pidfd_open`/`pidfd_getfd` (strace of the whole run), the holder's
/// descriptor table and its socket's fdinfo are as they were, and a
/// bound-only TCP holder (in the bind hash only) and a UDP port shared by
/// two uids are found with their owners.
#[test]
fn explain_leaves_holders_alone_and_flags_a_udp_hijack_risk() {
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let strace = std::process::Command::new("strace").arg("-V").output();
    if strace.is_err() {
        eprintln!("SKIPPED: strace is not installed (apt-get install -y strace)");
        return;
    }
    let (tcp_out, udp_out, fdinfo_before, fdinfo_after) = netns::in_new_netns(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        bound.set_reuse_port(true).expect("SO_REUSEPORT");
        let a: SocketAddr = "127.0.0.1:7500".parse().expect("address");
        bound.bind(&a.into()).expect("bind");
        let fdinfo = format!("/proc/self/fdinfo/{}", bound.as_raw_fd());
        let before = std::fs::read_to_string(&fdinfo).expect("fdinfo");
        let traced = |args: &[&str]| {
            let out = std::process::Command::new("strace")
                .args([
                    "-f",
                    "-qq",
                    "-e",
                    "trace=pidfd_open,pidfd_getfd",
                    "--",
                    BIN,
                    "explain",
                ])
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("strace");
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let tcp_out = traced(&["7500", "--netns", &ns, "--json"]);
        let after = std::fs::read_to_string(&fdinfo).expect("fdinfo");
        // UDP 7501 shared through SO_REUSEADDR by root and nobody.
        let u = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
        u.set_reuse_address(true).expect("SO_REUSEADDR");
        let ua: SocketAddr = "127.0.0.1:7501".parse().expect("address");
        u.bind(&ua.into()).expect("bind");
        let plan = Plan {
            spec: BindSpec {
                addr: ua,
                stream: false,
                reuseaddr: true,
                reuseport: false,
                v6only: None,
                listen: None,
                count_on_release: false,
                connect: None,
                comm: None,
            },
            close_after: false,
        };
        let (child, r) = run_plan(&plan, NOBODY).expect("child");
        assert_eq!(r[0], 0, "nobody's SO_REUSEADDR bind");
        let udp_out = traced(&["7501", "--udp", "--netns", &ns, "--json"]);
        drop((child, u, bound));
        (tcp_out, udp_out, before, after)
    })
    .expect("namespace");
    let (stdout, stderr) = tcp_out;
    assert!(
        !stderr.contains("pidfd_open") && !stderr.contains("pidfd_getfd"),
        "explain called pidfd_*: {stderr}"
    );
    assert_eq!(
        fdinfo_before, fdinfo_after,
        "the holder's descriptor changed"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let holders = v["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{stdout}");
    let h = &holders[0];
    assert_eq!(h["state"], "CLOSE", "bound only: {h}");
    assert_eq!(h["pid"], u64::from(std::process::id()), "{h}");
    assert_eq!(
        (h["reuseaddr"].clone(), h["reuseport"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(v["bind"]["result"], "EADDRINUSE", "{stdout}");
    let (stdout, stderr) = udp_out;
    assert!(
        !stderr.contains("pidfd_"),
        "explain called pidfd_*: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let risks = v["hijack_risk"].as_array().expect("hijack_risk");
    assert_eq!(risks.len(), 1, "{stdout}");
    assert_eq!(risks[0]["uids"], serde_json::json!([0, NOBODY]), "{stdout}");
    assert!(
        v["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.starts_with("hijack risk"))),
        "{stdout}"
    );
}

/// A failed bind is explained by the holders that existed when it failed:
/// the accepted connection, closed server-first right after the failure,
/// leaves a timewait socket on the port before the pipeline is read, and
/// the explanation must not name it (explain::annotate, its `tw_enter`
/// after the failure).
#[test]
fn a_failed_bind_is_explained_without_a_timewait_socket_created_after_it() {
    let Some(mut pipeline) = common::pipeline(inspector::model::filter::Filter::default()) else {
        return;
    };
    // Loaded before the failure, as `trace` does.
    let mut annotator = inspector::pipeline::annotate::Annotator::default();
    let (errno, batch, tw_at_annotation) = netns::in_new_netns(move |ns| {
        let listener = common::tcp();
        listener
            .bind(&common::addr("127.0.0.1:7600"))
            .expect("bind");
        listener.listen(16).expect("listen");
        let client = common::tcp();
        client
            .connect(&common::addr("127.0.0.1:7600"))
            .expect("connect");
        let (conn, _) = listener.accept().expect("accept");
        let second = common::tcp();
        let errno = common::errno_of(second.bind(&common::addr("127.0.0.1:7600")));
        // Server first: the accepted side becomes a timewait socket
        // (FIN_WAIT2, then TIME_WAIT once the client's FIN arrives).
        drop(conn);
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        assert_eq!(client.recv(&mut buf).expect("the server's FIN"), 0);
        drop(client);
        assert!(wait_for_timewait(7600, 1), "no timewait socket on 7600");
        let mut batch = Vec::new();
        pipeline.poll(&mut batch, false);
        batch.retain(|r| r.netns == ns);
        annotator.annotate(&mut batch, Some(&pipeline.tracker));
        let tw = timewait_count(7600);
        drop((listener, second));
        (errno, batch, tw)
    })
    .expect("namespace");
    assert_eq!(errno, Some(libc::EADDRINUSE));
    assert_eq!(
        tw_at_annotation, 1,
        "the timewait socket was there to leave out"
    );
    let failed: Vec<_> = batch
        .iter()
        .filter(|r| r.kind.as_str() == "bind" && r.errno.is_some() && r.req_port == Some(7600))
        .collect();
    assert_eq!(failed.len(), 1, "{batch:#?}");
    let f = failed[0];
    // The scenario as built: the timewait socket entered after the failure.
    assert!(
        batch
            .iter()
            .any(|r| r.kind.as_str() == "tw_enter" && r.lport == 7600 && r.ts_ns > f.ts_ns),
        "{batch:#?}"
    );
    let why = f.explanation.as_deref().unwrap_or_default();
    let held = why
        .split("held by ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default();
    assert!(
        held.starts_with("LISTEN 127.0.0.1:7600 (pid "),
        "explanation: {why:?}"
    );
    assert!(
        !held.contains(',') && !why.contains("TIME_WAIT") && !why.contains("FIN_WAIT"),
        "only the listener held the port at the failure: {why:?}"
    );
}

/// A UDP bind that takes another user's traffic is marked as it happens:
/// root holds 127.0.0.1:7620 with SO_REUSEADDR, uid 65534 binds the same
/// address with SO_REUSEADDR (allowed: `udp_lib_lport_inuse()` compares no
/// uids for SO_REUSEADDR) and, bound last, gets every unicast datagram.
/// Each bind is annotated alone, as when they arrive in separate reads of
/// the ring buffer: root's own bind, read once the other socket exists, is
/// not marked (that socket came later). The child is forked from the
/// namespace's thread, which exits before the child's bind is annotated.
#[test]
fn a_cross_uid_udp_reuseaddr_bind_is_marked_as_a_hijack() {
    use inspector::{
        kernel::sys::{BindSpec, fork_as},
        pipeline::annotate::Annotator,
    };
    if !needs_root("create network namespaces and sockets of uid 65534") {
        return;
    }
    let Some(mut pipeline) = common::pipeline(inspector::model::filter::Filter::default()) else {
        return;
    };
    let mut annotator = Annotator::default();
    let (root, child, mut first, mut later, pipeline, mut annotator) =
        netns::in_new_netns(move |ns| {
            let root = common::udp();
            root.set_reuse_address(true).expect("SO_REUSEADDR");
            root.bind(&common::addr("127.0.0.1:7620"))
                .expect("root bind");
            let spec = BindSpec {
                addr: "127.0.0.1:7620".parse().expect("addr"),
                stream: false,
                reuseaddr: true,
                reuseport: false,
                v6only: None,
                listen: None,
                count_on_release: false,
                connect: None,
                comm: None,
            };
            let child = fork_as(65534, &spec, true).expect("fork");
            assert_eq!(child.report.first_error(), None, "the kernel allows it");
            let binds = common::collect(&mut pipeline, ns, Duration::from_secs(3), |rs| {
                common::of_type(rs, "bind")
                    .iter()
                    .any(|b| b.uid == Some(65534))
            });
            let pick = |uid: u32| {
                binds
                    .iter()
                    .find(|b| b.kind.as_str() == "bind" && b.uid == Some(uid) && b.lport == 7620)
                    .cloned()
                    .unwrap_or_else(|| panic!("no bind of uid {uid}: {binds:#?}"))
            };
            let mut first = vec![pick(0)];
            // Its thread is alive: the namespace can be read for it.
            annotator.annotate(&mut first, Some(&pipeline.tracker));
            (root, child, first, vec![pick(65534)], pipeline, annotator)
        })
        .expect("namespace");
    // The forking thread is gone; the child must still hold its socket.
    std::thread::sleep(Duration::from_millis(200));
    annotator.annotate(&mut later, Some(&pipeline.tracker));
    let first = first.remove(0);
    assert_eq!(
        first.explanation, None,
        "root bound first: nobody shared it then: {first:?}"
    );
    let why = later[0].explanation.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("hijack risk: UDP 127.0.0.1:7620"),
        "uid 65534's bind: {why:?}"
    );
    assert!(why.contains("uid 0"), "{why}");
    drop(child);
    drop(root);
}
