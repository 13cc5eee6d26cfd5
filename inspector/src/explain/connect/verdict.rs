//! What `__inet_hash_connect()` answers a `connect()` from an unbound
//! socket, from the range as one destination sees it ([`PortUsage`]), and
//! what would change a refusal.

use serde::Serialize;

use super::{
    BOUNDARY_MS,
    usage::{PortStatus, PortUsage, is_loopback},
};
use crate::{
    explain::{
        outcome::{Outcome, Rule},
        words::{secs, within},
    },
    kernel::Errno,
};

/// The predicted outcome of a `connect()` now.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `ok`, or the errno the caller would see.
    pub result: Outcome,
    pub rule: Rule,
    /// Set when the outcome depends on something the tables do not fix:
    /// a timewait socket at the reuse delay's edge, or an odd-sized range
    /// with one free port.
    pub uncertain: Option<String>,
    /// Safest first: waiting, then changes to the client, then host-wide
    /// sysctls.
    pub advice: Vec<String>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// What `__inet_hash_connect()` would answer now.
pub fn verdict(u: &PortUsage) -> Verdict {
    let (lo, hi) = u.settings.range;
    let size = u.settings.size();
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
            Outcome::Ok,
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
            Outcome::Err(Errno::EADDRNOTAVAIL),
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
        advice: advice(u, result.is_ok()),
        result,
        rule,
        uncertain,
    }
}

/// The soonest a port toward the destination frees by itself: the first
/// expiry of a TIME_WAIT socket that alone keeps its port.
fn first_port_free_ms(u: &PortUsage) -> Option<u32> {
    u.holders
        .iter()
        .filter(|h| h.timewait && h.toward_destination && h.blocks)
        .filter(|h| {
            u.ports
                .iter()
                .any(|&(p, s)| p == h.lport && s == PortStatus::TimeWait)
        })
        .filter_map(|h| h.expires_ms)
        .min()
}

/// What would change a refusal, safest first: waiting for the kernel to
/// free a port, then changes to the client, then host-wide sysctls, which
/// change every program's connections.
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
    // Waiting.
    if u.time_wait.reusable_later > 0 {
        a.push(format!(
            "the first TIME_WAIT 4-tuple toward it can be taken over in about {} ms (tcp_tw_reuse_delay): retry then",
            u.time_wait.next_reusable_in_ms.unwrap_or_default()
        ));
    }
    if let Some(first) = first_port_free_ms(u) {
        let all = u
            .time_wait
            .expires_in_ms
            .map(|[_, last]| format!(", the last in {} s", secs(last)))
            .unwrap_or_default();
        a.push(format!(
            "wait: a port frees when the first TIME_WAIT socket toward it expires, {}{all}; nothing needs stopping",
            within(first, first)
        ));
    }
    // The client.
    let open: usize = u.in_use.values().sum();
    if open > 0 {
        a.push(format!(
            "{open} connections are open to {}: pool or multiplex them, or spread over more destination addresses or ports (each has its own 4-tuples)",
            u.destination
        ));
    }
    if u.bound_only > 0 || u.listening > 0 {
        a.push(
            "sockets that bind() before connect() hold their port for every destination: set IP_BIND_ADDRESS_NO_PORT before bind() so that connect() picks the port per 4-tuple".into(),
        );
    }
    if u.time_wait.count > 0 {
        a.push(
            "close from the server side first, or reuse connections (keep-alive, pooling): TIME_WAIT stays with the side that closes first".into(),
        );
    }
    // The host.
    if u.reserved > 0 {
        a.push(if u.reserved == 1 {
            "1 port of the range is in net.ipv4.ip_local_reserved_ports: release it if it is not needed"
                .to_owned()
        } else {
            format!(
                "{} ports of the range are in net.ipv4.ip_local_reserved_ports: release those not needed",
                u.reserved
            )
        });
    }
    if u.time_wait.count > 0 {
        let reuse_off = match s.tw_reuse {
            0 => Some("tcp_tw_reuse is 0 now: off".to_owned()),
            2 if !is_loopback(u.destination.addr) => Some(format!(
                "tcp_tw_reuse is 2 now: loopback connections only, and {} is not loopback",
                u.destination.addr
            )),
            _ => None,
        };
        if let Some(now) = reuse_off {
            a.push(format!(
                "host-wide: sysctl -w net.ipv4.tcp_tw_reuse=1 lets a new connection take over a TIME_WAIT 4-tuple {} after it entered TIME_WAIT ({now})",
                match s.tw_reuse_delay_ms {
                    Some(d) => format!("{d} ms (net.ipv4.tcp_tw_reuse_delay)"),
                    None => "1 s".to_owned(),
                }
            ));
        }
        if s.timestamps == 0 {
            a.push(
                "host-wide: tcp_tw_reuse needs TCP timestamps, and net.ipv4.tcp_timestamps is 0 now: sysctl -w net.ipv4.tcp_timestamps=1".into(),
            );
        }
    }
    let (lo, hi) = s.range;
    a.push(format!(
        "host-wide: widen net.ipv4.ip_local_port_range ({lo}-{hi} now: {} ports), or add source addresses",
        s.size()
    ));
    a
}
