//! Small pieces of wording every part of the explainer uses: addresses,
//! owners, socket options, durations; and how the kernel keys an address. Plain strings: whoever prints them
//! to a terminal escapes what came from other processes.

use std::net::IpAddr;

/// `addr:port`, with brackets for IPv6.
pub fn fmt_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4: the kernel keys those connections
/// by their IPv4 addresses (`tcp_v6_connect()` hands them to
/// `tcp_v4_connect()`).
pub fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    }
}

/// Who holds a socket: `pid 12 nginx`; for an ownerless (TIME_WAIT) socket
/// whose connection's last owner is known, `no owner, was pid 12 nginx`.
pub fn owner(pid: Option<u32>, comm: Option<&str>, last: Option<(u32, &str)>) -> String {
    match (pid, comm, last) {
        (Some(p), Some(c), _) => format!("pid {p} {c}"),
        (Some(p), None, _) => format!("pid {p}"),
        (None, _, Some((p, c))) => format!("no owner, was pid {p} {c}"),
        _ => "no owner".into(),
    }
}

/// SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY as three letters: `R`, `r`,
/// `6` when set, `.` when not, `?` when unknown.
pub fn opts(reuseaddr: Option<bool>, reuseport: Option<bool>, v6only: Option<bool>) -> String {
    let f = |v: Option<bool>, c: char| match v {
        Some(true) => c,
        Some(false) => '.',
        None => '?',
    };
    [f(reuseaddr, 'R'), f(reuseport, 'r'), f(v6only, '6')]
        .iter()
        .collect()
}

/// The legend of [`opts`].
pub const OPTS_LEGEND: &str = "R SO_REUSEADDR, r SO_REUSEPORT, 6 IPV6_V6ONLY, . unset, ? unknown";

/// Whole seconds of a millisecond span, rounded up: a socket that expires
/// in 0.2 s is not free "in 0 s".
pub fn secs(ms: u32) -> u32 {
    ms.div_ceil(1000)
}

/// A span of expiry times: `in 12 s`, or `in 12-58 s`.
pub fn within(first_ms: u32, last_ms: u32) -> String {
    let (a, b) = (secs(first_ms), secs(last_ms));
    if a == b {
        format!("in {a} s")
    } else {
        format!("in {a}-{b} s")
    }
}

/// `1 socket`, `2 sockets`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(fmt_addr("::1".parse().expect("ip"), 80), "[::1]:80");
        assert_eq!(fmt_addr("10.0.0.1".parse().expect("ip"), 80), "10.0.0.1:80");
        assert_eq!(owner(Some(7), Some("srv"), None), "pid 7 srv");
        assert_eq!(
            owner(None, None, Some((7, "srv"))),
            "no owner, was pid 7 srv"
        );
        assert_eq!(owner(None, None, None), "no owner");
        assert_eq!(opts(Some(true), Some(false), None), "R.?");
        assert_eq!(within(11_200, 57_100), "in 12-58 s");
        assert_eq!(within(200, 900), "in 1 s");
        assert_eq!(count(1, "socket", "sockets"), "1 socket");
    }
}
