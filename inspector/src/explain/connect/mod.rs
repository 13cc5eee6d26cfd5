//! `inspector explain --connect HOST:PORT`: would a TCP `connect()` get a
//! local port toward that destination now, and if not, who holds the
//! ephemeral range.
//!
//! The model follows `__inet_hash_connect()` (net/ipv4/inet_hashtables.c)
//! for a socket that was not bound before `connect()`:
//! - the candidate ports are `net.ipv4.ip_local_port_range` minus
//!   `ip_local_reserved_ports` (`inet_is_local_reserved_port()`). The walk
//!   starts at a hashed offset and tries one parity first, then the other;
//!   with an even number of ports both passes together try every port, so
//!   the order never changes the verdict. With an odd number the walk
//!   covers all ports but one (`remaining &= ~1U`), which one depending on
//!   the offset: the verdict is then uncertain when exactly one port is free;
//! - a port whose bind bucket was made by `bind()` or `listen()`
//!   (`tb->fastreuse >= 0 || tb->fastreuseport >= 0`) is skipped for every
//!   destination: listeners and sockets bound without `connect()` hold it;
//! - a port whose bucket came from earlier `connect()`s is usable unless
//!   `__inet_check_established()` finds the same 4-tuple (source address,
//!   port, destination address and port): a full socket in any state blocks
//!   it; a timewait socket blocks it unless `tcp_twsk_unique()` lets the new
//!   connection take it over: substate TIME_WAIT (never FIN_WAIT2),
//!   `tcp_tw_reuse` 1, or 2 with a loopback address on either end (or
//!   bound to `lo`), timestamps on the old connection, and more than
//!   `tcp_tw_reuse_delay` ms since it entered TIME_WAIT.
//!
//! What the model assumes, and says in every answer: the socket is not
//! bound (no `bind()`, no `IP_LOCAL_PORT_RANGE`, no `SO_BINDTODEVICE`); its
//! source address is the one the routing table picks (read with a raw
//! socket's `connect()`, which sends nothing); a timewait socket carries timestamps
//! when `tcp_timestamps` is on now; its age is 60 s minus its timer (a
//! timer re-armed by a late segment makes it look younger). The socket
//! tables do not say whether a connected socket got its port from `bind()`
//! (whose bucket then keeps the port from every destination while any
//! socket, TIME_WAIT included, remains on it): such a socket counts by its
//! 4-tuple only.

use std::{
    collections::BTreeMap,
    fmt, io,
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use super::{
    ExplainError, fmt_addr,
    inventory::{FLAGS_KERNEL, Holder, Source},
    rules::Rule,
};
use crate::kernel::netns::{self, NetnsError};

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): a TIME_WAIT timer's length.
const TIMEWAIT_MS: u32 = 60_000;
/// How close to the reuse delay a timewait socket's age must be for the
/// answer to depend on when exactly the call is made.
pub const BOUNDARY_MS: u32 = 100;
/// `LOOPBACK_IFINDEX` (include/net/flow.h).
const LOOPBACK_IFINDEX: i32 = 1;
/// Holders listed in the text form before "... and N more".
const TEXT_HOLDERS: usize = 12;

/// Where the connection goes: an IP literal and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_addr(self.addr, self.port))
    }
}

impl Destination {
    /// Parses `HOST:PORT` (`[V6]:PORT` for IPv6); one line naming the
    /// problem otherwise. An IPv4-mapped IPv6 address is taken as its IPv4
    /// address: `tcp_v6_connect()` hands those to `tcp_v4_connect()`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shape = "give HOST:PORT with HOST an IP literal, such as 127.0.0.1:8080 or [::1]:8080";
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("--connect {s:?}: no port; {shape}"));
        };
        let port: u16 = match port.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "--connect {s:?}: port {port:?} is not a port from 1 to 65535"
                ));
            }
            Ok(p) => p,
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addr: IpAddr = match bare.parse() {
            Ok(a) => a,
            Err(_) => {
                return Err(format!(
                    "--connect {s:?}: {host:?} is not an IP address (names are not resolved); {shape}"
                ));
            }
        };
        if addr.is_ipv6() && !host.starts_with('[') {
            return Err(format!(
                "--connect {s:?}: put an IPv6 address in brackets, such as [::1]:8080"
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!(
                "--connect {s:?}: {addr} is not a unicast destination"
            ));
        }
        Ok(Self {
            addr: unmap(addr),
            port,
        })
    }

    fn socket_addr(self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4: the kernel keys those connections
/// by their IPv4 addresses.
fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    }
}

/// The namespace's sysctls that decide the port choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `net.ipv4.ip_local_port_range` (both ends included).
    pub range: (u16, u16),
    /// `net.ipv4.ip_local_reserved_ports`, as ranges.
    pub reserved: Vec<(u16, u16)>,
    /// `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only.
    pub tw_reuse: u8,
    /// `net.ipv4.tcp_tw_reuse_delay` in ms; `None` where the kernel has no
    /// such sysctl (before its introduction the delay is a fixed second).
    pub tw_reuse_delay_ms: Option<u32>,
    /// `net.ipv4.tcp_timestamps`.
    pub timestamps: u8,
}

