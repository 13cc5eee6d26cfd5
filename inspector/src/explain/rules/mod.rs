//! The kernel's port rules for `bind()` and `listen()`, as a pure function
//! of the sockets on a port (Linux 6.x; read against 6.18 and checked
//! against it by the differential test in `tests/explain.rs`).
//!
//! What the kernel decides with, and where:
//! - TCP `bind()` and `listen()` both end in `inet_csk_get_port()`
//!   (net/ipv4/inet_connection_sock.c; `listen()` through
//!   `inet_csk_listen_start()`). It first tries the bind bucket's cached
//!   fast paths (`tb->fastreuse`, `sk_reuseport_match()`), which skip the
//!   conflict check; otherwise `inet_csk_bind_conflict()` /
//!   `inet_bhash2_addr_any_conflict()` compare the socket with every owner
//!   of the port through `inet_bind_conflict()` and the address rules.
//! - UDP `bind()` ends in `udp_lib_get_port()` (net/ipv4/udp.c), which walks
//!   the port's primary hash chain in `udp_lib_lport_inuse()`. How the walk
//!   ends depends on the kernel ([`UdpWalk`]): in 6.1 and 6.12 the first
//!   socket whose address overlaps decides (a SO_REUSEPORT match with the
//!   same uid returns "free" at once); on the 6.18 kernel this project is
//!   tested on, every overlapping socket must allow the bind. Which one the
//!   running kernel does is measured, not assumed ([`UdpWalk`]).
//!
//! Both fast paths depend on history the sockets do not show (the order of
//! binds and listens): a [`Port`] built with [`Port::new`] replays that
//! history like the kernel does; one built from an inventory with
//! [`Port::from_inventory`] has no history, so only the full check is
//! applied (the kernel may still take a fast path that allows more).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// `LOOPBACK4_IPV6` (include/net/ipv6.h): the IPv4 receive address the
/// kernel gives an IPv6 socket once connect() picked a non-mapped source.
const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

pub use crate::kernel::Proto;

/// What a socket on the port is doing, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SockState {
    /// Bound, not listening (TCP_CLOSE; a bound UDP socket).
    Bound,
    /// TCP_LISTEN.
    Listen,
    /// A full socket in any connection state (ESTABLISHED, CLOSE_WAIT, ...;
    /// a connected UDP socket).
    Connected,
    /// A timewait socket (`inet_timewait_sock`, substate TIME_WAIT or
    /// FIN_WAIT2): no owner, its flags copied from the closed socket.
    TimeWait,
}

/// One socket: an existing holder of the port, or the one about to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sock {
    pub proto: Proto,
    /// Local address as the kernel holds it. An IPv6 socket has a V6
    /// address (v4-mapped for a dual-stack socket bound to an IPv4 address);
    /// an IPv4 socket a V4 one.
    pub addr: IpAddr,
    pub port: u16,
    /// SO_REUSEADDR (`sk_reuse`, `tw_reuse`); `None` when not known.
    pub reuseaddr: Option<bool>,
    /// SO_REUSEPORT (`sk_reuseport`, `tw_reuseport`); `None` when not known.
    pub reuseport: Option<bool>,
    /// IPV6_V6ONLY (`sk_ipv6only`). The kernel sets it itself when an IPv6
    /// socket binds a specific non-mapped address (`__inet6_bind`).
    pub v6only: bool,
    pub uid: u32,
    /// SO_BINDTODEVICE ifindex (`sk_bound_dev_if`), 0 for none.
    pub bound_dev_if: i32,
    pub state: SockState,
    /// An IPv6 socket whose source address connect() chose: its IPv4
    /// receive address is then `LOOPBACK4_IPV6`.
    pub connected_from_any: bool,
    /// Time left of a TIME_WAIT socket, for advice.
    pub expires_ms: Option<u32>,
    /// `v6only` was not readable (sock_diag reports IPV6_V6ONLY only for
    /// listening and unconnected sockets): it is then assumed off, and
    /// [`Port::predict`] also tries it on.
    pub v6only_unknown: bool,
}

impl Sock {
    /// A socket about to bind `addr:port` with no options, as uid 0.
    pub fn new(proto: Proto, addr: IpAddr, port: u16) -> Self {
        Self {
            proto,
            addr,
            port,
            reuseaddr: Some(false),
            reuseport: Some(false),
            v6only: false,
            uid: 0,
            bound_dev_if: 0,
            state: SockState::Bound,
            connected_from_any: false,
            expires_ms: None,
            v6only_unknown: false,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    pub(super) fn reuse(&self) -> bool {
        self.reuseaddr.unwrap_or(false)
    }

    pub(super) fn rport(&self) -> bool {
        self.reuseport.unwrap_or(false)
    }

    /// The socket's `sk_v6_rcv_saddr`, or `None` for an IPv4 socket
    /// (`inet6_rcv_saddr()`).
    fn v6(&self) -> Option<Ipv6Addr> {
        match self.addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }

    /// The socket's `inet_rcv_saddr`: the IPv4 address; for IPv6 the mapped
    /// IPv4 address, 0 for `::`, and otherwise 0 after `__inet6_bind` (which
    /// also sets `sk_ipv6only`, so it is never compared) or
    /// `LOOPBACK4_IPV6` after connect().
    fn rcv_saddr(&self) -> u32 {
        match self.addr {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => u32::from(v4),
                None if a.is_unspecified() => 0,
                None if self.connected_from_any => u32::from(LOOPBACK4_IPV6),
                None => 0,
            },
        }
    }

    /// Bound to a wildcard: 0.0.0.0, `::` or `::ffff:0.0.0.0`.
    pub fn is_wildcard(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a.is_unspecified(),
            IpAddr::V6(a) => {
                a.is_unspecified() || a.to_ipv4_mapped().is_some_and(|v| v.is_unspecified())
            }
        }
    }

