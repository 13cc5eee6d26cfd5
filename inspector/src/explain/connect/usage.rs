//! The ephemeral range seen from one destination: what each port is to a
//! `connect()` toward it, from the namespace's TCP sockets
//! (`__inet_hash_connect()`, `__inet_check_established()`,
//! `tcp_twsk_unique()`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::Serialize;

use super::{BOUNDARY_MS, Destination};
use crate::{
    explain::{
        inventory::{Holder, Settings},
        words::unmap,
    },
    kernel::{Proto, TcpState},
};

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): a TIME_WAIT timer's length.
pub(super) const TIMEWAIT_MS: u32 = 60_000;
/// `LOOPBACK_IFINDEX` (include/net/flow.h).
const LOOPBACK_IFINDEX: i32 = 1;

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
    pub(super) fn usable(self) -> bool {
        matches!(self, Self::Free | Self::TimeWaitReusable)
    }
}

/// One socket on a port of the range, and what it means to the destination.
#[derive(Debug, Clone, Serialize)]
pub struct PortHolder {
    pub lport: u16,
    pub state: TcpState,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Toward the destination asked about (same source address too).
    pub toward_destination: bool,
    /// A timewait socket (its `state` is its substate).
    pub timewait: bool,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// A TIME_WAIT socket's connection's last owner, where the probes saw it.
    pub last_pid: Option<u32>,
    pub last_comm: Option<String>,
    pub expires_ms: Option<u32>,
    /// A TIME_WAIT socket that `tcp_twsk_unique()` lets a new connection
    /// take over once `tcp_tw_reuse_delay` has passed: in about this long.
    pub reusable_in_ms: Option<u32>,
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
    /// Not reusable by a new connection under the current settings
    /// (`tcp_tw_reuse` off, or not for this address, or no timestamps):
    /// these free only when their timers expire.
    pub not_reusable: usize,
    /// Within [`BOUNDARY_MS`] of the reuse delay: the answer depends on
    /// the moment of the call.
    pub at_boundary: usize,
    /// When the first and the last of them expire (ms from now), where
    /// their timers could be read.
    pub expires_in_ms: Option<[u32; 2]>,
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
    pub in_use: BTreeMap<TcpState, usize>,
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

pub(super) fn is_loopback(a: IpAddr) -> bool {
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
    if h.state == TcpState::FIN_WAIT2 {
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
        let mut listening = BTreeSet::new();
        let mut bound = BTreeSet::new();
        for h in holders.iter().filter(|h| h.proto == Proto::Tcp) {
            if !u.settings.in_range(h.lport) {
                continue;
            }
            let toward =
                unmap(h.raddr) == dest.addr && h.rport == dest.port && unmap(h.laddr) == source;
            let mut reusable_in_ms = None;
            let (st, blocks, why) = match (h.state, h.timewait) {
                (TcpState::LISTEN, false) => {
                    listening.insert(h.lport);
                    (
                        PortStatus::Listening,
                        true,
                        "a listener: its port's bucket comes from bind()/listen(), which __inet_hash_connect() skips for every destination".to_owned(),
                    )
                }
                (TcpState::CLOSE, false) => {
                    bound.insert(h.lport);
                    (
                        PortStatus::BoundOnly,
                        true,
                        "bound without connect(): its port's bucket comes from bind(), which __inet_hash_connect() skips for every destination".to_owned(),
                    )
                }
                (_, true) if toward => {
                    u.time_wait.count += 1;
                    if let Some(ms) = h.expires_ms {
                        let [first, last] = u.time_wait.expires_in_ms.get_or_insert([ms, ms]);
                        *first = (*first).min(ms);
                        *last = (*last).max(ms);
                    }
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
                            reusable_in_ms = Some(ms);
                            (
                                PortStatus::TimeWait,
                                true,
                                "TIME_WAIT, reusable once older than tcp_tw_reuse_delay".to_owned(),
                            )
                        }
                        TwReuse::Never(why) => {
                            u.time_wait.not_reusable += 1;
                            (
                                PortStatus::TimeWait,
                                true,
                                format!("TIME_WAIT, not reusable ({why}): free when it expires"),
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
                timewait: h.timewait,
                pid: h.pid,
                comm: h.comm.clone(),
                last_pid: h.last_pid,
                last_comm: h.last_comm.clone(),
                expires_ms: h.expires_ms,
                reusable_in_ms,
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
