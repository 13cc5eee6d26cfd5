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
//!
//! The files of this folder: the address rules (`addr`: which sockets'
//! addresses overlap), the port decisions themselves (`get_port`:
//! `inet_csk_get_port()`, `udp_lib_get_port()` and the bucket's cache), and
//! the words that say why a socket blocks another (`why`). What to do about
//! a refusal is not a kernel rule: [`super::advice`] asks these rules
//! what-if questions.

mod addr;
mod get_port;
#[cfg(test)]
mod tests;
mod why;

use std::net::IpAddr;

use serde::Serialize;

pub(in crate::explain) use self::addr::inet_rcv_saddr_equal;
use self::get_port::Bucket;
pub use super::outcome::{Outcome, Rule};
use crate::kernel::Errno;
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

    pub(in crate::explain) fn reuse(&self) -> bool {
        self.reuseaddr.unwrap_or(false)
    }

    pub(in crate::explain) fn rport(&self) -> bool {
        self.reuseport.unwrap_or(false)
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
}

/// The predicted result of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub result: Outcome,
    pub rule: Rule,
    /// Indices (into [`Port::socks`]) of the sockets that block the call.
    pub blockers: Vec<usize>,
    /// For each blocker, the condition that makes it block.
    pub why: Vec<String>,
    /// Set when the result rests on a flag the inventory could not read
    /// (a TIME_WAIT socket's SO_REUSEADDR/SO_REUSEPORT): the result if the
    /// unknown flags are set instead.
    pub if_unknown_flags_set: Option<Outcome>,
    /// Set when the result depends on where IPv4 and IPv6 UDP sockets sit
    /// in the port's hash chain, which an inventory (one dump per family)
    /// does not show: the result for the other order.
    pub if_chain_order_differs: Option<Outcome>,
    /// Set when the result depends on how the kernel's
    /// `udp_lib_lport_inuse()` ends its walk ([`UdpWalk`]), which could not
    /// be measured: the result under the other rule.
    pub if_udp_walk_differs: Option<Outcome>,
}

impl Verdict {
    fn ok(function: &'static str, condition: impl Into<String>) -> Self {
        Self {
            result: Outcome::Ok,
            rule: Rule {
                function,
                condition: condition.into(),
            },
            blockers: Vec::new(),
            why: Vec::new(),
            if_unknown_flags_set: None,
            if_chain_order_differs: None,
            if_udp_walk_differs: None,
        }
    }

    fn err(errno: Errno, function: &'static str, condition: impl Into<String>) -> Self {
        Self {
            result: Outcome::Err(errno),
            ..Self::ok(function, condition)
        }
    }

    fn not_reached(function: &'static str, condition: impl Into<String>) -> Self {
        Self {
            result: Outcome::NotReached,
            ..Self::ok(function, condition)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
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
            return Verdict::err(Errno::EINVAL, "inet_listen", "no such socket");
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
        (bind, listen)
    }

    pub(in crate::explain) fn predict_known(mut self, sk: &Sock) -> (Verdict, Verdict) {
        let (bind, idx) = self.bind(sk);
        let listen = match (idx, sk.proto) {
            (_, Proto::Udp) => udp_listen(),
            (Some(i), Proto::Tcp) => self.listen(i),
            (None, Proto::Tcp) => Verdict::not_reached(
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
                Errno::EINVAL,
                "__inet6_bind",
                "a v4-mapped address on an IPV6_V6ONLY socket",
            ));
        }
        // inet_port_requires_bind_service(): below
        // ip_unprivileged_port_start a bind needs CAP_NET_BIND_SERVICE.
        if sk.port != 0 && sk.port < self.unprivileged_port_start && sk.uid != 0 {
            return Some(Verdict::err(
                Errno::EACCES,
                "inet_port_requires_bind_service",
                format!(
                    "port {} < net.ipv4.ip_unprivileged_port_start ({}) and uid {} (assumed without CAP_NET_BIND_SERVICE)",
                    sk.port, self.unprivileged_port_start, sk.uid
                ),
            ));
        }
        None
    }
}

fn udp_listen() -> Verdict {
    Verdict::err(
        Errno::EOPNOTSUPP,
        "sock_no_listen",
        "UDP sockets do not listen (inet_dgram_ops.listen)",
    )
}