    /// An IPv4 socket, or an IPv6 one on a v4-mapped address.
    fn is_v4_like(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
        }
    }

    /// The flags after bind(): `__inet6_bind` sets `sk_ipv6only` for a
    /// specific non-mapped IPv6 address.
    fn after_bind(&self) -> Self {
        let mut s = self.clone();
        if let IpAddr::V6(a) = s.addr
            && !a.is_unspecified()
            && a.to_ipv4_mapped().is_none()
        {
            s.v6only = true;
        }
        s
    }
}

/// `ipv6_addr_type()` reduced to what the rules distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrType {
    Any,
    Mapped,
    Other,
}

fn addr_type(a: &Ipv6Addr) -> AddrType {
    if a.is_unspecified() {
        AddrType::Any
    } else if a.to_ipv4_mapped().is_some() {
        AddrType::Mapped
    } else {
        AddrType::Other
    }
}

/// `ipv4_rcv_saddr_equal()` (net/ipv4/inet_connection_sock.c).
fn ipv4_rcv_saddr_equal(
    sk1: u32,
    sk2: u32,
    sk2_ipv6only: bool,
    match1: bool,
    match2: bool,
) -> bool {
    if !sk2_ipv6only {
        if sk1 == sk2 {
            return true;
        }
        return (match1 && sk1 == 0) || (match2 && sk2 == 0);
    }
    false
}

/// `ipv6_rcv_saddr_equal()` (net/ipv4/inet_connection_sock.c).
#[allow(clippy::too_many_arguments, reason = "mirrors the kernel function")]
fn ipv6_rcv_saddr_equal(
    sk1_6: &Ipv6Addr,
    sk2_6: Option<&Ipv6Addr>,
    sk1_4: u32,
    sk2_4: u32,
    sk1_ipv6only: bool,
    sk2_ipv6only: bool,
    match1: bool,
    match2: bool,
) -> bool {
    let t1 = addr_type(sk1_6);
    let t2 = sk2_6.map_or(AddrType::Mapped, addr_type);
    // "if both are mapped, treat as IPv4"
    if t1 == AddrType::Mapped && t2 == AddrType::Mapped {
        if !sk2_ipv6only {
            if sk1_4 == sk2_4 {
                return true;
            }
            return (match1 && sk1_4 == 0) || (match2 && sk2_4 == 0);
        }
        return false;
    }
    if t1 == AddrType::Any && t2 == AddrType::Any {
        return true;
    }
    if t2 == AddrType::Any && match2 && !(sk2_ipv6only && t1 == AddrType::Mapped) {
        return true;
    }
    if t1 == AddrType::Any && match1 && !(sk1_ipv6only && t2 == AddrType::Mapped) {
        return true;
    }
    sk2_6.is_some_and(|a| a == sk1_6)
}

/// `inet_rcv_saddr_equal(sk, sk2, match_wildcard)`.
pub(super) fn inet_rcv_saddr_equal(sk: &Sock, sk2: &Sock, wildcard: bool) -> bool {
    match sk.v6() {
        Some(a) => ipv6_rcv_saddr_equal(
            &a,
            sk2.v6().as_ref(),
            sk.rcv_saddr(),
            sk2.rcv_saddr(),
            sk.v6only,
            sk2.v6only,
            wildcard,
            wildcard,
        ),
        None => ipv4_rcv_saddr_equal(
            sk.rcv_saddr(),
            sk2.rcv_saddr(),
            sk2.v6only,
            wildcard,
            wildcard,
        ),
    }
}

/// Whether the addresses of a TCP socket about to take the port and an
/// owner overlap, the way `inet_csk_get_port()` looks: a specific address
/// (`inet_use_bhash2_on_bind()`) is compared with the owners of its own
/// bhash2 bucket (`inet_bind2_bucket_addr_match()`) and of the wildcard
/// buckets (`inet_bind2_bucket_match_addr_any()`), skipping IPV6_V6ONLY
/// owners for IPv4 (`__inet_bhash2_conflict()`); a wildcard with every owner
/// through `inet_rcv_saddr_equal(sk, sk2, true)`.
fn tcp_addr_overlap(sk: &Sock, sk2: &Sock) -> bool {
    if sk.is_wildcard() {
        return inet_rcv_saddr_equal(sk, sk2, true);
    }
    let exact = match (sk.addr, sk2.addr) {
        (IpAddr::V6(a), IpAddr::V6(b)) => a == b,
        (IpAddr::V6(a), IpAddr::V4(b)) => a.to_ipv4_mapped() == Some(b),
        (IpAddr::V4(a), IpAddr::V6(b)) => b.to_ipv4_mapped() == Some(a),
        (IpAddr::V4(a), IpAddr::V4(b)) => a == b,
    };
    let any = match sk2.addr {
        IpAddr::V6(b) if b.is_unspecified() => true,
        _ => sk2.is_wildcard() && sk.is_v4_like(),
    };
    if !(exact || any) {
        return false;
    }
    !(sk2.v6only && sk.is_v4_like())
}

/// The bound devices overlap: either unbound, or the same
/// (`inet_bind_conflict()`, `udp_lib_lport_inuse()`).
fn dev_overlap(sk: &Sock, sk2: &Sock) -> bool {
    sk.bound_dev_if == 0 || sk2.bound_dev_if == 0 || sk.bound_dev_if == sk2.bound_dev_if
}

/// `inet_bind_conflict(sk, sk2, uid, relax=true, reuseport_cb_ok=true,
/// reuseport_ok=true)` without the address part: whether the options of
/// the two sockets let them share the port.
/// A timewait holder is exempt from the uid comparison
/// (`sk2->sk_state == TCP_TIME_WAIT || uid_eq(uid, sk_uid(sk2))`); a
/// socket still closing (FIN_WAIT1, before the timewait socket replaces
/// it) is not.
fn tcp_flags_conflict(sk: &Sock, sk2: &Sock) -> bool {
    if sk.reuse() && sk2.reuse() && sk2.state != SockState::Listen {
        return false;
    }
    !(sk.rport() && sk2.rport() && (sk2.state == SockState::TimeWait || sk.uid == sk2.uid))
}

