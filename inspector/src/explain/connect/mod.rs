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
//!
//! The files of this folder: what each port of the range is to the
//! destination (`usage`), and the verdict with its advice (`verdict`). No
//! I/O here: the namespace was read before ([`super::inventory`]).

mod usage;
mod verdict;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::Serialize;

pub use self::{
    usage::{PortHolder, PortStatus, PortUsage, TimeWaitCount},
    verdict::{Verdict, verdict},
};
use super::{
    inventory::{ConnectFacts, FLAGS_KERNEL},
    outcome::{Outcome, Rule},
    request::ConnectPlan,
};
pub use super::{
    inventory::{Settings, parse_range, parse_reserved, route_source},
    request::Destination,
};
use crate::kernel::TcpState;

/// How close to the reuse delay a timewait socket's age must be for the
/// answer to depend on when exactly the call is made.
pub const BOUNDARY_MS: u32 = 100;

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
    pub in_use: BTreeMap<TcpState, usize>,
    pub bound_only: usize,
    pub listening: usize,
    pub time_wait: TimeWaitCount,
    pub free: usize,
    pub other_destinations: usize,
    pub tcp_tw_reuse: u8,
    pub tcp_tw_reuse_delay_ms: Option<u32>,
    pub tcp_timestamps: u8,
    pub verdict: Outcome,
    pub rule: Rule,
    pub uncertain: Option<String>,
    pub advice: Vec<String>,
    pub holders: Vec<PortHolder>,
    pub flags_source: String,
    pub assumptions: Vec<String>,
    /// The same, a few words each, for a screen.
    #[serde(skip)]
    pub assumptions_short: Vec<&'static str>,
}

/// What the model assumes, in full, and in a few words.
const ASSUMPTIONS: [&str; 4] = [
    "the connecting socket is not bound: no bind(), IP_LOCAL_PORT_RANGE or SO_BINDTODEVICE (a bound port is used as is; __inet_hash_connect() then only checks its 4-tuple)",
    "the source address is the one the routing table picks (route lookup of a raw socket's connect(), which sends nothing)",
    "a TIME_WAIT socket carries timestamps when tcp_timestamps is on now, and its age is 60 s minus its timer",
    "a port taken with bind() (then connect()) is skipped for every destination while any socket, TIME_WAIT included, remains on it (its bucket keeps tb->fastreuse >= 0); the socket tables do not show how a port was taken, so such sockets count by their 4-tuple only",
];
const ASSUMPTIONS_SHORT: [&str; 4] = [
    "the socket is not bound before connect()",
    "its source address is the route's choice",
    "TIME_WAIT sockets carry timestamps if tcp_timestamps is on, and are 60 s minus their timer old",
    "a port taken with bind() and then connect() counts by its 4-tuple only",
];

/// Predicts the planned `connect()` from the namespace's facts.
pub fn predict(plan: &ConnectPlan, facts: ConnectFacts) -> Explanation {
    let ConnectFacts {
        inventory: inv,
        settings,
        route,
    } = facts;
    let dest = plan.destination;
    let (usage, v) = match route {
        Ok(src) => {
            let usage = PortUsage::new(dest, src, settings, &inv.holders);
            let v = verdict(&usage);
            (usage, v)
        }
        // No route: connect() fails in `ip_route_connect()` before any
        // port is chosen.
        Err(errno) => {
            let unspecified = if dest.addr.is_ipv6() {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let v = Verdict {
                result: Outcome::Err(errno),
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
    let mut assumptions_short = ASSUMPTIONS_SHORT.to_vec();
    if inv.flags_source != FLAGS_KERNEL {
        assumptions.push(format!(
            "sockets from sock_diag ({}): TCP sockets bound without listen() or connect() are listed there only from Linux 6.6 on",
            inv.flags_source
        ));
        assumptions_short.push("sock_diag lists sockets only bound from Linux 6.6 on");
    }
    Explanation {
        netns: inv.netns,
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
        assumptions_short,
    }
}

#[cfg(test)]
mod tests;