impl Settings {
    /// Reads the calling thread's namespace's sysctls.
    pub fn read() -> io::Result<Self> {
        let range = netns::sysctl("net/ipv4/ip_local_port_range")?;
        let range = parse_range(&range).ok_or_else(|| {
            io::Error::other(format!("ip_local_port_range {range:?} is not two ports"))
        })?;
        let reserved = parse_reserved(&netns::sysctl("net/ipv4/ip_local_reserved_ports")?);
        let num = |name: &str| -> io::Result<u8> {
            netns::sysctl(name)?
                .parse()
                .map_err(|_| io::Error::other(format!("{name} is not a small number")))
        };
        Ok(Self {
            range,
            reserved,
            tw_reuse: num("net/ipv4/tcp_tw_reuse")?,
            tw_reuse_delay_ms: netns::sysctl("net/ipv4/tcp_tw_reuse_delay")
                .ok()
                .and_then(|s| s.parse().ok()),
            timestamps: num("net/ipv4/tcp_timestamps")?,
        })
    }

    /// [`Self::read`] in the namespace of the file `netns` (the caller's
    /// when `None`).
    pub fn read_in(netns: Option<&Path>) -> io::Result<Self> {
        netns::in_netns(netns, || Self::read().map_err(SetupError::Sysctl))
            .map_err(|e| io::Error::other(crate::error_chain(&e)))
    }

    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    pub fn in_range(&self, port: u16) -> bool {
        (self.range.0..=self.range.1).contains(&port)
    }

    /// Reserved ports inside the range, as ranges.
    pub fn reserved_in_range(&self) -> Vec<(u16, u16)> {
        self.reserved
            .iter()
            .filter_map(|&(lo, hi)| {
                let (lo, hi) = (lo.max(self.range.0), hi.min(self.range.1));
                (lo <= hi).then_some((lo, hi))
            })
            .collect()
    }
}

/// `"32768\t60999"` -> (32768, 60999).
pub fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// `"8080,40000-40003"` -> [(8080, 8080), (40000, 40003)]; empty -> [].
pub fn parse_reserved(s: &str) -> Vec<(u16, u16)> {
    s.split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => {
                    let p = part.parse().ok()?;
                    Some((p, p))
                }
            }
        })
        .collect()
}

/// What one port of the range is to this destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortStatus {
    /// Nothing holds it toward this destination: `connect()` can take it.
    Free,
    /// In `ip_local_reserved_ports`: never picked.
    Reserved,
    /// Held by a listener: its bucket came from `bind()`/`listen()`.
    Listening,
    /// Held by a socket bound without `connect()`.
    BoundOnly,
    /// A full socket already has the 4-tuple.
    InUse,
    /// A timewait socket has the 4-tuple and `tcp_twsk_unique()` would let
    /// a new connection take it over now.
    TimeWaitReusable,
    /// A timewait socket has the 4-tuple and cannot be taken over (now).
    TimeWait,
}

impl PortStatus {
    fn usable(self) -> bool {
        matches!(self, Self::Free | Self::TimeWaitReusable)
    }
}

/// One socket on a port of the range, and what it means to the destination.
#[derive(Debug, Clone, Serialize)]
pub struct PortHolder {
    pub lport: u16,
    pub state: &'static str,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Toward the destination asked about (same source address too).
    pub toward_destination: bool,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// A TIME_WAIT socket's connection's last owner, where the probes saw it.
    pub last_pid: Option<u32>,
    pub last_comm: Option<String>,
    pub expires_ms: Option<u32>,
    pub cookie: u64,
    /// Whether it keeps this destination from the port, and why.
    pub blocks: bool,
    pub why: String,
}

/// Timewait sockets toward the destination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeWaitCount {
    pub count: usize,
    /// `tcp_twsk_unique()` lets a new connection take these over now.
    pub reusable_now: usize,
    /// Reusable once old enough; the soonest in `next_reusable_in_ms`.
    pub reusable_later: usize,
    pub next_reusable_in_ms: Option<u32>,
    /// Never reusable under the current settings.
    pub not_reusable: usize,
    /// Within [`BOUNDARY_MS`] of the reuse delay: the answer depends on
    /// the moment of the call.
    pub at_boundary: usize,
}

/// The range seen from one destination.
#[derive(Debug, Clone, Serialize)]
pub struct PortUsage {
    pub destination: Destination,
    /// The source address a connect() would use.
    pub source: IpAddr,
    pub settings: Settings,
    /// Ports of the range in `ip_local_reserved_ports`.
    pub reserved: usize,
    /// Ports of the range `connect()` may pick at all.
    pub usable: usize,
    /// Full sockets toward the destination, by TCP state.
    pub in_use: BTreeMap<&'static str, usize>,
    /// Ports held by sockets bound without `connect()`.
    pub bound_only: usize,
    /// Ports held by listeners.
    pub listening: usize,
    pub time_wait: TimeWaitCount,
    /// Ports the destination can use now.
    pub free: usize,
    /// Connections from the range toward other destinations (they do not
    /// keep this one from their ports).
    pub other_destinations: usize,
    /// Every port of the range with its status.
    #[serde(skip)]
    pub ports: Vec<(u16, PortStatus)>,
    pub holders: Vec<PortHolder>,
}

