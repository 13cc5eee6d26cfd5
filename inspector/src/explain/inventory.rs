//! Every socket on one port of one network namespace, in every state
//! including TIME_WAIT, read from the kernel.
//!
//! - Sockets: a NETLINK_SOCK_DIAG dump (`inet_diag`, what `ss` uses) of TCP
//!   and UDP, IPv4 and IPv6, made from a thread that entered the target
//!   namespace (`setns`): addresses, state, TIME_WAIT time left
//!   (`idiag_expires`), uid, inode, cookie, bound device, IPV6_V6ONLY
//!   (`INET_DIAG_SKV6ONLY`).
//! - Owners: socket inodes mapped through `/proc/*/fd`.
//! - SO_REUSEADDR / SO_REUSEPORT, which sock_diag does not report: for an
//!   owned socket, a duplicate of the owner's descriptor
//!   (`pidfd_open` + `pidfd_getfd`) and `getsockopt`; a TIME_WAIT socket has
//!   no descriptor, so its flags stay unknown. Each holder says where its
//!   flags come from.

use std::{
    collections::HashMap,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
};

use serde::Serialize;

use super::rules::{self, SockState};
use crate::{
    kernel::TcpState,
    netns::{self, NetnsError},
    sys::{self, syscall},
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("sock_diag dump failed")]
    Netlink(#[source] io::Error),
}

/// One socket on the port. Field names follow the trace schema
/// (docs/trace-schema.md) where they overlap.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub proto: &'static str,
    pub family: &'static str,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// TCP state name (`LISTEN`, `ESTABLISHED`, `TIME_WAIT`, ...); UDP:
    /// `CLOSE` (bound) or `ESTABLISHED` (connected). A timewait socket
    /// shows its substate: `TIME_WAIT`, or `FIN_WAIT2` while the peer's FIN
    /// has not arrived (as `ss` does).
    pub state: &'static str,
    /// A timewait socket (`inet_timewait_sock`: sock_diag's timer 3), in
    /// either substate: no owner, flags unknown.
    pub timewait: bool,
    /// Milliseconds until a TIME_WAIT socket goes (`idiag_expires`).
    pub expires_ms: Option<u32>,
    /// First process holding the socket's descriptor; null for TIME_WAIT.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Every process holding a descriptor of it (after fork, several).
    pub pids: Vec<u32>,
    /// `sk_uid`; null for TIME_WAIT (sock_diag reports none).
    pub uid: Option<u32>,
    pub cookie: u64,
    pub ino: Option<u64>,
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// Where `reuseaddr`/`reuseport` come from: `getsockopt` (on a
    /// duplicate of the owner's descriptor), `unknown for TIME_WAIT`, or
    /// `unknown: ...` with the reason.
    pub flags_source: String,
    /// IPV6_V6ONLY: from sock_diag for listening and unconnected sockets,
    /// from getsockopt for other owned ones; null when unknown (an IPv6
    /// TIME_WAIT socket).
    pub v6only: Option<bool>,
    pub bound_dev_if: i32,
}

impl Holder {
    /// The socket as the rules see it.
    pub fn to_rule_sock(&self) -> rules::Sock {
        let state = match (self.proto, self.state) {
            _ if self.timewait => SockState::TimeWait,
            ("tcp", "LISTEN") => SockState::Listen,
            (_, "CLOSE") => SockState::Bound,
            _ => SockState::Connected,
        };
        let proto = if self.proto == "udp" {
            rules::Proto::Udp
        } else {
            rules::Proto::Tcp
        };
        // A connected IPv6 socket without IPV6_V6ONLY on a non-mapped
        // address was bound to `::`: connect() chose its address.
        let connected_from_any = match self.laddr {
            IpAddr::V6(a) => {
                state != SockState::Bound
                    && state != SockState::Listen
                    && self.v6only == Some(false)
                    && a.to_ipv4_mapped().is_none()
                    && !a.is_unspecified()
            }
            IpAddr::V4(_) => false,
        };
        rules::Sock {
            proto,
            addr: self.laddr,
            port: self.lport,
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            v6only: self.v6only.unwrap_or(false),
            v6only_unknown: self.v6only.is_none(),
            uid: self.uid.unwrap_or(u32::MAX),
            bound_dev_if: self.bound_dev_if,
            state,
            connected_from_any,
            expires_ms: self.expires_ms,
        }
    }
}

/// What was found on the port.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// TCP holders, then UDP holders in the kernel's hash chain order
    /// (IPv4 first, then IPv6: the dumps come per family).
    pub holders: Vec<Holder>,
    /// Inode of the namespace searched.
    pub netns: u32,
    /// `net.ipv4.ip_unprivileged_port_start` there.
    pub unprivileged_port_start: u16,
}

