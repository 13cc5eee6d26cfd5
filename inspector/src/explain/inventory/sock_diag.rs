//! The fallback where the kernel refuses iterator programs: a
//! NETLINK_SOCK_DIAG dump (what `ss` uses) lists the sockets, owners come
//! from reading `/proc/*/fd` links, and SO_REUSEADDR/SO_REUSEPORT stay
//! unknown (sock_diag does not report them). With the iterators, a dump
//! still gives the order of a UDP port's hash chain.

use std::{
    collections::HashMap,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
};

use super::{Holder, InventoryError};
use crate::kernel::{
    Family, Proto, TcpState, netns,
    sys::{self, syscall},
};

/// Puts the UDP holders in the order `udp_lib_lport_inuse()` meets them:
/// the port's primary hash chain, which sock_diag walks (`udp_dump`), head
/// first; the UDP iterator walks the address-keyed `hash2` table instead.
/// Per family, as sock_diag dumps them (the rules cover the interleaving).
pub(super) fn udp_chain_order(
    netns_file: Option<&Path>,
    port: u16,
    holders: &mut [Holder],
) -> Result<(), InventoryError> {
    let cookies = netns::in_netns(netns_file, move || {
        let mut order = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            order.extend(
                dump(family, libc::IPPROTO_UDP as u8)
                    .map_err(InventoryError::Netlink)?
                    .into_iter()
                    .filter(|d| d.sport == port)
                    .map(|d| d.cookie),
            );
        }
        Ok::<_, InventoryError>(order)
    })?;
    let start = holders.iter().take_while(|h| h.proto != Proto::Udp).count();
    holders[start..].sort_by_key(|h| {
        cookies
            .iter()
            .position(|&c| c == h.cookie)
            .unwrap_or(usize::MAX)
    });
    Ok(())
}

/// Holders from a sock_diag dump: flags unknown, owners from `/proc`.
pub(super) fn from_sock_diag(
    netns_file: Option<&Path>,
    port: Option<u16>,
    source: &str,
) -> Result<Vec<Holder>, InventoryError> {
    let diag = netns::in_netns(netns_file, move || {
        let mut diag = Vec::new();
        for (proto, family) in [
            (libc::IPPROTO_TCP as u8, libc::AF_INET as u8),
            (libc::IPPROTO_TCP as u8, libc::AF_INET6 as u8),
            (libc::IPPROTO_UDP as u8, libc::AF_INET as u8),
            (libc::IPPROTO_UDP as u8, libc::AF_INET6 as u8),
        ] {
            diag.extend(
                dump(family, proto)
                    .map_err(InventoryError::Netlink)?
                    .into_iter()
                    .filter(|d| {
                        port.is_none_or(|p| d.sport == p)
                            && TcpState::from(d.state) != TcpState::NEW_SYN_RECV
                    }),
            );
        }
        Ok::<_, InventoryError>(diag)
    })?;
    let wanted: Vec<u64> = diag.iter().filter(|d| d.ino != 0).map(|d| d.ino).collect();
    let owners = owners_of(&wanted);
    Ok(diag
        .into_iter()
        .map(|d| holder(d, &owners, source))
        .collect())
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_SKV6ONLY: u16 = 11;
/// `idiag_timer` of a timewait socket (`inet_twsk_diag_fill()`).
const TIMEWAIT_TIMER: u8 = 3;

/// One `inet_diag_msg`, decoded.
#[derive(Debug, Clone)]
struct Diag {
    proto: u8,
    family: u8,
    state: u8,
    timer: u8,
    sport: u16,
    dport: u16,
    src: IpAddr,
    dst: IpAddr,
    bound_dev_if: u32,
    cookie: u64,
    expires: u32,
    uid: u32,
    ino: u64,
    /// `INET_DIAG_SKV6ONLY`, sent for IPv6 sockets in LISTEN or CLOSE only
    /// (`inet_diag_msg_attrs_fill()`).
    v6only: Option<bool>,
}

fn nl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe {
        syscall!(socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        ))
    }?;
    // SAFETY: socket(2) succeeded: fd is new and nobody else owns it.
    unsafe { sys::owned(fd.into()) }
}

