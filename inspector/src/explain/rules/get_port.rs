//! The port decisions: `inet_csk_get_port()` for TCP (the bucket's fast
//! paths, then `inet_bind_conflict()` against every owner) and
//! `udp_lib_get_port()` for UDP, and the cache the TCP bucket keeps
//! (`inet_csk_update_fastreuse()`).

use super::{
    Phase, Port, Proto, Sock, SockState, UdpWalk, Verdict,
    addr::{
        dev_overlap, inet_rcv_saddr_equal, ipv4_rcv_saddr_equal, ipv6_rcv_saddr_equal,
        tcp_addr_overlap,
    },
    why::{tcp_why, udp_why},
};
use crate::{explain::words::fmt_addr, kernel::Errno};

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

/// The state `inet_csk_update_fastreuse()` keeps in a TCP bind bucket
/// (`struct inet_bind_bucket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bucket {
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

impl Port {
    /// `inet_csk_get_port()` for an explicit port.
    pub(super) fn tcp_get_port(&self, sk: &Sock, phase: Phase, own: Option<usize>) -> Verdict {
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
                    Errno::EADDRINUSE,
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
    pub(super) fn udp_get_port(&self, sk: &Sock) -> Verdict {
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
                            fmt_addr(sk2.addr, sk2.port),
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
                fmt_addr(self.socks[m].addr, self.socks[m].port)
            );
        }
        Verdict {
            blockers,
            why,
            ..Verdict::err(Errno::EADDRINUSE, F, condition)
        }
    }

    /// `inet_csk_update_fastreuse()` after a successful get_port.
    pub(super) fn update_fastreuse(&mut self, sk: &Sock, phase: Phase) {
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