fn is_loopback(a: IpAddr) -> bool {
    match unmap(a) {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// `tcp_twsk_unique()` for a timewait socket with the same 4-tuple.
enum TwReuse {
    Now,
    Later(u32),
    Never(String),
    Boundary,
}

fn tw_reuse(h: &Holder, s: &Settings) -> TwReuse {
    if h.state == "FIN_WAIT2" {
        return TwReuse::Never(
            "a timewait socket in FIN_WAIT2 is never taken over (tcp_twsk_unique())".into(),
        );
    }
    let loopback =
        h.bound_dev_if == LOOPBACK_IFINDEX || is_loopback(h.laddr) || is_loopback(h.raddr);
    match s.tw_reuse {
        0 => return TwReuse::Never("tcp_tw_reuse=0".into()),
        2 if !loopback => {
            return TwReuse::Never("tcp_tw_reuse=2 takes over loopback connections only".into());
        }
        _ => {}
    }
    if s.timestamps == 0 {
        return TwReuse::Never(
            "tcp_timestamps=0: the connection carried no timestamps (tw_ts_recent_stamp 0)".into(),
        );
    }
    let Some(left) = h.expires_ms else {
        return TwReuse::Boundary;
    };
    let age = TIMEWAIT_MS.saturating_sub(left);
    // `time_after32(tcp_clock_ms(), tw_entry_stamp + delay)`; kernels
    // without the sysctl counted a fixed second, in whole seconds before
    // the millisecond clock: anywhere from 1 to 2 s there.
    let (lo, hi) = match s.tw_reuse_delay_ms {
        Some(d) => (d, d),
        None => (1000, 2000),
    };
    if age > hi.saturating_add(BOUNDARY_MS) {
        TwReuse::Now
    } else if age.saturating_add(BOUNDARY_MS) < lo {
        TwReuse::Later(hi.saturating_sub(age).saturating_add(1))
    } else {
        TwReuse::Boundary
    }
}

impl PortUsage {
    /// Classifies every port of the range for a `connect()` from `source`
    /// to `dest`, from the namespace's TCP sockets.
    pub fn new(dest: Destination, source: IpAddr, settings: Settings, holders: &[Holder]) -> Self {
        let source = unmap(source);
        let (lo, hi) = settings.range;
        let mut status: BTreeMap<u16, PortStatus> = (lo..=hi)
            .map(|p| {
                let s = if settings.is_reserved(p) {
                    PortStatus::Reserved
                } else {
                    PortStatus::Free
                };
                (p, s)
            })
            .collect();
        let mut u = Self {
            destination: dest,
            source,
            reserved: status
                .values()
                .filter(|s| **s == PortStatus::Reserved)
                .count(),
            usable: 0,
            in_use: BTreeMap::new(),
            bound_only: 0,
            listening: 0,
            time_wait: TimeWaitCount::default(),
            free: 0,
            other_destinations: 0,
            ports: Vec::new(),
            holders: Vec::new(),
            settings,
        };
        u.usable = status.len() - u.reserved;
        // Rank of what a port's holders make of it: a bind()-made bucket
        // beats anything in the established hash.
        let rank = |s: PortStatus| match s {
            PortStatus::Reserved => 6,
            PortStatus::Listening => 5,
            PortStatus::BoundOnly => 4,
            PortStatus::InUse => 3,
            PortStatus::TimeWait => 2,
            PortStatus::TimeWaitReusable => 1,
            PortStatus::Free => 0,
        };
        let mut listening = std::collections::BTreeSet::new();
        let mut bound = std::collections::BTreeSet::new();
        for h in holders.iter().filter(|h| h.proto == "tcp") {
            if !u.settings.in_range(h.lport) {
                continue;
            }
            let toward =
                unmap(h.raddr) == dest.addr && h.rport == dest.port && unmap(h.laddr) == source;
            let (st, blocks, why) = match (h.state, h.timewait) {
                ("LISTEN", false) => {
                    listening.insert(h.lport);
                    (
                        PortStatus::Listening,
                        true,
                        "a listener: its port's bucket comes from bind()/listen(), which __inet_hash_connect() skips for every destination".to_owned(),
                    )
                }
                ("CLOSE", false) => {
                    bound.insert(h.lport);
                    (
                        PortStatus::BoundOnly,
                        true,
                        "bound without connect(): its port's bucket comes from bind(), which __inet_hash_connect() skips for every destination".to_owned(),
                    )
                }
                (_, true) if toward => {
                    u.time_wait.count += 1;
                    match tw_reuse(h, &u.settings) {
                        TwReuse::Now => {
                            u.time_wait.reusable_now += 1;
                            (
                                PortStatus::TimeWaitReusable,
                                false,
                                "TIME_WAIT, reusable now (tcp_twsk_unique())".to_owned(),
                            )
                        }
                        TwReuse::Later(ms) => {
                            u.time_wait.reusable_later += 1;
                            u.time_wait.next_reusable_in_ms =
                                Some(u.time_wait.next_reusable_in_ms.map_or(ms, |m| m.min(ms)));
                            (
                                PortStatus::TimeWait,
                                true,
                                format!(
                                    "TIME_WAIT, reusable in about {ms} ms (tcp_tw_reuse_delay)"
                                ),
                            )
                        }
                        TwReuse::Never(why) => {
                            u.time_wait.not_reusable += 1;
                            (
                                PortStatus::TimeWait,
                                true,
                                format!("TIME_WAIT, not reusable: {why}"),
                            )
                        }
                        TwReuse::Boundary => {
                            u.time_wait.at_boundary += 1;
                            (
                                PortStatus::TimeWait,
                                true,
                                "TIME_WAIT, at the tcp_tw_reuse_delay boundary: reusable or not depending on the moment".to_owned(),
                            )
                        }
                    }
                }
                (state, false) if toward => {
                    *u.in_use.entry(state).or_default() += 1;
                    (
                        PortStatus::InUse,
                        true,
                        format!("{state} with the same 4-tuple (__inet_check_established())"),
                    )
                }
                _ => {
                    u.other_destinations += 1;
                    (
                        PortStatus::Free,
                        false,
                        "toward another destination: another 4-tuple".to_owned(),
                    )
                }
            };
            if let Some(cur) = status.get_mut(&h.lport)
                && rank(st) > rank(*cur)
            {
                *cur = st;
            }
            u.holders.push(PortHolder {
                lport: h.lport,
                state: h.state,
                laddr: h.laddr,
                raddr: h.raddr,
                rport: h.rport,
                toward_destination: toward,
                pid: h.pid,
                comm: h.comm.clone(),
                last_pid: h.last_pid,
                last_comm: h.last_comm.clone(),
                expires_ms: h.expires_ms,
                cookie: h.cookie,
                blocks,
                why,
            });
        }
        u.listening = listening.len();
        u.bound_only = bound.difference(&listening).count();
        u.holders
            .sort_by_key(|h| (!h.blocks, !h.toward_destination, h.lport));
        u.ports = status.into_iter().collect();
        u.free = u.ports.iter().filter(|(_, s)| s.usable()).count();
        u
    }
}

/// The predicted outcome of a `connect()` now.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `ok`, or the errno the caller would see.
    pub result: String,
    pub rule: Rule,
    /// Set when the outcome depends on something the tables do not fix:
    /// a timewait socket at the reuse delay's edge, or an odd-sized range
    /// with one free port.
    pub uncertain: Option<String>,
    pub advice: Vec<String>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.result == "ok"
    }
}