/// The condition that makes `sk2` block `sk` over TCP, in words.
fn tcp_why(sk: &Sock, sk2: &Sock) -> String {
    let reuse = if sk.reuse() && sk2.reuse() {
        "SO_REUSEADDR on both, but the holder is listening (sk2->sk_state == TCP_LISTEN)".to_owned()
    } else {
        format!(
            "SO_REUSEADDR not set on {}",
            missing(sk.reuseaddr, sk2.reuseaddr)
        )
    };
    let port = if sk.rport() && sk2.rport() {
        format!(
            "SO_REUSEPORT on both, but the uids differ (new {}, holder {}) and the holder is not TIME_WAIT",
            sk.uid, sk2.uid
        )
    } else {
        format!(
            "SO_REUSEPORT not set on {}",
            missing(sk.reuseport, sk2.reuseport)
        )
    };
    format!("{reuse}; {port}; {}", overlap_words(sk, sk2))
}

/// The condition that makes `sk2` block `sk` over UDP, in words
/// (`udp_lib_lport_inuse()`).
fn udp_why(sk: &Sock, sk2: &Sock) -> String {
    let reuse = format!(
        "SO_REUSEADDR not set on {}",
        missing(sk.reuseaddr, sk2.reuseaddr)
    );
    let port = if sk.rport() && sk2.rport() {
        format!(
            "SO_REUSEPORT on both but the uids differ (new {}, holder {})",
            sk.uid, sk2.uid
        )
    } else {
        format!(
            "SO_REUSEPORT not set on {}",
            missing(sk.reuseport, sk2.reuseport)
        )
    };
    format!("{reuse}; {port}; {}", overlap_words(sk, sk2))
}

fn missing(new: Option<bool>, holder: Option<bool>) -> &'static str {
    match (new.unwrap_or(false), holder) {
        (false, Some(false)) => "either socket",
        (false, None) => "the new socket (holder: unknown)",
        (false, Some(true)) => "the new socket",
        (true, None) => "the holder (unknown: assumed not)",
        (true, _) => "the holder",
    }
}

fn overlap_words(sk: &Sock, sk2: &Sock) -> String {
    let a = crate::explain::fmt_addr(sk.addr, sk.port);
    let b = crate::explain::fmt_addr(sk2.addr, sk2.port);
    if sk.addr == sk2.addr {
        format!("same address {a}")
    } else if sk2.is_wildcard() && sk2.is_v6() && !sk2.v6only && !sk.is_v6() {
        format!("the holder {b} is dual-stack (IPV6_V6ONLY=0) and covers {a}")
    } else if sk.is_wildcard() && sk.is_v6() && !sk.v6only && !sk2.is_v6() {
        format!("{a} without IPV6_V6ONLY also claims IPv4, including {b}")
    } else if sk2.is_wildcard() {
        format!("the holder's wildcard {b} covers {a}")
    } else if sk.is_wildcard() {
        format!("the wildcard {a} covers the holder's {b}")
    } else {
        format!("{a} overlaps {b}")
    }
}

/// The kernel function and condition behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub function: &'static str,
    pub condition: String,
}

/// The predicted result of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `ok`, an errno name, or `not_reached` (listen after a failed bind).
    pub result: String,
    pub rule: Rule,
    /// Indices (into [`Port::socks`]) of the sockets that block the call.
    pub blockers: Vec<usize>,
    /// For each blocker, the condition that makes it block.
    pub why: Vec<String>,
    /// What would change the result, in words (`super::advice`).
    pub advice: Vec<String>,
    /// Set when the result rests on a flag the inventory could not read
    /// (a TIME_WAIT socket's SO_REUSEADDR/SO_REUSEPORT): the result if the
    /// unknown flags are set instead.
    pub if_unknown_flags_set: Option<String>,
    /// Set when the result depends on where IPv4 and IPv6 UDP sockets sit
    /// in the port's hash chain, which an inventory (one dump per family)
    /// does not show: the result for the other order.
    pub if_chain_order_differs: Option<String>,
    /// Set when the result depends on how the kernel's
    /// `udp_lib_lport_inuse()` ends its walk ([`UdpWalk`]), which could not
    /// be measured: the result under the other rule.
    pub if_udp_walk_differs: Option<String>,
}

impl Verdict {
    fn ok(function: &'static str, condition: impl Into<String>) -> Self {
        Self {
            result: "ok".into(),
            rule: Rule {
                function,
                condition: condition.into(),
            },
            blockers: Vec::new(),
            why: Vec::new(),
            advice: Vec::new(),
            if_unknown_flags_set: None,
            if_chain_order_differs: None,
            if_udp_walk_differs: None,
        }
    }

    fn err(errno: &str, function: &'static str, condition: impl Into<String>) -> Self {
        Self {
            result: errno.into(),
            ..Self::ok(function, condition)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result == "ok"
    }
}

/// The state `inet_csk_update_fastreuse()` keeps in a TCP bind bucket
/// (`struct inet_bind_bucket`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bucket {
    fastreuse: bool,
    /// 0, `FASTREUSEPORT_ANY` or `FASTREUSEPORT_STRICT`.
    fastreuseport: FastReuseport,
    fast: Option<Sock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastReuseport {
    Off,
    Any,
    Strict,
}

/// `sk_reuseport_match()` (include/net/inet_hashtables.h /
/// inet_connection_sock.c).
fn sk_reuseport_match(tb: &Bucket, sk: &Sock) -> bool {
    let Some(fast) = &tb.fast else { return false };
    if tb.fastreuseport == FastReuseport::Off || !sk.rport() || fast.uid != sk.uid {
        return false;
    }
    if tb.fastreuseport == FastReuseport::Any {
        return true;
    }
    match fast.v6() {
        Some(f6) => ipv6_rcv_saddr_equal(
            &f6,
            sk.v6().as_ref(),
            fast.rcv_saddr(),
            sk.rcv_saddr(),
            fast.v6only,
            sk.v6only,
            true,
            false,
        ),
        None => ipv4_rcv_saddr_equal(fast.rcv_saddr(), sk.rcv_saddr(), sk.v6only, true, false),
    }
}

/// The call being predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Bind,
    Listen,
}

