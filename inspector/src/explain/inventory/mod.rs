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
//! - A timewait socket has no owner; callers that run the probes fill
//!   [`Holder::last_pid`] (the tracker remembers connection owners).
//! - Beside the sockets, the namespace's port sysctls and, for a
//!   `connect()`, the route lookup's source address (`namespace`).
//!
//! Nothing here touches another process's descriptors. Where the kernel
//! refuses iterator programs, a NETLINK_SOCK_DIAG dump (what `ss` uses)
//! lists the sockets, owners come from reading `/proc/*/fd` links, and
//! SO_REUSEADDR/SO_REUSEPORT stay unknown: sock_diag does not report them
//! (`sock_diag`).
//!
//! This is the explainer's one reader of the kernel: what it returns, the
//! predictors (`rules`, `connect`) judge without further I/O.

mod namespace;
mod sock_diag;
mod udp_walk;

use std::{
    collections::HashMap,
    fs, io,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use serde::Serialize;

use self::sock_diag::{from_sock_diag, udp_chain_order};
pub use self::{
    namespace::{Settings, parse_range, parse_reserved, route_source},
    udp_walk::measured_udp_walk,
};
use super::rules::{self, SockState};
use crate::kernel::{
    Errno, Family, Proto, TcpState,
    netns::{self, NetnsError},
    sockets::{Entry, KernelSocket, SnapshotFilter, SocketFile, SocketTable, SocketTableError},
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("sock_diag dump failed")]
    Netlink(#[source] io::Error),
    #[error("reading the kernel's socket tables")]
    Iterators(#[source] SocketTableError),
    #[error("reading the namespace's port settings (net.ipv4 sysctls)")]
    Sysctl(#[source] io::Error),
}

/// Where flags come from when the iterators run.
pub const FLAGS_KERNEL: &str = "kernel";

/// One socket on the port. Field names follow the trace schema
/// (docs/trace-schema.md) where they overlap.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub proto: Proto,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// TCP state name (`LISTEN`, `ESTABLISHED`, `TIME_WAIT`, ...); UDP:
    /// `CLOSE` (bound) or `ESTABLISHED` (connected). A timewait socket
    /// shows its substate: `TIME_WAIT`, or `FIN_WAIT2` while the peer's FIN
    /// has not arrived (as `ss` does).
    pub state: TcpState,
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
    /// What the socket is doing, as the rules see it: a timewait socket
    /// (whatever its substate), a TCP listener, a socket only bound
    /// (TCP_CLOSE with a port; an unconnected UDP socket), or a connection.
    pub fn sock_state(&self) -> SockState {
        match (self.proto, self.state) {
            _ if self.timewait => SockState::TimeWait,
            (Proto::Tcp, TcpState::LISTEN) => SockState::Listen,
            (_, TcpState::CLOSE) => SockState::Bound,
            _ => SockState::Connected,
        }
    }

    /// The socket as the rules see it.
    pub fn to_rule_sock(&self) -> rules::Sock {
        let state = self.sock_state();
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
            proto: self.proto,
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
    /// The namespace's port sysctls; `None` when they could not be read
    /// (a port's answer then goes without the ephemeral-range note).
    pub settings: Option<Settings>,
}

/// What a `connect()` to one destination depends on in a namespace.
#[derive(Debug, Clone)]
pub struct ConnectFacts {
    /// Every TCP socket of the namespace, whatever its port.
    pub inventory: Inventory,
    pub settings: Settings,
    /// The source address the routing table picks for the destination, or
    /// the errno `connect()` gets before choosing a port.
    pub route: Result<IpAddr, Errno>,
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
            table: SocketTable::load().map_err(|e| crate::util::errors::chain(&e)),
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

    /// What `explain --connect` reads: the namespace's port sysctls and
    /// the route lookup for `dest` (first: without them there is no
    /// answer), then every TCP socket of the namespace, whatever its port
    /// (to see the ephemeral range at once).
    pub fn collect_for_connect(
        &mut self,
        netns_file: Option<&Path>,
        dest: SocketAddr,
    ) -> Result<ConnectFacts, InventoryError> {
        let (settings, route) = netns::in_netns(netns_file, move || {
            let settings = Settings::read().map_err(InventoryError::Sysctl)?;
            Ok::<_, InventoryError>((settings, route_source(dest)))
        })?;
        let mut inventory = self.collect_filtered(netns_file, None)?;
        inventory.holders.retain(|h| h.proto == Proto::Tcp);
        Ok(ConnectFacts {
            inventory,
            settings,
            route,
        })
    }

    /// The namespace's facts (read inside it, on one thread: its inode,
    /// `ip_unprivileged_port_start`, the port sysctls), then its sockets.
    fn collect_filtered(
        &mut self,
        netns_file: Option<&Path>,
        port: Option<u16>,
    ) -> Result<Inventory, InventoryError> {
        let (netns, unprivileged_port_start, settings) = netns::in_netns(netns_file, move || {
            let netns = netns::current_netns().map_err(InventoryError::Netlink)?;
            let start = netns::sysctl("net/ipv4/ip_unprivileged_port_start")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1024);
            Ok::<_, InventoryError>((netns, start, Settings::read().ok()))
        })?;
        let (mut holders, flags_source) = match &mut self.table {
            Ok(table) => {
                let filter = SnapshotFilter {
                    netns: Some(netns),
                    port,
                    proto: if port.is_none() {
                        Some(Proto::Tcp)
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
                    && holders.iter().filter(|h| h.proto == Proto::Udp).count() > 1
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
        let udp_walk = if holders.iter().any(|h| h.proto == Proto::Udp) {
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
            settings,
        })
    }
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
    let tcp_end = socks.iter().take_while(|k| k.proto == Proto::Tcp).count();
    let mut bound_only: Vec<KernelSocket> = Vec::new();
    for f in files {
        let k = f.socket;
        if k.proto == Proto::Tcp
            && k.state == TcpState::CLOSE
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
                    TcpState::from(substate),
                    expires_in_jiffies.zip(hz).map(|(j, hz)| {
                        u32::try_from(j.max(0).unsigned_abs() * 1000 / u64::from(hz))
                            .unwrap_or(u32::MAX)
                    }),
                ),
                _ => (false, k.state, None),
            };
            Holder {
                proto: k.proto,
                family: Family::of(k.local.ip()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
