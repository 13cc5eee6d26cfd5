//! Every socket on one port of one network namespace, in every state
//! including TIME_WAIT, read from the kernel's own tables.
//!
//! - Sockets and their flags: the BPF socket iterators (`iter/tcp`,
//!   `iter/udp`, see [`crate::kernel::sockets`]) read each socket's `skc_reuse`,
//!   `skc_reuseport`, `skc_ipv6only`, `sk_uid` and bound device, a timewait
//!   socket's own `tw_reuse`/`tw_reuseport` included: exact, the bits
//!   `inet_bind_conflict` and `udp_lib_lport_inuse` read.
//! - Owners, and TCP sockets bound without listen() or connect() (in the
//!   bind hash only, which the TCP iterator does not walk): the
//!   `iter/task_file` iterator over every process's descriptor table.
//! - A timewait socket has no owner; [`Source::last_owner`] is filled by
//!   callers that run the probes (the tracker remembers connection owners).
//!
//! Nothing here touches another process's descriptors. Where the kernel
//! refuses iterator programs, a NETLINK_SOCK_DIAG dump (what `ss` uses)
//! lists the sockets, owners come from reading `/proc/*/fd` links, and
//! SO_REUSEADDR/SO_REUSEPORT stay unknown: sock_diag does not report them.

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
    kernel::netns::{self, NetnsError},
    kernel::sockets::{
        Entry, KernelSocket, SnapshotFilter, SocketFile, SocketTable, SocketTableError,
    },
    kernel::sys::{self, syscall},
    kernel::{self, TcpState},
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("sock_diag dump failed")]
    Netlink(#[source] io::Error),
    #[error("reading the kernel's socket tables")]
    Iterators(#[source] SocketTableError),
}

/// Where flags come from when the iterators run.
pub const FLAGS_KERNEL: &str = "kernel";

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
    /// A timewait socket (`inet_timewait_sock`), in either substate: no
    /// owner, no uid; its own flags.
    pub timewait: bool,
    /// Milliseconds until a TIME_WAIT socket goes.
    pub expires_ms: Option<u32>,
    /// First process holding the socket's descriptor; null for TIME_WAIT.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Every process holding a descriptor of it (after fork, several).
    pub pids: Vec<u32>,
    /// A TIME_WAIT socket's connection's last owner, as the probes saw it
    /// (only where they run: `trace`, the dashboard).
    pub last_pid: Option<u32>,
    pub last_comm: Option<String>,
    /// `sk_uid`; null for TIME_WAIT (a timewait socket has none).
    pub uid: Option<u32>,
    pub cookie: u64,
    pub ino: Option<u64>,
    /// SO_REUSEADDR (`sk_reuse`; a timewait socket's `tw_reuse`); null
    /// when unknown (sock_diag fallback).
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// Where `reuseaddr`/`reuseport` come from: `kernel` (the socket
    /// iterators), or `sock_diag (iterators refused: ...)`, flags unknown.
    pub flags_source: String,
    /// IPV6_V6ONLY (`skc_ipv6only`); null when unknown (fallback: an IPv6
    /// socket neither listening nor unconnected).
    pub v6only: Option<bool>,
    pub bound_dev_if: i32,
    /// The owner's cgroup v2 path (`/proc/PID/cgroup`), and the container
    /// id parsed from it; null without an owner.
    pub cgroup: Option<String>,
    pub container: Option<String>,
}

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/PID/cgroup`) and
/// the container id in it.
fn owner_cgroup(pid: Option<u32>) -> (Option<String>, Option<String>) {
    let path = pid.and_then(|p| {
        fs::read_to_string(format!("/proc/{p}/cgroup"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
    });
    let container = path
        .as_deref()
        .and_then(crate::kernel::cgroup::container_id);
    (path, container)
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
    /// TCP holders, then UDP holders, each in the kernel's walk order;
    /// bound-only TCP sockets (found through descriptors) last of the TCP.
    pub holders: Vec<Holder>,
    /// Inode of the namespace searched.
    pub netns: u32,
    /// `net.ipv4.ip_unprivileged_port_start` there.
    pub unprivileged_port_start: u16,
    /// `kernel`, or `sock_diag (iterators refused: REASON)`.
    pub flags_source: String,
    /// How this kernel's `udp_lib_lport_inuse()` ends its walk, measured
    /// once per process when a UDP socket holds the port; `None` when it
    /// could not be (see [`measured_udp_walk`]).
    pub udp_walk: Option<rules::UdpWalk>,
}

/// The socket iterators, loaded once; or why the kernel refused them.
#[derive(Debug)]
pub struct Source {
    table: Result<SocketTable, String>,
    hz: Option<u32>,
}

impl Source {
    /// Loads the iterator programs, remembering the refusal if any.
    pub fn open() -> Self {
        Self {
            table: SocketTable::load().map_err(|e| crate::error_chain(&e)),
            hz: None,
        }
    }

    /// Why the iterators are not used, if they are not.
    pub fn refused(&self) -> Option<&str> {
        self.table.as_ref().err().map(String::as_str)
    }

    /// Lists every socket on `port` in the namespace of `netns_file` (a
    /// namespace file), or of the calling thread when `None`.
    pub fn collect(
        &mut self,
        netns_file: Option<&Path>,
        port: u16,
    ) -> Result<Inventory, InventoryError> {
        self.collect_filtered(netns_file, Some(port))
    }

    /// Every TCP socket of the namespace, whatever its port: what
    /// `explain --connect` needs to see the ephemeral range at once.
    pub fn collect_tcp(&mut self, netns_file: Option<&Path>) -> Result<Inventory, InventoryError> {
        let mut inv = self.collect_filtered(netns_file, None)?;
        inv.holders.retain(|h| h.proto == "tcp");
        Ok(inv)
    }

    fn collect_filtered(
        &mut self,
        netns_file: Option<&Path>,
        port: Option<u16>,
    ) -> Result<Inventory, InventoryError> {
        let (netns, unprivileged_port_start) = netns::in_netns(netns_file, move || {
            let netns = netns::current_netns().map_err(InventoryError::Netlink)?;
            let start = netns::sysctl("net/ipv4/ip_unprivileged_port_start")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1024);
            Ok::<_, InventoryError>((netns, start))
        })?;
        let (mut holders, flags_source) = match &mut self.table {
            Ok(table) => {
                let filter = SnapshotFilter {
                    netns: Some(netns),
                    port,
                    proto: if port.is_none() {
                        Some(kernel::Proto::Tcp)
                    } else {
                        None
                    },
                };
                let socks = match netns_file {
                    Some(p) => table.snapshot_in(p, &filter),
                    None => table.snapshot(&filter),
                }
                .map_err(InventoryError::Iterators)?;
                let files = table
                    .files_in(netns_file, port)
                    .map_err(InventoryError::Iterators)?;
                if self.hz.is_none() && socks.iter().any(|k| k.entry != Entry::Full) {
                    self.hz = kernel_hz();
                }
                let mut holders = from_iterators(socks, &files, self.hz);
                if let Some(port) = port
                    && holders.iter().filter(|h| h.proto == "udp").count() > 1
                {
                    udp_chain_order(netns_file, port, &mut holders)?;
                }
                (holders, FLAGS_KERNEL.to_owned())
            }
            Err(why) => {
                let source = format!("sock_diag (iterators refused: {why})");
                (from_sock_diag(netns_file, port, "sock_diag")?, source)
            }
        };
        for h in &mut holders {
            (h.cgroup, h.container) = owner_cgroup(h.pid);
        }
        let udp_walk = if holders.iter().any(|h| h.proto == "udp") {
            measured_udp_walk().ok()
        } else {
            None
        };
        Ok(Inventory {
            holders,
            netns,
            unprivileged_port_start,
            flags_source,
            udp_walk,
        })
    }
}

/// [`Source::collect`] with iterators loaded for this one call.
pub fn collect(netns_file: Option<&Path>, port: u16) -> Result<Inventory, InventoryError> {
    Source::open().collect(netns_file, port)
}

/// The kernel's tick rate, for TIME_WAIT timers given in jiffies. Jiffies
/// start at `INITIAL_JIFFIES` (2^32 - 300 * HZ, include/linux/jiffies.h)
/// and count HZ per second of CLOCK_MONOTONIC: the candidate that fits
/// `/proc/timer_list`'s `jiffies` and the monotonic clock is the one.
pub(crate) fn kernel_hz() -> Option<u32> {
    let list = fs::read_to_string("/proc/timer_list").ok()?;
    let jiffies: u64 = list
        .lines()
        .find_map(|l| l.strip_prefix("jiffies: "))?
        .trim()
        .parse()
        .ok()?;
    let now = crate::kernel::sys::monotonic_ns() as f64 / 1e9;
    hz_fit(jiffies, now)
}

fn hz_fit(jiffies: u64, uptime_s: f64) -> Option<u32> {
    [100u32, 250, 300, 1000]
        .into_iter()
        .map(|hz| {
            let start = (1u64 << 32) as f64 - 300.0 * f64::from(hz);
            let err = (jiffies as f64 - start - uptime_s * f64::from(hz)).abs() / f64::from(hz);
            (hz, err)
        })
        .filter(|&(_, err)| err < 5.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(hz, _)| hz)
}

fn tcp_state_name(state: u8) -> &'static str {
    TcpState::from(state).name().unwrap_or("UNKNOWN")
}

/// Holders from the iterators: the socket tables, plus the bound-only TCP
/// sockets only the descriptor walk finds; owners by socket inode.
fn from_iterators(socks: Vec<KernelSocket>, files: &[SocketFile], hz: Option<u32>) -> Vec<Holder> {
    let mut owners: HashMap<u64, Vec<&SocketFile>> = HashMap::new();
    for f in files {
        if let Some(ino) = f.socket.ino {
            owners.entry(ino).or_default().push(f);
        }
    }
    let mut socks: Vec<KernelSocket> = socks
        .into_iter()
        .filter(|k| k.entry != Entry::Request)
        .collect();
    // A TCP socket with a port in CLOSE is bound only: it sits in the bind
    // hash (`inet_bind_hash`) and nowhere the TCP iterator walks.
    let tcp_end = socks
        .iter()
        .take_while(|k| k.proto == kernel::Proto::Tcp)
        .count();
    let mut bound_only: Vec<KernelSocket> = Vec::new();
    for f in files {
        let k = f.socket;
        if k.proto == kernel::Proto::Tcp
            && k.state == TcpState::CLOSE.raw()
            && k.local.port() != 0
            && !socks.iter().chain(&bound_only).any(|s| s.ino == k.ino)
        {
            bound_only.push(k);
        }
    }
    socks.splice(tcp_end..tcp_end, bound_only);
    socks
        .into_iter()
        .map(|k| {
            let held = k
                .ino
                .and_then(|i| owners.get(&i))
                .cloned()
                .unwrap_or_default();
            let mut pids: Vec<u32> = held.iter().map(|f| f.pid).collect();
            pids.dedup();
            let (timewait, state, expires_ms) = match k.entry {
                Entry::TimeWait {
                    substate,
                    expires_in_jiffies,
                } => (
                    true,
                    tcp_state_name(substate),
                    expires_in_jiffies.zip(hz).map(|(j, hz)| {
                        u32::try_from(j.max(0).unsigned_abs() * 1000 / u64::from(hz))
                            .unwrap_or(u32::MAX)
                    }),
                ),
                _ => (false, tcp_state_name(k.state), None),
            };
            Holder {
                proto: match k.proto {
                    kernel::Proto::Udp => "udp",
                    kernel::Proto::Tcp => "tcp",
                },
                family: if k.local.is_ipv6() { "inet6" } else { "inet" },
                laddr: k.local.ip(),
                lport: k.local.port(),
                raddr: k.remote.ip(),
                rport: k.remote.port(),
                state,
                timewait,
                expires_ms,
                pid: held.first().map(|f| f.pid),
                comm: held.first().map(|f| f.comm.clone()),
                cgroup: None,
                container: None,
                pids,
                last_pid: None,
                last_comm: None,
                uid: k.uid,
                cookie: k.cookie,
                ino: k.ino,
                reuseaddr: Some(k.reuseaddr),
                reuseport: Some(k.reuseport),
                flags_source: FLAGS_KERNEL.to_owned(),
                v6only: Some(k.v6only),
                bound_dev_if: k
                    .bound_dev_if
                    .and_then(|i| i32::try_from(i).ok())
                    .unwrap_or(0),
            }
        })
        .collect()
}

/// How the running kernel's `udp_lib_lport_inuse()` ends its walk of a
/// port's chain, measured once per process in a namespace of its own (the
/// rule changed between kernel versions and its source is not always at
/// hand, so the kernel is asked): three UDP sockets on 0.0.0.0 of one port,
/// A with SO_REUSEADDR, then B with SO_REUSEADDR and SO_REUSEPORT (it
/// passes A through SO_REUSEADDR on both and goes to the chain's head),
/// then C with SO_REUSEPORT only. B is the first overlapping socket C
/// meets and a SO_REUSEPORT match: where that ends the walk C binds; where
/// every overlapping socket must allow it, A refuses it.
pub fn measured_udp_walk() -> Result<rules::UdpWalk, String> {
    static WALK: std::sync::OnceLock<Result<rules::UdpWalk, String>> = std::sync::OnceLock::new();
    WALK.get_or_init(|| {
        netns::in_new_netns(|_| measure_udp_walk())
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("measuring the UDP bind rule: {e}"))
    })
    .clone()
}

fn measure_udp_walk() -> io::Result<rules::UdpWalk> {
    use socket2::{Domain, Socket, Type};
    const PORT: u16 = 40000;
    let addr: std::net::SocketAddr = (Ipv4Addr::UNSPECIFIED, PORT).into();
    let sock = |reuseaddr: bool, reuseport: bool| -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        s.set_reuse_address(reuseaddr)?;
        s.set_reuse_port(reuseport)?;
        Ok(s)
    };
    let a = sock(true, false)?;
    a.bind(&addr.into())?;
    let b = sock(true, true)?;
    b.bind(&addr.into())?;
    let c = sock(false, true)?;
    match c.bind(&addr.into()) {
        Ok(()) => Ok(rules::UdpWalk::FirstOverlapDecides),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Ok(rules::UdpWalk::EveryOverlapMustAllow)
        }
        Err(e) => Err(e),
    }
}

/// Puts the UDP holders in the order `udp_lib_lport_inuse()` meets them:
/// the port's primary hash chain, which sock_diag walks (`udp_dump`), head
/// first; the UDP iterator walks the address-keyed `hash2` table instead.
/// Per family, as sock_diag dumps them (the rules cover the interleaving).
fn udp_chain_order(
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
    let start = holders.iter().take_while(|h| h.proto != "udp").count();
    holders[start..].sort_by_key(|h| {
        cookies
            .iter()
            .position(|&c| c == h.cookie)
            .unwrap_or(usize::MAX)
    });
    Ok(())
}

/// Holders from a sock_diag dump: flags unknown, owners from `/proc`.
fn from_sock_diag(
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
        state: tcp_state_name(d.state),
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
        assert_eq!(h.state, "LISTEN");
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
        assert_eq!(h.state, "FIN_WAIT2");
        assert_eq!(h.to_rule_sock().state, SockState::TimeWait);
        assert_eq!(h.uid, None);
        assert_eq!(h.flags_source, "sock_diag");
        assert_eq!(h.reuseaddr, None);
    }

    #[test]
    fn tick_rate_fits_jiffies_and_uptime() {
        let at = |hz: u64, up: u64| (1u64 << 32) - 300 * hz + up * hz;
        for hz in [100u32, 250, 300, 1000] {
            for up in [10u64, 3600, 86_400 * 30] {
                assert_eq!(
                    hz_fit(at(u64::from(hz), up), up as f64 + 0.3),
                    Some(hz),
                    "{hz} {up}"
                );
            }
        }
        assert_eq!(hz_fit(12, 1000.0), None);
    }
}