/// The sockets on one port of one namespace, and (for a port whose history
/// is replayed) the kernel's per-port cache.
#[derive(Debug, Clone)]
pub struct Port {
    /// TCP: any order. UDP: the order of the kernel's hash chain, head
    /// first (a sock_diag dump lists them in that order).
    pub socks: Vec<Sock>,
    /// `None` when the history is unknown (built from an inventory).
    bucket: Option<Bucket>,
    /// Built by replaying binds (`Port::new`), so the UDP chain order is
    /// the kernel's; false for an inventory.
    history: bool,
    /// `net.ipv4.ip_unprivileged_port_start` of the namespace.
    pub unprivileged_port_start: u16,
    /// How the running kernel's `udp_lib_lport_inuse()` ends its walk;
    /// `None` when it could not be measured: a UDP verdict that depends on
    /// it then names the other result ([`Verdict::if_udp_walk_differs`]).
    pub udp_walk: Option<UdpWalk>,
}

/// How `udp_lib_lport_inuse()` (net/ipv4/udp.c) ends its walk of the port's
/// primary hash chain (`udp_hashslot()`; sockets are added at its head by
/// `sk_add_node_rcu()`, except an IPv6 SO_REUSEPORT socket, which goes to
/// its tail). Sockets with SO_REUSEADDR on both sides, on another device,
/// or whose addresses do not overlap (`inet_rcv_saddr_equal(sk, sk2,
/// true)`) are skipped either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpWalk {
    /// Linux 6.1 and 6.12 (read in their source, and checked in QEMU by the
    /// differential test): the first overlapping socket decides. A
    /// SO_REUSEPORT match with the same uid (`sk2->sk_reuseport &&
    /// sk->sk_reuseport && uid_eq()`) returns 0 at once (`if (!bitmap)
    /// return 0;`), so a non-matching socket further down the chain is
    /// never compared, and the chain's order matters.
    FirstOverlapDecides,
    /// Measured on Linux 6.18 (this project's machines): a SO_REUSEPORT
    /// match does not end the walk; every overlapping socket must be a
    /// match, so the chain's order does not matter.
    EveryOverlapMustAllow,
}

impl UdpWalk {
    /// What the rule is called in explanations.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FirstOverlapDecides => {
                "this kernel's udp_lib_lport_inuse() stops at the first overlapping socket of the port's hash chain"
            }
            Self::EveryOverlapMustAllow => {
                "this kernel's udp_lib_lport_inuse() requires every overlapping socket to allow the bind"
            }
        }
    }
}

impl Default for Port {
    fn default() -> Self {
        Self::new()
    }
}

impl Port {
    /// An empty port whose history [`Port::bind`] / [`Port::listen`] replay.
    pub fn new() -> Self {
        Self {
            socks: Vec::new(),
            bucket: None,
            history: true,
            unprivileged_port_start: 1024,
            udp_walk: Some(UdpWalk::FirstOverlapDecides),
        }
    }

    /// The same port, judged with the UDP walk rule `walk` (`None`: not
    /// known).
    #[must_use]
    pub fn with_udp_walk(mut self, walk: Option<UdpWalk>) -> Self {
        self.udp_walk = walk;
        self
    }

    /// The sockets an inventory found; TCP fast-path state unknown.
    pub fn from_inventory(socks: Vec<Sock>) -> Self {
        Self {
            socks,
            bucket: None,
            history: false,
            unprivileged_port_start: 1024,
            udp_walk: None,
        }
    }

    /// Predicts `bind()` of `sk` and, when it succeeds, applies it (the
    /// socket joins the port). Returns the verdict and the new socket's
    /// index.
    pub fn bind(&mut self, sk: &Sock) -> (Verdict, Option<usize>) {
        let v = self.check(sk, Phase::Bind, None);
        if !v.is_ok() {
            return (v, None);
        }
        let sk = sk.after_bind();
        let idx = match sk.proto {
            Proto::Tcp => {
                self.update_fastreuse(&sk, Phase::Bind);
                self.socks.push(sk);
                self.socks.len() - 1
            }
            // udp_lib_get_port(): an IPv6 SO_REUSEPORT socket goes to the
            // tail of the chain, every other one to the head.
            Proto::Udp if sk.is_v6() && sk.rport() => {
                self.socks.push(sk);
                self.socks.len() - 1
            }
            Proto::Udp => {
                self.socks.insert(0, sk);
                0
            }
        };
        (v, Some(idx))
    }

    /// Predicts `listen()` of the bound TCP socket `idx` and, when it
    /// succeeds, applies it.
    pub fn listen(&mut self, idx: usize) -> Verdict {
        let Some(sk) = self.socks.get(idx).cloned() else {
            return Verdict::err("EINVAL", "inet_listen", "no such socket");
        };
        if sk.proto == Proto::Udp {
            return udp_listen();
        }
        let mut sk = sk;
        sk.state = SockState::Listen;
        let v = self.check(&sk, Phase::Listen, Some(idx));
        if v.is_ok() {
            self.update_fastreuse(&sk, Phase::Listen);
            self.socks[idx] = sk;
        }
        v
    }

    /// connect() of socket `idx` from `src` (its source address when bound
    /// to a wildcard): the socket keeps the port and takes the address.
    pub fn connect(&mut self, idx: usize, src: IpAddr) {
        if let Some(s) = self.socks.get_mut(idx) {
            if s.is_wildcard() {
                s.connected_from_any = s.is_v6() && src.is_ipv6();
                s.addr = src;
            }
            s.state = SockState::Connected;
        }
    }

    /// The TCP socket `idx` closed into TIME_WAIT (`tcp_time_wait()`); the
    /// timewait socket keeps its flags and takes its place in the bucket
    /// without touching the bucket's cache.
    pub fn time_wait(&mut self, idx: usize) {
        if let Some(s) = self.socks.get_mut(idx) {
            s.state = SockState::TimeWait;
        }
    }