/// Lists every socket on `port` in the namespace of `netns` (a namespace
/// file), or of the calling thread when `None`.
pub fn collect(netns_file: Option<&Path>, port: u16) -> Result<Inventory, InventoryError> {
    let found = netns::in_netns(netns_file, move || {
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
                        d.sport == port && TcpState::from(d.state) != TcpState::NEW_SYN_RECV
                    }),
            );
        }
        let netns = netns::current_netns().map_err(InventoryError::Netlink)?;
        let start = netns::sysctl("net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1024);
        Ok::<_, InventoryError>((diag, netns, start))
    })?;
    let (diag, netns, unprivileged_port_start) = found;
    let wanted: Vec<u64> = diag.iter().filter(|d| d.ino != 0).map(|d| d.ino).collect();
    let owners = owners_of(&wanted);
    let holders = diag.into_iter().map(|d| holder(d, &owners)).collect();
    Ok(Inventory {
        holders,
        netns,
        unprivileged_port_start,
    })
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

fn holder(d: Diag, owners: &HashMap<u64, Vec<(u32, i32)>>) -> Holder {
    let tw = d.proto == libc::IPPROTO_TCP as u8
        && (TcpState::from(d.state) == TcpState::TIME_WAIT || d.timer == TIMEWAIT_TIMER);
    let held = owners.get(&d.ino).cloned().unwrap_or_default();
    let mut v6only = d.v6only;
    let (reuseaddr, reuseport, flags_source) = if tw {
        (None, None, "unknown for TIME_WAIT".to_owned())
    } else {
        match flags_of(&held) {
            Ok((a, p, only)) => {
                if v6only.is_none() {
                    v6only = only;
                }
                (Some(a), Some(p), "getsockopt".to_owned())
            }
            Err(e) => (None, None, format!("unknown: {e}")),
        }
    };
    let pid = held.first().map(|&(p, _)| p);
    let mut pids: Vec<u32> = held.iter().map(|&(p, _)| p).collect();
    pids.dedup();
    Holder {
        proto: if d.proto == libc::IPPROTO_UDP as u8 {
            "udp"
        } else {
            "tcp"
        },
        family: if d.family == libc::AF_INET6 as u8 {
            "inet6"
        } else {
            "inet"
        },
        laddr: d.src,
        lport: d.sport,
        raddr: d.dst,
        rport: d.dport,
        state: TcpState::from(d.state).name().unwrap_or("UNKNOWN"),
        timewait: tw,
        expires_ms: tw.then_some(d.expires),
        pid,
        comm: pid.and_then(|p| {
            fs::read_to_string(format!("/proc/{p}/comm"))
                .ok()
                .map(|c| c.trim_end().to_owned())
        }),
        pids,
        uid: (!tw).then_some(d.uid),
        cookie: d.cookie,
        ino: (d.ino != 0).then_some(d.ino),
        reuseaddr,
        reuseport,
        flags_source,
        v6only,
        bound_dev_if: i32::try_from(d.bound_dev_if).unwrap_or(0),
    }
}

/// SO_REUSEADDR and SO_REUSEPORT of a socket another process holds: a
/// duplicate of its descriptor (`pidfd_open` + `pidfd_getfd`, which needs
/// ptrace rights over the owner) and `getsockopt`.
fn flags_of(held: &[(u32, i32)]) -> Result<(bool, bool, Option<bool>), String> {
    let mut last =
        "no process in this /proc holds a descriptor of it (another PID namespace, or a kernel socket)"
            .to_owned();
    for &(pid, fd) in held {
        match dup_from(pid, fd) {
            Ok(own) => {
                let a = sockopt(&own, libc::SOL_SOCKET, libc::SO_REUSEADDR)
                    .map_err(|e| format!("getsockopt SO_REUSEADDR: {e}"))?;
                let p = sockopt(&own, libc::SOL_SOCKET, libc::SO_REUSEPORT)
                    .map_err(|e| format!("getsockopt SO_REUSEPORT: {e}"))?;
                // Fails with ENOPROTOOPT on an IPv4 socket.
                let only = sockopt(&own, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).ok();
                return Ok((a, p, only));
            }
            Err(e) => last = format!("pidfd_getfd on pid {pid}: {e}"),
        }
    }
    Err(last)
}

fn dup_from(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open(2) takes a pid and no flags.
    let pidfd = unsafe { syscall!(syscall(libc::SYS_pidfd_open, pid, 0u32)) }?;
    // SAFETY: pidfd_open succeeded: the pidfd is new and ours alone.
    let pidfd = unsafe { sys::owned(pidfd) }?;
    // SAFETY: pidfd_getfd(2) takes our pidfd, a descriptor number of that
    // process and no flags.
    let dup = unsafe { syscall!(syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32)) }?;
    // SAFETY: pidfd_getfd succeeded: the duplicate is new and ours alone.
    unsafe { sys::owned(dup) }
}

fn sockopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<bool> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the local int.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut v).cast(),
            &mut len
        ))
    }?;
    Ok(v != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let h = holder(d, &HashMap::new());
        assert_eq!(h.state, "LISTEN");
        assert_eq!(h.pid, None);
        assert!(h.flags_source.starts_with("unknown"), "{}", h.flags_source);
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
        let h = holder(d, &HashMap::new());
        assert_eq!(h.expires_ms, Some(42_000));
        assert!(h.timewait);
        assert_eq!(h.state, "FIN_WAIT2");
        assert_eq!(h.to_rule_sock().state, SockState::TimeWait);
        assert_eq!(h.uid, None);
        assert_eq!(h.flags_source, "unknown for TIME_WAIT");
        assert_eq!(h.reuseaddr, None);
    }
}