/// A `SOCK_DIAG_BY_FAMILY` dump of every socket of `family`/`proto` in the
/// calling thread's namespace.
fn dump(family: u8, proto: u8) -> io::Result<Vec<Diag>> {
    let sock = nl_socket()?;
    // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = family;
    req[17] = proto;
    // idiag_states: every state.
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: send reads `req.len()` bytes of our initialised buffer, on
    // our socket (to the kernel: an unbound netlink socket sends to pid 0).
    unsafe { syscall!(send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0)) }?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into our buffer.
        let n = match unsafe {
            syscall!(recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0
            ))
        } {
            Ok(n) => n.unsigned_abs(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32_at(&buf, off) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Err(io::Error::other("truncated netlink message"));
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(d) = parse(&buf[off + 16..off + len], proto) {
                        out.push(d);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn addr(family: u8, b: &[u8]) -> IpAddr {
    if family == libc::AF_INET6 as u8 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Decodes an `inet_diag_msg` (72 bytes) and its attributes.
fn parse(m: &[u8], proto: u8) -> Option<Diag> {
    if m.len() < 72 {
        return None;
    }
    let family = m[0];
    let mut d = Diag {
        proto,
        family,
        state: m[1],
        timer: m[2],
        sport: u16::from_be_bytes([m[4], m[5]]),
        dport: u16::from_be_bytes([m[6], m[7]]),
        src: addr(family, &m[8..24]),
        dst: addr(family, &m[24..40]),
        bound_dev_if: u32_at(m, 40),
        cookie: u64::from(u32_at(m, 44)) | (u64::from(u32_at(m, 48)) << 32),
        expires: u32_at(m, 52),
        uid: u32_at(m, 64),
        ino: u64::from(u32_at(m, 68)),
        v6only: (family != libc::AF_INET6 as u8).then_some(false),
    };
    let mut off = 72;
    while off + 4 <= m.len() {
        let len = usize::from(u16::from_ne_bytes([m[off], m[off + 1]]));
        let ty = u16::from_ne_bytes([m[off + 2], m[off + 3]]);
        if len < 4 || off + len > m.len() {
            break;
        }
        if ty == INET_DIAG_SKV6ONLY && len >= 5 {
            d.v6only = Some(m[off + 4] != 0);
        }
        off += (len + 3) & !3;
    }
    Some(d)
}

/// For each wanted socket inode, the (pid, fd) pairs that hold it, from
/// `/proc/*/fd`.
fn owners_of(inodes: &[u64]) -> HashMap<u64, Vec<(u32, i32)>> {
    let mut out: HashMap<u64, Vec<(u32, i32)>> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&ino)
                && let Some(n) = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
            {
                out.entry(ino).or_default().push((pid, n));
            }
        }
    }
    out
}

fn holder(d: Diag, owners: &HashMap<u64, Vec<(u32, i32)>>, source: &str) -> Holder {
    let tw = d.proto == libc::IPPROTO_TCP as u8
        && (TcpState::from(d.state) == TcpState::TIME_WAIT || d.timer == TIMEWAIT_TIMER);
    let held = owners.get(&d.ino).cloned().unwrap_or_default();
    let pid = held.first().map(|&(p, _)| p);
    let mut pids: Vec<u32> = held.iter().map(|&(p, _)| p).collect();
    pids.dedup();
    Holder {
        proto: if d.proto == libc::IPPROTO_UDP as u8 {
            Proto::Udp
        } else {
            Proto::Tcp
        },
        family: Family::from_kernel(d.family),
        laddr: d.src,
        lport: d.sport,
        raddr: d.dst,
        rport: d.dport,
        state: TcpState::from(d.state),
        timewait: tw,
        expires_ms: tw.then_some(d.expires),
        pid,
        cgroup: None,
        container: None,
        comm: pid.and_then(|p| {
            fs::read_to_string(format!("/proc/{p}/comm"))
                .ok()
                .map(|c| c.trim_end().to_owned())
        }),
        pids,
        last_pid: None,
        last_comm: None,
        uid: (!tw).then_some(d.uid),
        cookie: d.cookie,
        ino: (d.ino != 0).then_some(d.ino),
        reuseaddr: None,
        reuseport: None,
        flags_source: source.to_owned(),
        v6only: d.v6only,
        bound_dev_if: i32::try_from(d.bound_dev_if).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::rules::SockState;

    #[test]
    fn parses_an_inet_diag_msg_with_v6only() {
        let mut m = vec![0u8; 72];
        m[0] = libc::AF_INET6 as u8;
        m[1] = 10;
        m[4..6].copy_from_slice(&8080u16.to_be_bytes());
        m[23] = 1; // ::1
        m[44..48].copy_from_slice(&7u32.to_ne_bytes());
        m[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        m[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        // INET_DIAG_SKV6ONLY = 1, padded to 8 bytes.
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
        m.extend_from_slice(&[1, 0, 0, 0]);
        let d = parse(&m, libc::IPPROTO_TCP as u8).expect("parsed");
        assert_eq!(d.sport, 8080);
        assert_eq!(d.src, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(d.cookie, 7);
        assert_eq!((d.uid, d.ino), (1000, 4242));
        assert_eq!(d.v6only, Some(true));
        let h = holder(d, &HashMap::new(), "sock_diag (iterators refused: test)");
        assert_eq!(h.state, TcpState::LISTEN);
        assert_eq!(h.pid, None);
        assert_eq!(h.reuseaddr, None);
        assert_eq!(h.to_rule_sock().state, SockState::Listen);
    }

    #[test]
    fn time_wait_has_no_owner_and_unknown_flags() {
        let mut m = vec![0u8; 72];
        m[0] = libc::AF_INET as u8;
        m[1] = 5; // FIN_WAIT2 substate
        m[2] = TIMEWAIT_TIMER;
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[52..56].copy_from_slice(&42_000u32.to_ne_bytes());
        let d = parse(&m, libc::IPPROTO_TCP as u8).expect("parsed");
        let h = holder(d, &HashMap::new(), "sock_diag");
        assert_eq!(h.expires_ms, Some(42_000));
        assert!(h.timewait);
        assert_eq!(h.state, TcpState::FIN_WAIT2);
        assert_eq!(h.to_rule_sock().state, SockState::TimeWait);
        assert_eq!(h.uid, None);
        assert_eq!(h.flags_source, "sock_diag");
        assert_eq!(h.reuseaddr, None);
    }
}