    /// Predicts `bind()` of `sk` and then (TCP) `listen()` on it, leaving
    /// the port as it is.
    pub fn predict(&self, sk: &Sock) -> (Verdict, Verdict) {
        let unknown = self
            .socks
            .iter()
            .any(|s| s.reuseaddr.is_none() || s.reuseport.is_none() || s.v6only_unknown);
        let (mut bind, mut listen) = self.clone().predict_known(sk);
        if unknown {
            let mut opt = self.clone();
            for s in &mut opt.socks {
                s.reuseaddr.get_or_insert(true);
                s.reuseport.get_or_insert(true);
                // IPV6_V6ONLY only ever narrows what a holder overlaps.
                s.v6only |= s.v6only_unknown;
            }
            let (b2, l2) = opt.predict_known(sk);
            if b2.result != bind.result {
                bind.if_unknown_flags_set = Some(b2.result);
            }
            if l2.result != listen.result {
                listen.if_unknown_flags_set = Some(l2.result);
            }
        }
        if sk.proto == Proto::Udp {
            // Where the kernel's walk rule is not known, both are tried.
            if self.udp_walk.is_none() {
                for walk in [UdpWalk::FirstOverlapDecides, UdpWalk::EveryOverlapMustAllow] {
                    let (b2, _) = self.clone().with_udp_walk(Some(walk)).predict_known(sk);
                    if b2.result != bind.result {
                        bind.if_udp_walk_differs = Some(b2.result);
                    }
                }
            }
            // When the first overlapping socket decides, the order of the
            // chain matters; an inventory has it per family only (sock_diag
            // dumps one family at a time), so both interleavings are tried.
            let udp: Vec<&Sock> = self
                .socks
                .iter()
                .filter(|s| s.proto == Proto::Udp)
                .collect();
            if self.udp_walk != Some(UdpWalk::EveryOverlapMustAllow)
                && !self.history
                && udp.iter().any(|s| s.is_v6())
                && udp.iter().any(|s| !s.is_v6())
            {
                let mut other = self.clone();
                other.socks.sort_by_key(|s| !s.is_v6());
                let (b2, _) = other.predict_known(sk);
                if b2.result != bind.result {
                    bind.if_chain_order_differs = Some(b2.result);
                }
            }
        }
        self.advise(sk, &mut bind, &mut listen);
        (bind, listen)
    }

    pub(super) fn predict_known(mut self, sk: &Sock) -> (Verdict, Verdict) {
        let (bind, idx) = self.bind(sk);
        let listen = match (idx, sk.proto) {
            (_, Proto::Udp) => udp_listen(),
            (Some(i), Proto::Tcp) => self.listen(i),
            (None, Proto::Tcp) => Verdict::err(
                "not_reached",
                "inet_listen",
                "bind() failed; listen() on an unbound socket would pick a random port (autobind)",
            ),
        };
        (bind, listen)
    }

    /// The checks `inet_bind()`/`__inet6_bind()` make before the port
    /// itself, then the port decision.
    fn check(&self, sk: &Sock, phase: Phase, own: Option<usize>) -> Verdict {
        if phase == Phase::Bind
            && let Some(v) = self.precheck(sk)
        {
            return v;
        }
        match sk.proto {
            Proto::Tcp => self.tcp_get_port(&sk.after_bind(), phase, own),
            Proto::Udp => self.udp_get_port(&sk.after_bind()),
        }
    }

    fn precheck(&self, sk: &Sock) -> Option<Verdict> {
        if let IpAddr::V6(a) = sk.addr
            && a.to_ipv4_mapped().is_some()
            && sk.v6only
        {
            return Some(Verdict::err(
                "EINVAL",
                "__inet6_bind",
                "a v4-mapped address on an IPV6_V6ONLY socket",
            ));
        }
        // inet_port_requires_bind_service(): below
        // ip_unprivileged_port_start a bind needs CAP_NET_BIND_SERVICE.
        if sk.port != 0 && sk.port < self.unprivileged_port_start && sk.uid != 0 {
            return Some(Verdict::err(
                "EACCES",
                "inet_port_requires_bind_service",
                format!(
                    "port {} < net.ipv4.ip_unprivileged_port_start ({}) and uid {} (assumed without CAP_NET_BIND_SERVICE)",
                    sk.port, self.unprivileged_port_start, sk.uid
                ),
            ));
        }
        None
    }

    /// `inet_csk_get_port()` for an explicit port.
    fn tcp_get_port(&self, sk: &Sock, phase: Phase, own: Option<usize>) -> Verdict {
        const F: &str = "inet_csk_get_port";
        let others: Vec<usize> = (0..self.socks.len())
            .filter(|&i| Some(i) != own && self.socks[i].proto == Proto::Tcp)
            .collect();
        if others.is_empty() {
            return Verdict::ok(
                F,
                if own.is_none() {
                    "no socket holds the port"
                } else {
                    "no other socket holds the port"
                },
            );
        }
        // `reuse` is false for a socket that is listening (its state is
        // already TCP_LISTEN when inet_csk_listen_start() calls here).
        let reuse = sk.reuse() && phase == Phase::Bind;
        if let Some(tb) = &self.bucket {
            if tb.fastreuse && reuse {
                return Verdict::ok(
                    F,
                    "fast path: every owner of the port had SO_REUSEADDR and none listened when it took it (tb->fastreuse), and so has this one",
                );
            }
            if sk_reuseport_match(tb, sk) {
                return Verdict::ok(
                    F,
                    if tb.fastreuseport == FastReuseport::Any {
                        "fast path: every owner of the port took it with SO_REUSEPORT and this uid (tb->fastreuseport == FASTREUSEPORT_ANY, sk_reuseport_match)"
                    } else {
                        "fast path: the last SO_REUSEPORT socket that passed the full check has this uid and a matching address (FASTREUSEPORT_STRICT, sk_reuseport_match)"
                    },
                );
            }
        }
        let blockers: Vec<usize> = others
            .into_iter()
            .filter(|&i| {
                let sk2 = &self.socks[i];
                dev_overlap(sk, sk2) && tcp_flags_conflict(sk, sk2) && tcp_addr_overlap(sk, sk2)
            })
            .collect();
        let function = if sk.is_wildcard() {
            "inet_csk_bind_conflict"
        } else {
            "inet_bhash2_conflict"
        };
        match blockers.first() {
            None => Verdict::ok(
                function,
                "every owner either has SO_REUSEADDR like this socket and is not listening, or SO_REUSEPORT with the same uid (or is TIME_WAIT), or its address or device does not overlap (inet_bind_conflict)",
            ),
            Some(&i) => Verdict {
                why: blockers
                    .iter()
                    .map(|&b| tcp_why(sk, &self.socks[b]))
                    .collect(),
                blockers: blockers.clone(),
                ..Verdict::err(
                    "EADDRINUSE",
                    function,
                    format!("inet_bind_conflict: {}", tcp_why(sk, &self.socks[i])),
                )
            },
        }
    }