/// What `__inet_hash_connect()` would answer now.
pub fn verdict(u: &PortUsage) -> Verdict {
    let (lo, hi) = u.settings.range;
    let size = u32::from(hi) - u32::from(lo) + 1;
    // Conservative: a timewait socket at the edge counts even where a
    // bind()-made bucket decides its port anyway.
    let boundary = u.time_wait.at_boundary > 0;
    let mut uncertain = None;
    let (result, rule) = if u.free > 0 {
        if u.free == 1 && size % 2 == 1 && size > 1 {
            uncertain = Some(format!(
                "the range has an odd number of ports ({size}): __inet_hash_connect() walks all but one of them (remaining &= ~1U), which one depending on a hash, and only one port is free"
            ));
        }
        let reuse = if u.ports.iter().any(|(_, s)| *s == PortStatus::Free) {
            "a port of the range has no socket toward this destination and no bind()-made bucket"
                .to_owned()
        } else {
            "every free port is a TIME_WAIT 4-tuple that tcp_twsk_unique() lets a new connection take over".to_owned()
        };
        (
            "ok".to_owned(),
            Rule {
                function: "__inet_hash_connect",
                condition: format!("{} of {} usable ports free: {reuse}", u.free, u.usable),
            },
        )
    } else {
        if boundary {
            uncertain = Some(format!(
                "{} TIME_WAIT socket(s) are within {BOUNDARY_MS} ms of tcp_tw_reuse_delay: a call a moment later may take one over",
                u.time_wait.at_boundary
            ));
        }
        let mut parts = Vec::new();
        if u.reserved > 0 {
            parts.push(format!("{} reserved", u.reserved));
        }
        if u.listening > 0 {
            parts.push(format!("{} held by listeners", u.listening));
        }
        if u.bound_only > 0 {
            parts.push(format!("{} bound without connect()", u.bound_only));
        }
        let full: usize = u.in_use.values().sum();
        if full > 0 {
            parts.push(format!("{full} connected to {}", u.destination));
        }
        if u.time_wait.count > 0 {
            parts.push(format!(
                "{} in TIME_WAIT toward it, none reusable now",
                u.time_wait.count
            ));
        }
        (
            "EADDRNOTAVAIL".to_owned(),
            Rule {
                function: "__inet_hash_connect",
                condition: format!(
                    "no free port in {lo}-{hi} toward {} from {}: {}",
                    u.destination,
                    u.source,
                    if parts.is_empty() {
                        "the range has no port".to_owned()
                    } else {
                        parts.join(", ")
                    }
                ),
            },
        )
    };
    Verdict {
        advice: advice(u, result == "ok"),
        result,
        rule,
        uncertain,
    }
}

