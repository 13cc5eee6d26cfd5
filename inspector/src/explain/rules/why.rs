//! Why one socket keeps another from the port, in words: the conditions of
//! `inet_bind_conflict()` and `udp_lib_lport_inuse()` that did not hold.

use super::Sock;
use crate::explain::words::fmt_addr;

/// The condition that makes `sk2` block `sk` over TCP, in words.
pub(super) fn tcp_why(sk: &Sock, sk2: &Sock) -> String {
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
pub(super) fn udp_why(sk: &Sock, sk2: &Sock) -> String {
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
    let a = fmt_addr(sk.addr, sk.port);
    let b = fmt_addr(sk2.addr, sk2.port);
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