    /// `udp_lib_get_port()` -> `udp_lib_lport_inuse()`: the overlapping
    /// sockets of the chain, in its order, judged by the kernel's
    /// [`UdpWalk`] (the one of 6.1 and 6.12 when not known; `predict` tries
    /// the other).
    fn udp_get_port(&self, sk: &Sock) -> Verdict {
        const F: &str = "udp_lib_lport_inuse";
        let walk = self.udp_walk.unwrap_or(UdpWalk::FirstOverlapDecides);
        let mut first_match = None;
        let mut blockers = Vec::new();
        for (i, sk2) in self.socks.iter().enumerate() {
            if sk2.proto != Proto::Udp
                || (sk2.reuse() && sk.reuse())
                || !dev_overlap(sk, sk2)
                || !inet_rcv_saddr_equal(sk, sk2, true)
            {
                continue;
            }
            if sk2.rport() && sk.rport() && sk.uid == sk2.uid {
                if walk == UdpWalk::FirstOverlapDecides {
                    return Verdict::ok(
                        F,
                        format!(
                            "the first overlapping socket of the chain ({}) has SO_REUSEPORT and the same uid: the search stops there ({})",
                            crate::explain::fmt_addr(sk2.addr, sk2.port),
                            walk.describe()
                        ),
                    );
                }
                first_match.get_or_insert(i);
                continue;
            }
            blockers.push(i);
            if walk == UdpWalk::FirstOverlapDecides {
                break;
            }
        }
        let Some(&first) = blockers.first() else {
            return Verdict::ok(
                F,
                match first_match {
                    Some(_) => "every overlapping socket has SO_REUSEPORT and the same uid, or SO_REUSEADDR like this one".to_owned(),
                    None => "no socket on the port overlaps without SO_REUSEADDR on both (or the port is free)".to_owned(),
                },
            );
        };
        let why: Vec<String> = blockers
            .iter()
            .map(|&b| udp_why(sk, &self.socks[b]))
            .collect();
        let mut condition = why[0].clone();
        if let Some(m) = first_match.filter(|&m| m < first) {
            condition = format!(
                "{condition} ({}, so the SO_REUSEPORT match {} before it in the chain does not let the bind through)",
                walk.describe(),
                crate::explain::fmt_addr(self.socks[m].addr, self.socks[m].port)
            );
        }
        Verdict {
            blockers,
            why,
            ..Verdict::err("EADDRINUSE", F, condition)
        }
    }

    /// `inet_csk_update_fastreuse()` after a successful get_port.
    fn update_fastreuse(&mut self, sk: &Sock, phase: Phase) {
        let reuse = sk.reuse() && phase == Phase::Bind;
        let empty = phase == Phase::Bind && self.socks.iter().all(|s| s.proto != Proto::Tcp);
        let tb = self.bucket.get_or_insert(Bucket {
            fastreuse: false,
            fastreuseport: FastReuseport::Off,
            fast: None,
        });
        if empty {
            tb.fastreuse = reuse;
            if sk.rport() {
                tb.fastreuseport = FastReuseport::Any;
                tb.fast = Some(sk.clone());
            } else {
                tb.fastreuseport = FastReuseport::Off;
            }
            return;
        }
        if !reuse {
            tb.fastreuse = false;
        }
        if sk.rport() {
            if !sk_reuseport_match(tb, sk) {
                tb.fastreuseport = FastReuseport::Strict;
                tb.fast = Some(sk.clone());
            }
        } else {
            tb.fastreuseport = FastReuseport::Off;
        }
    }
}

