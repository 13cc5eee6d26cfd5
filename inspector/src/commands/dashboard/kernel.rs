//! What the dashboard reads from the kernel's socket tables (BPF socket
//! iterators, [`SocketTable`]): the sockets that existed before it started
//! (for panes 2 and 5), and which silent sockets still exist. The loop in `mod.rs` calls these;
//! the results enter the [`App`](super::app::App) as inputs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use super::model::{KernelFiles, SeedSock, SockAddr, TIME_WAIT_NS};
use crate::model::balance::window::{PortKey as BalanceKey, Snapshot};
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

/// How often the sockets of the ports pane 3 follows are read: a window's
/// verdict is over the time between its reads.
pub const PORTS_EVERY: Duration = Duration::from_secs(2);
/// The soonest a port is read before its turn.
pub const PORTS_SOON: Duration = Duration::from_millis(100);

/// The sockets of each port followed ([`crate::commands::balance::read`]),
/// in its namespace; a namespace is found by its inode once and its path
/// kept in `paths` while it still names it. A port whose namespace is gone
/// (or cannot be read) gets no snapshot.
pub fn port_snapshots(
    table: &mut SocketTable,
    keys: &[BalanceKey],
    paths: &mut BTreeMap<u32, PathBuf>,
) -> Vec<(BalanceKey, Snapshot)> {
    paths.retain(|ns, _| keys.iter().any(|k| k.netns == *ns));
    let mut out = Vec::new();
    for key in keys {
        let known = paths
            .get(&key.netns)
            .filter(|p| crate::kernel::netns::inode(p).is_ok_and(|i| i == key.netns))
            .cloned();
        let Some(path) = known.or_else(|| crate::kernel::netns::netns_path_any(key.netns)) else {
            continue;
        };
        paths.insert(key.netns, path.clone());
        if let Ok(snap) = crate::commands::balance::read(table, Some(&path), key.port, key.proto) {
            out.push((*key, snap));
        }
    }
    out
}

/// The sockets of `netns` that the model seeds with: TCP listeners, TCP
/// sockets only bound, UDP sockets and TIME_WAIT sockets with their time
/// left, and clients' connections with where they go; owners from the
/// descriptor walk.
pub fn seed(table: &mut SocketTable, netns: &Path) -> Result<Vec<SeedSock>, SocketTableError> {
    let ino = crate::kernel::netns::inode(netns)?;
    let socks = table.snapshot_in(netns, &SnapshotFilter::default())?;
    let files = table.files_of(ino, None)?;
    let hz = crate::explain::inventory::kernel_hz();
    Ok(seed_of(&socks, &files, hz))
}

/// [`seed`] of each of `namespaces`, in order; a namespace that went away
/// meanwhile (or cannot be read) has nothing to seed.
pub fn seed_all(table: &mut SocketTable, namespaces: &[std::path::PathBuf]) -> Vec<SeedSock> {
    let mut socks = Vec::new();
    for ns in namespaces {
        if let Ok(s) = seed(table, ns) {
            socks.extend(s);
        }
    }
    socks
}

/// [`seed`] without the I/O.
pub fn seed_of(socks: &[KernelSocket], files: &[SocketFile], hz: Option<u32>) -> Vec<SeedSock> {
    let owners: BTreeMap<u64, (u32, String)> = files
        .iter()
        .map(|f| (f.socket.cookie, (f.pid, f.comm.clone())))
        .collect();
    let listening: BTreeSet<u16> = socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == TcpState::LISTEN)
        .map(|s| s.local.port())
        .collect();
    let seed = |s: &KernelSocket, state: TcpState, tw_left_ns: Option<u64>| SeedSock {
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
        peer: is_client(s, &listening).then_some(s.remote),
    };
    let mut out = Vec::new();
    for s in socks {
        let state = s.state;
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
                out.push(seed(s, TcpState::TIME_WAIT, Some(left.min(TIME_WAIT_NS))));
            }
            (Proto::Tcp, Entry::Full) if state == TcpState::LISTEN => {
                out.push(seed(s, TcpState::LISTEN, None));
            }
            // A client's connection: its port counts toward its peer.
            (Proto::Tcp, Entry::Full) if is_client(s, &listening) => {
                out.push(seed(s, state, None));
            }
            (Proto::Udp, Entry::Full) if s.local.port() != 0 => {
                out.push(seed(s, state, None));
            }
            _ => {}
        }
    }
    // TCP sockets only bound are in no table the TCP walk reads: the
    // descriptor walk has them (state CLOSE with a port).
    for f in files {
        let s = &f.socket;
        if s.proto == Proto::Tcp && s.state == TcpState::CLOSE && s.local.port() != 0 {
            out.push(seed(s, TcpState::CLOSE, None));
        }
    }
    out
}

/// A client's side of a TCP connection, live or in TIME_WAIT: it has a
/// peer, is no handshake in a listener's queue, and is not on a port
/// someone listens on (an accepted connection's). Its local port is held
/// toward that peer: `__inet_hash_connect()` checks the 4-tuple, so the
/// same port may go to another destination at once.
///
/// A peer on this host (loopback, or the socket's own address) must be
/// listening here too: both ends of such a connection are in the table,
/// and once a server's listener is gone its side (often in TIME_WAIT, the
/// server closing first) looks like a client's toward the client's port.
/// A connect() toward a port nobody listens on is refused anyway.
fn is_client(s: &KernelSocket, listening: &BTreeSet<u16>) -> bool {
    let peer = s.remote;
    let local_peer = peer.ip().to_canonical().is_loopback() || peer.ip() == s.local.ip();
    s.proto == Proto::Tcp
        && peer.port() != 0
        && !matches!(s.entry, Entry::Request)
        && s.state != TcpState::LISTEN
        && !listening.contains(&s.local.port())
        && (!local_peer || listening.contains(&peer.port()))
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
