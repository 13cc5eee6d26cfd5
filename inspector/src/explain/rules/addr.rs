//! Which sockets' addresses overlap, as the kernel compares them:
//! `inet_rcv_saddr_equal()` and its IPv4/IPv6 halves, the bhash2 lookups
//! of `inet_csk_get_port()`, and the bound-device check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Sock;

/// `LOOPBACK4_IPV6` (include/net/ipv6.h): the IPv4 receive address the
/// kernel gives an IPv6 socket once connect() picked a non-mapped source.
const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

impl Sock {
    /// The socket's `sk_v6_rcv_saddr`, or `None` for an IPv4 socket
    /// (`inet6_rcv_saddr()`).
    pub(super) fn v6(&self) -> Option<Ipv6Addr> {
        match self.addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }

    /// The socket's `inet_rcv_saddr`: the IPv4 address; for IPv6 the mapped
    /// IPv4 address, 0 for `::`, and otherwise 0 after `__inet6_bind` (which
    /// also sets `sk_ipv6only`, so it is never compared) or
    /// `LOOPBACK4_IPV6` after connect().
    pub(super) fn rcv_saddr(&self) -> u32 {
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

    /// An IPv4 socket, or an IPv6 one on a v4-mapped address.
    pub(super) fn is_v4_like(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
        }
    }

    /// The flags after bind(): `__inet6_bind` sets `sk_ipv6only` for a
    /// specific non-mapped IPv6 address.
    pub(super) fn after_bind(&self) -> Self {
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
pub(super) fn ipv4_rcv_saddr_equal(
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
pub(super) fn ipv6_rcv_saddr_equal(
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
pub(in crate::explain) fn inet_rcv_saddr_equal(sk: &Sock, sk2: &Sock, wildcard: bool) -> bool {
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
pub(super) fn tcp_addr_overlap(sk: &Sock, sk2: &Sock) -> bool {
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
pub(super) fn dev_overlap(sk: &Sock, sk2: &Sock) -> bool {
    sk.bound_dev_if == 0 || sk2.bound_dev_if == 0 || sk.bound_dev_if == sk2.bound_dev_if
}