fn udp_listen() -> Verdict {
    Verdict::err(
        "EOPNOTSUPP",
        "sock_no_listen",
        "UDP sockets do not listen (inet_dgram_ops.listen)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn tcp(addr: &str) -> Sock {
        Sock::new(Proto::Tcp, ip(addr), 7000)
    }

    fn udp(addr: &str) -> Sock {
        Sock::new(Proto::Udp, ip(addr), 7000)
    }

    fn ra(mut s: Sock) -> Sock {
        s.reuseaddr = Some(true);
        s
    }

    fn rp(mut s: Sock) -> Sock {
        s.reuseport = Some(true);
        s
    }

    fn uid(mut s: Sock, u: u32) -> Sock {
        s.uid = u;
        s
    }

    /// Binds (and listens when asked) every socket in order; panics if the
    /// setup itself is refused.
    fn port(setup: &[(Sock, bool)]) -> Port {
        let mut p = Port::new();
        for (s, listen) in setup {
            let (v, idx) = p.bind(s);
            assert!(v.is_ok(), "setup bind refused: {v:?}");
            if *listen {
                let v = p.listen(idx.expect("index"));
                assert!(v.is_ok(), "setup listen refused: {v:?}");
            }
        }
        p
    }

    fn results(p: &Port, s: &Sock) -> (String, String) {
        let (b, l) = p.predict(s);
        (b.result, l.result)
    }

    #[test]
    fn free_port_binds_and_listens() {
        // inet_csk_get_port: an empty bucket.
        assert_eq!(
            results(&Port::new(), &tcp("0.0.0.0")),
            ("ok".into(), "ok".into())
        );
    }

    #[test]
    fn inet_bind_conflict_no_reuseaddr_same_address() {
        // inet_bind_conflict: neither sk_reuse nor sk_reuseport on both.
        let p = port(&[(tcp("127.0.0.1"), false)]);
        let (b, _) = p.predict(&tcp("127.0.0.1"));
        assert_eq!(b.result, "EADDRINUSE");
        assert_eq!(b.blockers, vec![0]);
        assert!(b.rule.condition.contains("SO_REUSEADDR not set"), "{b:?}");
    }

    #[test]
    fn inet_bind_conflict_reuseaddr_both_holder_bound() {
        // inet_bind_conflict: sk_reuse && sk2->sk_reuse && sk2 not LISTEN.
        let p = port(&[(ra(tcp("127.0.0.1")), false)]);
        assert_eq!(results(&p, &ra(tcp("127.0.0.1"))).0, "ok");
    }

    #[test]
    fn inet_bind_conflict_reuseaddr_holder_listening() {
        // inet_bind_conflict: sk2->sk_state == TCP_LISTEN defeats sk_reuse.
        let p = port(&[(ra(tcp("127.0.0.1")), true)]);
        let (b, _) = p.predict(&ra(tcp("127.0.0.1")));
        assert_eq!(b.result, "EADDRINUSE");
        assert!(b.rule.condition.contains("listening"), "{b:?}");
    }

    #[test]
    fn inet_csk_listen_start_rechecks() {
        // inet_csk_listen_start -> inet_csk_get_port: both bound with
        // SO_REUSEADDR, the first listens, the second's listen fails.
        let mut p = port(&[(ra(tcp("127.0.0.1")), false)]);
        let (v, b) = p.bind(&ra(tcp("127.0.0.1")));
        assert!(v.is_ok());
        assert!(p.listen(0).is_ok());
        assert_eq!(p.listen(b.expect("index")).result, "EADDRINUSE");
    }

    #[test]
    fn inet_bind_conflict_reuseport_same_uid() {
        // inet_bind_conflict: sk_reuseport on both and uid_eq.
        let p = port(&[(rp(tcp("0.0.0.0")), true)]);
        assert_eq!(results(&p, &rp(tcp("0.0.0.0"))), ("ok".into(), "ok".into()));
    }

    #[test]
    fn inet_bind_conflict_reuseport_other_uid() {
        // inet_bind_conflict: sk_reuseport on both but !uid_eq.
        let p = port(&[(uid(rp(tcp("0.0.0.0")), 65534), true)]);
        let (b, _) = p.predict(&rp(tcp("0.0.0.0")));
        assert_eq!(b.result, "EADDRINUSE");
        assert!(b.rule.condition.contains("uids differ"), "{b:?}");
    }

    #[test]
    fn inet_bind_conflict_reuseport_time_wait_other_uid() {
        // inet_bind_conflict: sk2->sk_state == TCP_TIME_WAIT skips the uid;
        // the same socket before it became a timewait socket does not.
        let mut p = port(&[(uid(rp(tcp("127.0.0.1")), 65534), false)]);
        p.connect(0, ip("127.0.0.1"));
        assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "EADDRINUSE");
        p.time_wait(0);
        assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "ok");
    }

    #[test]
    fn time_wait_without_reuseaddr_blocks_and_advises() {
        // inet_bind_conflict: tw_reuse=0 on the timewait socket.
        let mut p = port(&[(tcp("127.0.0.1"), false)]);
        p.time_wait(0);
        let (b, _) = p.predict(&ra(tcp("127.0.0.1")));
        assert_eq!(b.result, "EADDRINUSE");
        assert!(
            b.advice.iter().any(|a| a.contains("does not help")),
            "{b:?}"
        );
    }

    #[test]
    fn time_wait_with_unknown_flags_says_both() {
        let mut t = tcp("127.0.0.1");
        t.state = SockState::TimeWait;
        t.reuseaddr = None;
        t.reuseport = None;
        let p = Port::from_inventory(vec![t]);
        let (b, _) = p.predict(&ra(tcp("127.0.0.1")));
        assert_eq!(b.result, "EADDRINUSE");
        assert_eq!(b.if_unknown_flags_set.as_deref(), Some("ok"));
    }

    #[test]
    fn unknown_time_wait_flags_point_at_the_listener() {
        // tcp_time_wait() copies sk_reuse of an accepted socket, which
        // inet_csk_clone_lock() copied from the listener.
        let mut l = ra(tcp("0.0.0.0"));
        l.state = SockState::Listen;
        let mut t = tcp("127.0.0.1");
        t.state = SockState::TimeWait;
        t.reuseaddr = None;
        t.reuseport = None;
        let p = Port::from_inventory(vec![l, t]);
        let (b, _) = p.predict(&tcp("127.0.0.1"));
        assert_eq!(b.blockers, vec![0, 1]);
        assert!(
            b.advice
                .iter()
                .any(|a| a.contains("SO_REUSEADDR=1 SO_REUSEPORT=0")),
            "{b:?}"
        );
    }

    #[test]
    fn inet_rcv_saddr_equal_wildcard_covers_specific() {
        // inet_bhash2_addr_any_conflict: a specific bind next to 0.0.0.0.
        let p = port(&[(tcp("0.0.0.0"), false)]);
        assert_eq!(results(&p, &tcp("127.0.0.1")).0, "EADDRINUSE");
        // inet_csk_bind_conflict + inet_rcv_saddr_equal(.., true): the reverse.
        let p = port(&[(tcp("127.0.0.1"), false)]);
        assert_eq!(results(&p, &tcp("0.0.0.0")).0, "EADDRINUSE");
    }

    #[test]
    fn different_specific_addresses_do_not_overlap() {
        // inet_bind2_bucket_addr_match: other bhash2 bucket.
        let p = port(&[(tcp("127.0.0.1"), true)]);
        assert_eq!(results(&p, &tcp("127.0.0.2")), ("ok".into(), "ok".into()));
    }

    #[test]
    fn dual_stack_any_covers_ipv4() {
        // ipv6_rcv_saddr_equal / __inet_bhash2_conflict: [::] with
        // IPV6_V6ONLY=0 covers 0.0.0.0 and 127.0.0.1; with V6ONLY=1 not.
        let p = port(&[(tcp("::"), true)]);
        assert_eq!(results(&p, &tcp("0.0.0.0")).0, "EADDRINUSE");
        assert_eq!(results(&p, &tcp("127.0.0.1")).0, "EADDRINUSE");
        let mut only = tcp("::");
        only.v6only = true;
        let p = port(&[(only, true)]);
        assert_eq!(results(&p, &tcp("0.0.0.0")).0, "ok");
        assert_eq!(results(&p, &tcp("::1")).0, "EADDRINUSE");
    }

    #[test]
    fn ipv6_specific_is_v6only() {
        // __inet6_bind sets sk_ipv6only for ::1, so 0.0.0.0 does not overlap.
        let p = port(&[(tcp("::1"), true)]);
        assert_eq!(results(&p, &tcp("0.0.0.0")).0, "ok");
        assert!(p.socks[0].v6only);
    }

    #[test]
    fn v4_mapped_on_v6only_is_einval() {
        // __inet6_bind: "Binding to v4-mapped address on a v6-only socket".
        let mut s = tcp("::ffff:127.0.0.1");
        s.v6only = true;
        assert_eq!(results(&Port::new(), &s).0, "EINVAL");
    }

    #[test]
    fn bound_devices_that_differ_do_not_conflict() {
        // inet_bind_conflict: sk_bound_dev_if both set and different.
        let mut a = tcp("127.0.0.1");
        a.bound_dev_if = 1;
        let p = port(&[(a, true)]);
        let mut b = tcp("127.0.0.1");
        b.bound_dev_if = 2;
        assert_eq!(results(&p, &b).0, "ok");
        b.bound_dev_if = 0;
        assert_eq!(results(&p, &b).0, "EADDRINUSE");
    }

    #[test]
    fn sk_reuseport_match_strict_fast_path() {
        // inet_csk_get_port: FASTREUSEPORT_STRICT set by a wildcard
        // SO_REUSEPORT socket lets a matching one skip the full check,
        // although the full check would refuse it (checked on 6.18).
        let p = port(&[
            (ra(tcp("127.0.0.1")), false),
            (ra(rp(tcp("0.0.0.0"))), false),
        ]);
        assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "ok");
        // Without the history, only the full check applies.
        let q = Port::from_inventory(p.socks.clone());
        assert_eq!(results(&q, &rp(tcp("127.0.0.1"))).0, "EADDRINUSE");
    }

    #[test]
    fn privileged_port_needs_capability() {
        // inet_port_requires_bind_service.
        let mut s = uid(tcp("127.0.0.1"), 65534);
        s.port = 80;
        assert_eq!(results(&Port::new(), &s).0, "EACCES");
    }

    #[test]
    fn udp_lport_inuse_reuseaddr_both_any_uid() {
        // udp_lib_lport_inuse: sk_reuse on both skips the socket, any uid.
        let p = port(&[(uid(ra(udp("0.0.0.0")), 65534), false)]);
        assert_eq!(results(&p, &ra(udp("127.0.0.1"))).0, "ok");
        assert_eq!(results(&p, &udp("127.0.0.1")).0, "EADDRINUSE");
    }

    #[test]
    fn udp_lport_inuse_reuseport_needs_same_uid() {
        // udp_lib_lport_inuse: sk_reuseport on both and uid_eq.
        let p = port(&[(rp(udp("127.0.0.1")), false)]);
        assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
        assert_eq!(
            results(&p, &uid(rp(udp("127.0.0.1")), 65534)).0,
            "EADDRINUSE"
        );
    }

    #[test]
    fn udp_first_overlapping_socket_decides() {
        // udp_lib_lport_inuse returns 0 at the first reuseport match.
        let p = port(&[
            (ra(udp("0.0.0.0")), false),
            (ra(rp(udp("127.0.0.1"))), false),
        ]);
        assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
        let p = port(&[
            (ra(rp(udp("127.0.0.1"))), false),
            (ra(udp("0.0.0.0")), false),
        ]);
        assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "EADDRINUSE");
    }

    #[test]
    fn udp_every_overlap_must_allow_where_the_kernel_walks_on() {
        // Linux 6.18: the SO_REUSEPORT match at the head of the chain does
        // not end the walk; the SO_REUSEADDR-only socket behind it blocks.
        let p = port(&[
            (ra(udp("0.0.0.0")), false),
            (ra(rp(udp("127.0.0.1"))), false),
        ])
        .with_udp_walk(Some(UdpWalk::EveryOverlapMustAllow));
        let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
        assert_eq!(bind.result, "EADDRINUSE");
        assert_eq!(bind.blockers, [1]);
        assert!(
            bind.rule
                .condition
                .contains("does not let the bind through")
        );
        // Every overlapping socket a match: ok, whatever the order.
        let p = port(&[
            (ra(rp(udp("0.0.0.0"))), false),
            (rp(udp("127.0.0.1")), false),
        ])
        .with_udp_walk(Some(UdpWalk::EveryOverlapMustAllow));
        assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
    }

    #[test]
    fn udp_walk_unknown_names_the_other_result() {
        let mut p = port(&[
            (ra(udp("0.0.0.0")), false),
            (ra(rp(udp("127.0.0.1"))), false),
        ]);
        p.udp_walk = None;
        let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
        assert_eq!(bind.result, "ok");
        assert_eq!(bind.if_udp_walk_differs.as_deref(), Some("EADDRINUSE"));
        // Where both rules agree, nothing is hedged.
        let mut p = port(&[(ra(udp("0.0.0.0")), false)]);
        p.udp_walk = None;
        let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
        assert_eq!(bind.result, "EADDRINUSE");
        assert_eq!(bind.if_udp_walk_differs, None);
    }

    #[test]
    fn udp_does_not_listen() {
        assert_eq!(results(&Port::new(), &udp("0.0.0.0")).1, "EOPNOTSUPP");
    }

    #[test]
    fn what_if_suggests_the_missing_option() {
        let p = port(&[(ra(tcp("127.0.0.1")), false)]);
        let (b, _) = p.predict(&tcp("127.0.0.1"));
        assert!(
            b.advice.iter().any(|a| a.contains("with SO_REUSEADDR")),
            "{b:?}"
        );
    }
}
