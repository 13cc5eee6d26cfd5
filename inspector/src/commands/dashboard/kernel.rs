//! What the dashboard reads from the kernel's socket tables (BPF socket
//! iterators, [`SocketTable`]): the sockets that existed before it started,
//! and which silent sockets still exist. The loop in `mod.rs` calls these;
//! the results enter the [`App`](super::app::App) as inputs.

use crate::model::ephemeral::PortRange;
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::model::{KernelFiles, SeedSock, SockAddr, TIME_WAIT_NS};
use crate::{
    kernel::sockets::{
        Entry, KernelSocket, SnapshotFilter, SocketFile, SocketTable, SocketTableError,
    },
    kernel::{Proto, TcpState},
    pipeline::monotonic_ns,
};

/// How often the silent sockets are checked against the kernel.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// Namespaces checked per round: each is one walk of every process's
/// descriptors.
pub const RECONCILE_NAMESPACES: usize = 8;
/// How often a namespace's port range is read again.
pub const RANGE_EVERY: Duration = Duration::from_secs(30);
/// The soonest a namespace's range is read again when new destinations
/// appear in it.
pub const RANGE_AGAIN: Duration = Duration::from_secs(1);
/// Namespaces whose range is read per round.
pub const RANGE_NAMESPACES: usize = 8;
/// Namespaces seeded at start at most.
const SEED_NAMESPACES: usize = 32;

/// A path into the namespace with inode `ino`: this process's own, a
/// `/run/netns` name, or a process inside it.
pub fn netns_path(ino: u32) -> Option<PathBuf> {
    let of = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.ino() == u64::from(ino));
    let own = PathBuf::from("/proc/self/ns/net");
    if of(&own) {
        return Some(own);
    }
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path().join("ns/net"));
    named.chain(procs).find(|p| of(p))
}

/// A path into the namespace with inode `ino`, looking also where a
/// namespace of this process's own threads is found: a thread's
/// `/proc/self/task/TID/ns/net` (a scenario's thread) and a descriptor
/// open on a namespace file (a scenario holds its namespaces open until its
/// result is in).
pub fn netns_path_any(ino: u32) -> Option<PathBuf> {
    if let Some(p) = netns_path(ino) {
        return Some(p);
    }
    let of = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.ino() == u64::from(ino));
    let want = format!("net:[{ino}]");
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("ns/net"));
    let fds = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read_link(p).is_ok_and(|l| l.as_os_str() == want.as_str()));
    tasks.chain(fds).find(|p| of(p))
}

/// A namespace's `ip_local_port_range` and `ip_local_reserved_ports`
/// (sysctls of the namespace: read from a thread inside it).
pub fn port_range(ino: u32) -> Option<PortRange> {
    port_range_in(&netns_path_any(ino)?)
}

/// [`port_range`] of the namespace at `path`.
pub fn port_range_in(path: &Path) -> Option<PortRange> {
    // Inside: a sysctl that cannot be read is no range, not an error of
    // the namespace.
    let read = || -> Result<Option<PortRange>, crate::kernel::netns::NetnsError> {
        let Ok(range) = crate::kernel::netns::sysctl("net/ipv4/ip_local_port_range") else {
            return Ok(None);
        };
        let reserved =
            crate::kernel::netns::sysctl("net/ipv4/ip_local_reserved_ports").unwrap_or_default();
        Ok(PortRange::parse(&range, &reserved))
    };
    crate::kernel::netns::in_netns(Some(path), read)
        .ok()
        .flatten()
}

/// The namespaces a dashboard follows at start: the one it is told to, or
/// its own and every `/run/netns` one.
pub fn followed(only: Option<u32>) -> Vec<PathBuf> {
    if let Some(ino) = only {
        return netns_path(ino).into_iter().collect();
    }
    let mut paths = vec![PathBuf::from("/proc/self/ns/net")];
    paths.extend(
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    paths.truncate(SEED_NAMESPACES);
    paths
}

/// The sockets of `netns` that the model seeds with: TCP listeners, TCP
/// sockets only bound, UDP sockets and TIME_WAIT sockets with their time
/// left; owners from the descriptor walk.
pub fn seed(table: &mut SocketTable, netns: &Path) -> Result<Vec<SeedSock>, SocketTableError> {
    let ino = crate::kernel::netns::inode(netns)?;
    let socks = table.snapshot_in(netns, &SnapshotFilter::default())?;
    let files = table.files_of(ino, None)?;
    let hz = crate::explain::inventory::kernel_hz();
    Ok(seed_of(&socks, &files, hz))
}

/// [`seed`] without the I/O.
pub fn seed_of(socks: &[KernelSocket], files: &[SocketFile], hz: Option<u32>) -> Vec<SeedSock> {
    let owners: BTreeMap<u64, (u32, String)> = files
        .iter()
        .map(|f| (f.socket.cookie, (f.pid, f.comm.clone())))
        .collect();
    let listen = TcpState::LISTEN.raw();
    let close = TcpState::CLOSE.raw();
    let seed = |s: &KernelSocket, state: &'static str, tw_left_ns: Option<u64>| SeedSock {
        proto: s.proto,
        netns: s.netns,
        addr: SockAddr {
            ip: s.local.ip(),
            port: s.local.port(),
            reuseaddr: s.reuseaddr,
            reuseport: s.reuseport,
            v6only: s.v6only,
        },
        cookie: s.cookie,
        owner: owners.get(&s.cookie).cloned(),
        state,
        tw_left_ns,
    };
    let mut out = Vec::new();
    for s in socks {
        match (s.proto, s.entry) {
            (
                Proto::Tcp,
                Entry::TimeWait {
                    expires_in_jiffies, ..
                },
            ) => {
                // Jiffies to ns at the kernel's tick rate; unknown, a full
                // TCP_TIMEWAIT_LEN (the most it can have left).
                let left = match (expires_in_jiffies, hz) {
                    (Some(j), Some(hz)) => {
                        u64::try_from(j.max(0)).unwrap_or(0) * 1_000_000_000 / u64::from(hz)
                    }
                    _ => TIME_WAIT_NS,
                };
                out.push(seed(s, "TIME_WAIT", Some(left.min(TIME_WAIT_NS))));
            }
            (Proto::Tcp, Entry::Full) if s.state == listen => out.push(seed(s, "LISTEN", None)),
            (Proto::Udp, Entry::Full) if s.local.port() != 0 => {
                let state = if s.state == close {
                    "BOUND"
                } else {
                    "CONNECTED"
                };
                out.push(seed(s, state, None));
            }
            _ => {}
        }
    }
    // TCP sockets only bound are in no table the TCP walk reads: the
    // descriptor walk has them (state CLOSE with a port).
    for f in files {
        let s = &f.socket;
        if s.proto == Proto::Tcp && s.state == close && s.local.port() != 0 {
            out.push(seed(s, "BOUND", None));
        }
    }
    out
}

/// The open sockets of namespace `netns`, for [`Model::reconcile`](super::model::Model::reconcile).
pub fn files(table: &mut SocketTable, netns: u32) -> Result<KernelFiles, SocketTableError> {
    let taken_ns = monotonic_ns();
    let files = table.files_of(netns, None)?;
    let mut out = KernelFiles {
        netns,
        taken_ns,
        ..KernelFiles::default()
    };
    for f in files {
        out.cookies.insert(f.socket.cookie);
        out.ports.insert((f.socket.proto, f.socket.local.port()));
    }
    Ok(out)
}