fn advice(u: &PortUsage, ok: bool) -> Vec<String> {
    let s = &u.settings;
    let mut a = Vec::new();
    if ok {
        if u.free * 10 < u.usable.max(1) {
            a.push(format!(
                "only {} of {} ports left toward {}: reuse connections (keep-alive, pooling) before the range runs out",
                u.free, u.usable, u.destination
            ));
        }
        return a;
    }
    if u.bound_only > 0 || u.listening > 0 {
        a.push(
            "sockets that bind() before connect() hold their port for every destination: set IP_BIND_ADDRESS_NO_PORT before bind() so that connect() picks the port per 4-tuple".into(),
        );
    }
    if u.time_wait.count > 0 {
        if u.time_wait.reusable_later > 0 {
            a.push(format!(
                "the first TIME_WAIT 4-tuple becomes reusable in about {} ms (tcp_tw_reuse_delay): retry then",
                u.time_wait.next_reusable_in_ms.unwrap_or_default()
            ));
        }
        if s.tw_reuse == 0 || (s.tw_reuse == 2 && !is_loopback(u.destination.addr)) {
            a.push(format!(
                "sysctl net.ipv4.tcp_tw_reuse=1 lets a new connection take over a TIME_WAIT 4-tuple after tcp_tw_reuse_delay (now {}; 2 covers loopback only)",
                s.tw_reuse
            ));
        }
        if s.timestamps == 0 {
            a.push("tcp_tw_reuse needs TCP timestamps: sysctl net.ipv4.tcp_timestamps=1".into());
        }
        a.push(
            "close from the server side first, or reuse connections (keep-alive, pooling): TIME_WAIT stays with the side that closes first".into(),
        );
    }
    if u.in_use.values().sum::<usize>() > 0 {
        a.push(format!(
            "{} connections are open to {}: pool or multiplex them, or spread over more destination addresses or ports (each has its own 4-tuples)",
            u.in_use.values().sum::<usize>(),
            u.destination
        ));
    }
    let (lo, hi) = s.range;
    if u.reserved > 0 {
        a.push(if u.reserved == 1 {
            "1 port of the range is in ip_local_reserved_ports: release it if it is not needed"
                .to_owned()
        } else {
            format!(
                "{} ports of the range are in ip_local_reserved_ports: release those not needed",
                u.reserved
            )
        });
    }
    a.push(format!(
        "widen net.ipv4.ip_local_port_range (now {lo} {hi}, {} ports), or add source addresses",
        u32::from(hi) - u32::from(lo) + 1
    ));
    a
}

/// What to ask: the destination and the namespace.
#[derive(Debug, Clone)]
pub struct Request {
    pub destination: Destination,
    pub netns: Option<PathBuf>,
    pub json: bool,
}

/// The whole answer (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub netns: u32,
    pub destination: Destination,
    /// The source address a `connect()` would use, from a route lookup.
    pub source: IpAddr,
    pub range: [u16; 2],
    /// Reserved ranges inside the range (`ip_local_reserved_ports`).
    pub reserved: Vec<[u16; 2]>,
    pub usable: usize,
    pub in_use: BTreeMap<&'static str, usize>,
    pub bound_only: usize,
    pub listening: usize,
    pub time_wait: TimeWaitCount,
    pub free: usize,
    pub other_destinations: usize,
    pub tcp_tw_reuse: u8,
    pub tcp_tw_reuse_delay_ms: Option<u32>,
    pub tcp_timestamps: u8,
    pub verdict: String,
    pub rule: Rule,
    pub uncertain: Option<String>,
    pub advice: Vec<String>,
    pub holders: Vec<PortHolder>,
    pub flags_source: String,
    pub assumptions: Vec<String>,
}

/// Why a connect explanation could not be made.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("reading the namespace's sysctls")]
    Sysctl(#[source] io::Error),
}

/// The namespace's sysctls, its inode and the route lookup's answer for
/// `dest`: the source address, or the errno `connect()` would return
/// before it reaches the port choice (`ip_route_connect()`).
fn namespace_facts(
    netns: Option<&Path>,
    dest: Destination,
) -> Result<(Settings, u32, Result<IpAddr, String>), SetupError> {
    netns::in_netns(netns, move || {
        let settings = Settings::read().map_err(SetupError::Sysctl)?;
        let ino = netns::current_netns().map_err(SetupError::Sysctl)?;
        Ok((settings, ino, route_source(dest)))
    })
}

/// RFC 3692's experimental protocol number: a raw socket of it receives
/// nothing another program sends.
const EXPERIMENTAL_PROTO: i32 = 253;

/// The source address the kernel picks for `dest`: a raw socket's
/// `connect()` runs the route lookup (`ip4_datagram_connect()`,
/// `ip6_datagram_connect()`) and sends nothing. A raw socket has no port to
/// allocate, unlike a UDP one, whose `connect()` autobinds a port from the
/// same ephemeral range and fails with EAGAIN when it is all reserved.
/// Without CAP_NET_RAW, a UDP socket does the same lookup.
pub fn route_source(dest: Destination) -> Result<IpAddr, String> {
    let domain = if dest.addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let name = |e: io::Error| crate::kernel::Errno::of(&e).to_string();
    let s = match Socket::new(domain, Type::RAW, Some(EXPERIMENTAL_PROTO.into())) {
        Ok(s) => s,
        Err(_) => Socket::new(domain, Type::DGRAM, None).map_err(name)?,
    };
    s.connect(&dest.socket_addr().into()).map_err(name)?;
    let local = s.local_addr().map_err(name)?;
    local
        .as_socket()
        .map(|a| unmap(a.ip()))
        .ok_or_else(|| "EAFNOSUPPORT".to_owned())
}

