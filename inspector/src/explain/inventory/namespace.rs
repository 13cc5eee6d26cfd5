//! What a network namespace says besides its sockets: the sysctls that
//! decide which local port a `connect()` gets, and the source address its
//! routing table picks for a destination. Read on a thread inside the
//! namespace (see [`super::Source`]).

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::{
    explain::words::unmap,
    kernel::{Errno, netns},
};

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

    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    pub fn in_range(&self, port: u16) -> bool {
        (self.range.0..=self.range.1).contains(&port)
    }

    /// How many ports the range has, reserved ones included.
    pub fn size(&self) -> u32 {
        u32::from(self.range.1) - u32::from(self.range.0) + 1
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

/// RFC 3692's experimental protocol number: a raw socket of it receives
/// nothing another program sends.
const EXPERIMENTAL_PROTO: i32 = 253;

/// The source address the calling thread's namespace picks for `dest`: a
/// raw socket's `connect()` runs the route lookup
/// (`ip4_datagram_connect()`, `ip6_datagram_connect()`) and sends nothing.
/// A raw socket has no port to allocate, unlike a UDP one, whose
/// `connect()` autobinds a port from the same ephemeral range and fails
/// with EAGAIN when it is all reserved. Without CAP_NET_RAW, a UDP socket
/// does the same lookup. The error is the errno `connect()` would see
/// before it reaches the port choice (`ip_route_connect()`).
pub fn route_source(dest: SocketAddr) -> Result<IpAddr, Errno> {
    let domain = if dest.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let errno = |e: io::Error| Errno::of(&e);
    let s = match Socket::new(domain, Type::RAW, Some(EXPERIMENTAL_PROTO.into())) {
        Ok(s) => s,
        Err(_) => Socket::new(domain, Type::DGRAM, None).map_err(errno)?,
    };
    s.connect(&dest.into()).map_err(errno)?;
    let local = s.local_addr().map_err(errno)?;
    local
        .as_socket()
        .map(|a| unmap(a.ip()))
        .ok_or(Errno::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_values_parse() {
        assert_eq!(parse_range("32768\t60999"), Some((32768, 60999)));
        assert_eq!(parse_range("5 4"), None);
        assert_eq!(
            parse_reserved("8080,40000-40003"),
            vec![(8080, 8080), (40000, 40003)]
        );
        assert!(parse_reserved("").is_empty());
        let s = Settings {
            range: (40000, 40009),
            reserved: parse_reserved("39990-40001,40005,50000"),
            tw_reuse: 2,
            tw_reuse_delay_ms: Some(1000),
            timestamps: 1,
        };
        assert_eq!(s.reserved_in_range(), vec![(40000, 40001), (40005, 40005)]);
        assert_eq!(s.size(), 10);
    }
}