const ASSUMPTIONS: [&str; 4] = [
    "the connecting socket is not bound: no bind(), IP_LOCAL_PORT_RANGE or SO_BINDTODEVICE (a bound port is used as is; __inet_hash_connect() then only checks its 4-tuple)",
    "the source address is the one the routing table picks (route lookup of a raw socket's connect(), which sends nothing)",
    "a TIME_WAIT socket carries timestamps when tcp_timestamps is on now, and its age is 60 s minus its timer",
    "a port taken with bind() (then connect()) is skipped for every destination while any socket, TIME_WAIT included, remains on it (its bucket keeps tb->fastreuse >= 0); the socket tables do not show how a port was taken, so such sockets count by their 4-tuple only",
];

/// Collects the namespace's TCP sockets and predicts the `connect()`.
pub fn explain(req: &Request) -> Result<Explanation, ExplainError> {
    explain_with(req, &mut Source::open(), |_| true)
}

/// [`explain`] from an already loaded `source`, with only the holders
/// `keep` accepts (and may name the last owners of).
pub fn explain_with(
    req: &Request,
    source: &mut Source,
    mut keep: impl FnMut(&mut Holder) -> bool,
) -> Result<Explanation, ExplainError> {
    let (settings, netns, route) = namespace_facts(req.netns.as_deref(), req.destination)
        .map_err(|e| ExplainError::Input(crate::error_chain(&e)))?;
    let mut inv = source.collect_tcp(req.netns.as_deref())?;
    inv.holders.retain_mut(|h| keep(h));
    let (usage, v) = match route {
        Ok(src) => {
            let usage = PortUsage::new(req.destination, src, settings, &inv.holders);
            let v = verdict(&usage);
            (usage, v)
        }
        // No route: connect() fails in `ip_route_connect()` before any
        // port is chosen.
        Err(errno) => {
            let dest = req.destination;
            let unspecified = if dest.addr.is_ipv6() {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let v = Verdict {
                result: errno,
                rule: Rule {
                    function: "ip_route_connect",
                    condition: format!(
                        "no route to {dest} in this namespace: connect() fails before choosing a port"
                    ),
                },
                uncertain: None,
                advice: vec![
                    "add a route (or an address) toward the destination in this namespace".into(),
                ],
            };
            (PortUsage::new(dest, unspecified, settings, &[]), v)
        }
    };
    let mut assumptions: Vec<String> = ASSUMPTIONS.iter().map(|s| (*s).to_owned()).collect();
    if inv.flags_source != FLAGS_KERNEL {
        assumptions.push(format!(
            "sockets from sock_diag ({}): TCP sockets bound without listen() or connect() are listed there only from Linux 6.6 on",
            inv.flags_source
        ));
    }
    Ok(Explanation {
        netns,
        destination: usage.destination,
        source: usage.source,
        range: [usage.settings.range.0, usage.settings.range.1],
        reserved: usage
            .settings
            .reserved_in_range()
            .into_iter()
            .map(|(a, b)| [a, b])
            .collect(),
        usable: usage.usable,
        in_use: usage.in_use,
        bound_only: usage.bound_only,
        listening: usage.listening,
        time_wait: usage.time_wait,
        free: usage.free,
        other_destinations: usage.other_destinations,
        tcp_tw_reuse: usage.settings.tw_reuse,
        tcp_tw_reuse_delay_ms: usage.settings.tw_reuse_delay_ms,
        tcp_timestamps: usage.settings.timestamps,
        verdict: v.result,
        rule: v.rule,
        uncertain: v.uncertain,
        advice: v.advice,
        holders: usage.holders,
        flags_source: inv.flags_source,
        assumptions,
    })
}

fn owner(h: &PortHolder) -> String {
    match (h.pid, &h.comm, h.last_pid, &h.last_comm) {
        // Process names are escaped for the terminal (crate::util::escape).
        (Some(p), Some(c), ..) => format!("pid {p} {}", crate::util::escape::text(c)),
        (None, _, Some(p), Some(c)) => {
            format!("no owner, was pid {p} {}", crate::util::escape::text(c))
        }
        _ => "no owner".into(),
    }
}

/// The one-screen text form.
pub fn write_text(e: &Explanation, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "connect() to {} from {} in netns {}",
        e.destination, e.source, e.netns
    )?;
    let reserved: Vec<String> = e
        .reserved
        .iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    writeln!(
        out,
        "  ephemeral range {}-{}: {} usable ports{}",
        e.range[0],
        e.range[1],
        e.usable,
        if reserved.is_empty() {
            String::new()
        } else {
            format!(" (reserved: {})", reserved.join(","))
        }
    )?;
    let in_use: Vec<String> = e.in_use.iter().map(|(s, n)| format!("{n} {s}")).collect();
    writeln!(
        out,
        "  toward it: {} connected{}, {} TIME_WAIT ({} reusable now, {} later, {} never{})",
        e.in_use.values().sum::<usize>(),
        if in_use.is_empty() {
            String::new()
        } else {
            format!(" ({})", in_use.join(", "))
        },
        e.time_wait.count,
        e.time_wait.reusable_now,
        e.time_wait.reusable_later,
        e.time_wait.not_reusable,
        if e.time_wait.at_boundary > 0 {
            format!(", {} at the delay's edge", e.time_wait.at_boundary)
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "  held for every destination: {} bound without connect(), {} listening; {} connections toward other destinations",
        e.bound_only, e.listening, e.other_destinations
    )?;
    writeln!(
        out,
        "  tcp_tw_reuse={} tcp_tw_reuse_delay={} tcp_timestamps={}",
        e.tcp_tw_reuse,
        e.tcp_tw_reuse_delay_ms
            .map_or("(no such sysctl: 1 s)".to_owned(), |d| format!("{d}ms")),
        e.tcp_timestamps
    )?;
    writeln!(out, "  free ports toward it: {}", e.free)?;
    let shown: Vec<&PortHolder> = e.holders.iter().filter(|h| h.blocks).collect();
    if !shown.is_empty() {
        writeln!(
            out,
            "{:<6} {:<11} {:<28} {:<28} {:<24} WHY",
            "PORT", "STATE", "LOCAL", "REMOTE", "OWNER"
        )?;
        for h in shown.iter().take(TEXT_HOLDERS) {
            writeln!(
                out,
                "{:<6} {:<11} {:<28} {:<28} {:<24} {}",
                h.lport,
                h.state,
                fmt_addr(h.laddr, h.lport),
                fmt_addr(h.raddr, h.rport),
                owner(h),
                crate::util::escape::text(&h.why)
            )?;
        }
        if shown.len() > TEXT_HOLDERS {
            writeln!(out, "... and {} more", shown.len() - TEXT_HOLDERS)?;
        }
    }
    writeln!(out)?;
    write!(out, "connect() {}", e.verdict)?;
    if let Some(u) = &e.uncertain {
        write!(out, " (uncertain: {u})")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "  rule: {}: {}",
        e.rule.function,
        crate::util::escape::text(&e.rule.condition)
    )?;
    for a in &e.advice {
        writeln!(out, "  advice: {}", crate::util::escape::text(a))?;
    }
    for a in &e.assumptions {
        writeln!(out, "assumes: {a}")?;
    }
    Ok(())
}

/// `inspector explain --connect`: prints the answer as text or one JSON object.
pub fn command(req: &Request) -> Result<(), ExplainError> {
    let e = explain(req)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if req.json {
        serde_json::to_writer(&mut out, &e).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        write_text(&e, &mut out)?;
    }
    Ok(())
}

/// One line for a failed `connect()` in the stream: the rule, the count
/// behind it and the first holders.
pub fn summary(e: &Explanation) -> String {
    let mut line = format!("{}: {}", e.rule.function, e.rule.condition);
    let holders: Vec<String> = e
        .holders
        .iter()
        .filter(|h| h.blocks)
        .take(3)
        .map(|h| {
            format!(
                "{} {} -> {} ({})",
                h.state,
                fmt_addr(h.laddr, h.lport),
                fmt_addr(h.raddr, h.rport),
                owner(h)
            )
        })
        .collect();
    if !holders.is_empty() {
        line.push_str(&format!("; held by {}", holders.join(", ")));
    }
    if let Some(a) = e.advice.first() {
        line.push_str(&format!("; {a}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lo: u16, hi: u16) -> Settings {
        Settings {
            range: (lo, hi),
            reserved: Vec::new(),
            tw_reuse: 2,
            tw_reuse_delay_ms: Some(1000),
            timestamps: 1,
        }
    }

    fn holder(lport: u16, state: &'static str, raddr: &str, rport: u16) -> Holder {
        let raddr: IpAddr = raddr.parse().expect("address");
        Holder {
            proto: "tcp",
            family: "inet",
            laddr: "127.0.0.1".parse().expect("address"),
            lport,
            raddr,
            rport,
            state,
            timewait: state == "TIME_WAIT",
            expires_ms: (state == "TIME_WAIT").then_some(59_500),
            pid: None,
            comm: None,
            pids: Vec::new(),
            last_pid: None,
            last_comm: None,
            uid: None,
            cookie: u64::from(lport),
            ino: None,
            reuseaddr: Some(false),
            reuseport: Some(false),
            flags_source: FLAGS_KERNEL.into(),
            v6only: Some(false),
            bound_dev_if: 0,
            cgroup: None,
            container: None,
        }
    }

    fn dest(s: &str) -> Destination {
        Destination::parse(s).expect("destination")
    }

    #[test]
    fn destinations_are_ip_literals_with_a_port() {
        assert_eq!(dest("127.0.0.1:80").port, 80);
        assert_eq!(
            dest("[::1]:80").addr,
            "::1".parse::<IpAddr>().expect("addr")
        );
        assert_eq!(
            dest("[::ffff:10.0.0.1]:80").addr,
            "10.0.0.1".parse::<IpAddr>().expect("addr")
        );
        for (bad, needle) in [
            ("localhost:80", "not an IP address"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "not a port"),
            ("127.0.0.1:70000", "not a port"),
            ("::1:80", "brackets"),
            ("0.0.0.0:80", "unicast"),
            ("noport", "no port"),
        ] {
            let e = Destination::parse(bad).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn sysctl_values_parse() {
        assert_eq!(parse_range("32768\t60999"), Some((32768, 60999)));
        assert_eq!(parse_range("5 4"), None);
        assert_eq!(
            parse_reserved("8080,40000-40003"),
            vec![(8080, 8080), (40000, 40003)]
        );
        assert!(parse_reserved("").is_empty());
        let mut s = settings(40000, 40009);
        s.reserved = parse_reserved("39990-40001,40005,50000");
        assert_eq!(s.reserved_in_range(), vec![(40000, 40001), (40005, 40005)]);
    }

    #[test]
    fn exhausted_toward_one_destination_free_toward_another() {
        let holders: Vec<Holder> = (40000..=40003)
            .map(|p| {
                holder(
                    p,
                    if p % 2 == 0 {
                        "ESTABLISHED"
                    } else {
                        "TIME_WAIT"
                    },
                    "127.0.0.1",
                    8080,
                )
            })
            .collect();
        let src: IpAddr = "127.0.0.1".parse().expect("addr");
        let u = PortUsage::new(
            dest("127.0.0.1:8080"),
            src,
            settings(40000, 40003),
            &holders,
        );
        assert_eq!(u.free, 0);
        assert_eq!(u.in_use.get("ESTABLISHED"), Some(&2));
        assert_eq!(u.time_wait.count, 2);
        // 1 s old at most: not reusable yet under the default delay.
        assert_eq!(u.time_wait.reusable_later, 2);
        let v = verdict(&u);
        assert_eq!(v.result, "EADDRNOTAVAIL");
        assert!(v.rule.condition.contains("40000-40003"), "{v:?}");
        let other = PortUsage::new(
            dest("127.0.0.1:8081"),
            src,
            settings(40000, 40003),
            &holders,
        );
        assert_eq!(other.free, 4);
        assert!(verdict(&other).is_ok());
    }

    #[test]
    fn time_wait_reuse_follows_tcp_twsk_unique() {
        let src: IpAddr = "127.0.0.1".parse().expect("addr");
        let mut tw = holder(40000, "TIME_WAIT", "127.0.0.1", 8080);
        tw.expires_ms = Some(TIMEWAIT_MS - 5000);
        let check = |s: Settings, h: &Holder| {
            let u = PortUsage::new(dest("127.0.0.1:8080"), src, s, std::slice::from_ref(h));
            verdict(&u).result
        };
        assert_eq!(check(settings(40000, 40000), &tw), "ok");
        let mut s = settings(40000, 40000);
        s.tw_reuse = 0;
        assert_eq!(check(s.clone(), &tw), "EADDRNOTAVAIL");
        s.tw_reuse = 1;
        s.timestamps = 0;
        assert_eq!(check(s, &tw), "EADDRNOTAVAIL");
        let mut fw2 = tw.clone();
        fw2.state = "FIN_WAIT2";
        assert_eq!(check(settings(40000, 40000), &fw2), "EADDRNOTAVAIL");
        // Not loopback: tcp_tw_reuse=2 does not apply.
        let mut far = tw.clone();
        far.laddr = "10.1.1.1".parse().expect("addr");
        far.raddr = "10.1.1.1".parse().expect("addr");
        let u = PortUsage::new(
            dest("10.1.1.1:8080"),
            "10.1.1.1".parse().expect("addr"),
            settings(40000, 40000),
            std::slice::from_ref(&far),
        );
        assert_eq!(verdict(&u).result, "EADDRNOTAVAIL");
        // At the delay's edge: uncertain.
        let mut edge = tw.clone();
        edge.expires_ms = Some(TIMEWAIT_MS - 1020);
        let u = PortUsage::new(
            dest("127.0.0.1:8080"),
            src,
            settings(40000, 40000),
            std::slice::from_ref(&edge),
        );
        assert!(verdict(&u).uncertain.is_some());
    }

    #[test]
    fn bound_and_listening_ports_block_every_destination() {
        let src: IpAddr = "127.0.0.1".parse().expect("addr");
        let mut s = settings(40000, 40003);
        s.reserved = vec![(40003, 40003)];
        let holders = vec![
            holder(40000, "LISTEN", "0.0.0.0", 0),
            holder(40001, "CLOSE", "0.0.0.0", 0),
            holder(40002, "ESTABLISHED", "127.0.0.1", 9),
        ];
        let u = PortUsage::new(dest("127.0.0.1:8080"), src, s.clone(), &holders);
        assert_eq!((u.listening, u.bound_only, u.reserved), (1, 1, 1));
        assert_eq!(u.other_destinations, 1);
        assert_eq!(u.free, 1);
        let u = PortUsage::new(dest("127.0.0.1:9"), src, s, &holders);
        assert_eq!(u.free, 0);
        let v = verdict(&u);
        assert_eq!(v.result, "EADDRNOTAVAIL");
        assert!(
            v.advice
                .iter()
                .any(|a| a.contains("IP_BIND_ADDRESS_NO_PORT"))
        );
    }

    #[test]
    fn odd_range_with_one_free_port_is_uncertain() {
        let src: IpAddr = "127.0.0.1".parse().expect("addr");
        let holders = vec![
            holder(40000, "ESTABLISHED", "127.0.0.1", 8080),
            holder(40001, "ESTABLISHED", "127.0.0.1", 8080),
        ];
        let u = PortUsage::new(
            dest("127.0.0.1:8080"),
            src,
            settings(40000, 40002),
            &holders,
        );
        let v = verdict(&u);
        assert!(v.is_ok());
        assert!(v.uncertain.is_some());
    }
}
