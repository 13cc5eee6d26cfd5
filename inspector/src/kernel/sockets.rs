//! The kernel's socket tables, read with BPF socket iterators.
//!
//! A snapshot runs the `iter/tcp` and `iter/udp` programs of the embedded
//! object over the kernel's own tables and decodes one [`KernelSocket`]
//! per socket: flags (SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY), owner uid,
//! inode and cookie, and for TIME_WAIT the timewait socket's own flags and
//! timer. Nothing touches the processes holding the sockets.
//!
//! What a snapshot covers, from the kernel's iterators
//! (net/ipv4/tcp_ipv4.c `bpf_iter_tcp_batch`, net/ipv4/udp.c
//! `bpf_iter_udp_batch`):
//! - only the network namespace of the thread that creates the iterator fd
//!   (`bpf_iter_init_seq_net` takes `current->nsproxy->net_ns`): to read
//!   another namespace, [`SocketTable::snapshot_in`] creates it from a thread
//!   that entered that namespace;
//! - TCP listeners and every socket of the established hash, timewait and
//!   request sockets included; a TCP socket that is only bound (neither
//!   listening nor connected) lives in the bind hash alone and is not seen;
//! - every bound UDP socket.
//!
//! [`SocketTable::files_in`] runs `iter/task_file` over every process's
//! descriptor table (kernel/bpf/task_iter.c) and returns each open TCP/UDP
//! socket of one namespace with the process holding it: the owners, and
//! the TCP sockets only bound (state CLOSE with a port), which the TCP walk
//! misses. It reads the kernel's structures; no process's descriptors are
//! duplicated or touched.

use std::{
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Iter, ProgramError, iter::IterLink},
};
use inspector_common::{
    AF_INET, AF_INET6, FileRecord, IPPROTO_TCP, IPPROTO_UDP, IterFilter, SockRecord,
    TCP_NEW_SYN_RECV, TCP_TIME_WAIT, sock_flag,
};

use crate::{
    kernel::netns::{self, NetnsError},
    kernel::offsets,
    kernel::probe::{self, ProbeError},
    kernel::{Proto, TcpState},
};

/// The iterator programs of the object: (program name, proto, iterator
/// target as in the kernel's `bpf_iter_<target>`).
const ITERATORS: [(&str, Proto, &str); 2] = [
    ("iter_tcp", Proto::Tcp, "tcp"),
    ("iter_udp", Proto::Udp, "udp"),
];

/// The descriptor-table iterator: (program name, target).
const TASK_FILE: (&str, &str) = ("iter_task_file", "task_file");

/// Maps of the shared object that the iterators never use: shrunk to their
/// minimum so a socket table does not pin megabytes of kernel memory (the
/// ring buffer's minimum is one page, set at load).
const UNUSED_MAPS: [(&str, u32); 4] = [
    ("OWNERS", 1),
    ("INFLIGHT", 1),
    ("ACCEPTS", 1),
    ("ACCEPTING", 1),
];
const UNUSED_RING: &str = "EVENTS";

#[derive(Debug, thiserror::Error)]
pub enum SocketTableError {
    /// Privilege, BTF, layout or object loading: as for the probes.
    #[error(transparent)]
    Setup(#[from] ProbeError),
    #[error(
        "this kernel refuses the {target} socket iterator (BPF iterators need Linux 5.9+): {reason}"
    )]
    Refused {
        target: &'static str,
        reason: String,
    },
    #[error("eBPF {0} is missing from the object or has the wrong type")]
    Missing(&'static str),
    #[error("setting the iterator filter")]
    Filter(#[source] aya::maps::MapError),
    #[error("creating a {target} iterator: {reason}")]
    Create {
        target: &'static str,
        reason: String,
    },
    #[error("reading the {target} iterator")]
    Read {
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the {target} iterator returned {len} bytes, not a whole number of records")]
    Truncated { target: &'static str, len: usize },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("reading the namespace inode")]
    NetnsInode(#[source] io::Error),
}

/// Which sockets a snapshot keeps; `None` keeps all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Network namespace inode. A snapshot only ever sees the namespace it
    /// is taken in; this is a check on top.
    pub netns: Option<u32>,
    /// Local port.
    pub port: Option<u16>,
    pub proto: Option<Proto>,
}

/// What kind of kernel object a table entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A full `struct sock`.
    Full,
    /// A `struct inet_timewait_sock` (TCP TIME_WAIT): no file, no uid.
    TimeWait {
        /// `tw_substate`: TIME_WAIT, or FIN_WAIT2 when the socket was
        /// closed before the peer's FIN arrived.
        substate: u8,
        /// Jiffies until the timewait timer fires (negative: overdue), if
        /// the timer could be read. Jiffies tick at the kernel's CONFIG_HZ.
        expires_in_jiffies: Option<i64>,
    },
    /// A `struct request_sock` (TCP NEW_SYN_RECV), waiting for the final
    /// ACK of a handshake.
    Request,
}

/// One socket of the kernel's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSocket {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `skc_state` (TCP numbering, include/net/tcp_states.h; UDP uses
    /// ESTABLISHED when connected and CLOSE otherwise).
    pub state: TcpState,
    pub entry: Entry,
    pub netns: u32,
    /// Inode of the socket's file, as `/proc/PID/fd` shows `socket:[N]`;
    /// `None` when it has no file (timewait, request, unaccepted child).
    pub ino: Option<u64>,
    pub cookie: u64,
    /// `sk_uid`; a request socket reports its listener's; `None` for
    /// timewait sockets.
    pub uid: Option<u32>,
    /// SO_REUSEADDR; for a timewait socket its `tw_reuse`.
    pub reuseaddr: bool,
    /// SO_REUSEPORT; for a timewait socket its `tw_reuseport`.
    pub reuseport: bool,
    pub v6only: bool,
    /// SO_BINDTODEVICE interface index.
    pub bound_dev_if: Option<u32>,
    /// A TCP listener's accept queue: connections waiting for accept()
    /// (`sk_ack_backlog`) and its limit (`sk_max_ack_backlog`); 0 and 0
    /// for every other socket.
    pub queued: u32,
    pub queue_limit: u32,
    /// A TCP listener's drop count (`sk_drops`): SYNs and handshake ACKs
    /// dropped because its accept queue was full (`tcp_listendrop()`),
    /// since it was created. A UDP socket's: datagrams dropped on it,
    /// mostly on a full receive buffer (`drops` of `/proc/net/udp`). 0 for
    /// every other socket.
    pub drops: u32,
    /// A TCP listener or UDP socket whose SO_REUSEPORT group has a
    /// selecting BPF program.
    pub reuseport_prog: bool,
    /// A TCP listener or UDP socket whose SO_REUSEPORT group has members
    /// with SO_INCOMING_CPU set.
    pub incoming_cpu: bool,
}

impl KernelSocket {
    /// Decodes a record; `None` for a family or protocol the iterators
    /// should not have produced.
    pub fn from_record(r: &SockRecord) -> Option<Self> {
        let proto = match r.proto {
            IPPROTO_TCP => Proto::Tcp,
            IPPROTO_UDP => Proto::Udp,
            _ => return None,
        };
        let ip = |bytes: &[u8; 16]| -> Option<IpAddr> {
            match r.family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                    bytes[0], bytes[1], bytes[2], bytes[3],
                ))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
                _ => None,
            }
        };
        let tcp = proto == Proto::Tcp;
        let entry = if tcp && r.state == TCP_TIME_WAIT {
            Entry::TimeWait {
                substate: r.tw_substate,
                expires_in_jiffies: (r.flags & sock_flag::TW_TIMER != 0)
                    .then(|| r.tw_expires.wrapping_sub(r.jiffies).cast_signed()),
            }
        } else if tcp && r.state == TCP_NEW_SYN_RECV {
            Entry::Request
        } else {
            Entry::Full
        };
        Some(Self {
            proto,
            local: SocketAddr::new(ip(&r.laddr)?, r.lport),
            remote: SocketAddr::new(ip(&r.raddr)?, r.rport),
            state: TcpState::from(r.state),
            entry,
            netns: r.netns,
            ino: (r.ino != 0).then_some(r.ino),
            cookie: r.cookie,
            uid: (r.flags & sock_flag::UID_KNOWN != 0).then_some(r.uid),
            reuseaddr: r.flags & sock_flag::REUSEADDR != 0,
            reuseport: r.flags & sock_flag::REUSEPORT != 0,
            v6only: r.flags & sock_flag::V6ONLY != 0,
            bound_dev_if: u32::try_from(r.bound_dev_if).ok().filter(|&i| i != 0),
            queued: r.ack_backlog,
            queue_limit: r.max_ack_backlog,
            drops: r.drops,
            reuseport_prog: r.flags & sock_flag::REUSEPORT_PROG != 0,
            incoming_cpu: r.flags & sock_flag::INCOMING_CPU != 0,
        })
    }
}

/// An open inet socket file and the process holding it, from the
/// `iter/task_file` walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketFile {
    pub socket: KernelSocket,
    /// Process id (thread group), in the initial PID namespace.
    pub pid: u32,
    /// The thread whose file table was walked (the group leader unless a
    /// thread has a file table of its own).
    pub tid: u32,
    pub fd: u32,
    pub comm: String,
}

impl SocketFile {
    pub fn from_record(r: &FileRecord) -> Option<Self> {
        let end = r.comm.iter().position(|&b| b == 0).unwrap_or(r.comm.len());
        Some(Self {
            socket: KernelSocket::from_record(&r.sock)?,
            pid: r.tgid,
            tid: r.pid,
            fd: r.fd,
            comm: String::from_utf8_lossy(&r.comm[..end]).into_owned(),
        })
    }
}

/// The loaded iterator programs. Only they are loaded into the kernel; the
/// object's other programs stay unloaded.
pub struct SocketTable {
    ebpf: Ebpf,
    filter: Array<MapData, IterFilter>,
    /// `task_struct` offsets for `iter/task_file`: tgid, pid, comm.
    task: (u32, u32, u32),
}

impl std::fmt::Debug for SocketTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTable").finish_non_exhaustive()
    }
}

impl SocketTable {
    /// Loads the iterator programs. Fails with [`SocketTableError::Refused`]
    /// naming the kernel's answer where iterator programs are refused.
    pub fn load() -> Result<Self, SocketTableError> {
        if !probe::has_bpf_privilege() {
            return Err(ProbeError::NoPrivilege.into());
        }
        let (kernel, offsets) = offsets::running_kernel().map_err(ProbeError::from)?;
        let field = |path: &str| {
            kernel
                .offset("task_struct", path)
                .map_err(|e| SocketTableError::Setup(ProbeError::Offsets(e.into())))
        };
        let task = (field("tgid")?, field("pid")?, field("comm")?);
        let btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Load(Box::new(e.into())))?;
        let mut loader = EbpfLoader::new();
        loader.override_global("OFFSETS", &offsets, true);
        for (name, size) in UNUSED_MAPS {
            loader.map_max_entries(name, size);
        }
        if let Some(page) = crate::kernel::sys::page_size() {
            loader.map_max_entries(UNUSED_RING, page);
        }
        let mut ebpf = loader
            .load(probe::EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        let all = ITERATORS
            .iter()
            .map(|&(name, _, target)| (name, target))
            .chain([TASK_FILE]);
        for (name, target) in all {
            let prog: &mut Iter = ebpf
                .program_mut(name)
                .ok_or(SocketTableError::Missing(name))?
                .try_into()
                .map_err(|_| SocketTableError::Missing(name))?;
            prog.load(target, &btf)
                .map_err(|e| SocketTableError::Refused {
                    target,
                    reason: probe::root_cause(&e),
                })?;
        }
        let filter = Array::try_from(
            ebpf.take_map("ITER_FILTER")
                .ok_or(SocketTableError::Missing("ITER_FILTER"))?,
        )
        .map_err(|_| SocketTableError::Missing("ITER_FILTER"))?;
        Ok(Self { ebpf, filter, task })
    }

    fn set_filter(&mut self, netns: u32, port: Option<u16>) -> Result<(), SocketTableError> {
        let kernel_filter = IterFilter {
            netns,
            lport: port.unwrap_or(0),
            _pad: 0,
            task_tgid: self.task.0,
            task_pid: self.task.1,
            task_comm: self.task.2,
            _pad2: 0,
        };
        self.filter
            .set(0, kernel_filter, 0)
            .map_err(SocketTableError::Filter)
    }

    /// The sockets of the calling thread's network namespace that `filter`
    /// keeps, TCP first, each table in the kernel's walk order.
    pub fn snapshot(
        &mut self,
        filter: &SnapshotFilter,
    ) -> Result<Vec<KernelSocket>, SocketTableError> {
        self.sockets(None, filter)
    }

    /// [`Self::snapshot`] of the network namespace of the file `netns`
    /// (`/proc/PID/ns/net`, `/run/netns/NAME`): the iterator fds are created
    /// on a thread inside it ([`netns::in_netns`]); the calling thread stays
    /// where it is.
    pub fn snapshot_in(
        &mut self,
        netns: &Path,
        filter: &SnapshotFilter,
    ) -> Result<Vec<KernelSocket>, SocketTableError> {
        self.sockets(Some(netns), filter)
    }

    fn sockets(
        &mut self,
        netns: Option<&Path>,
        filter: &SnapshotFilter,
    ) -> Result<Vec<KernelSocket>, SocketTableError> {
        self.set_filter(filter.netns.unwrap_or(0), filter.port)?;
        let mut out = Vec::new();
        for (name, proto, target) in ITERATORS {
            if filter.proto.is_some_and(|p| p != proto) {
                continue;
            }
            let bytes = self.run(name, target, netns)?;
            out.extend(
                decode::<SockRecord>(&bytes)
                    .ok_or(SocketTableError::Truncated {
                        target,
                        len: bytes.len(),
                    })?
                    .iter()
                    .filter_map(KernelSocket::from_record),
            );
        }
        Ok(out)
    }

    /// Every open TCP/UDP socket file of the network namespace of `netns`
    /// (the calling thread's when `None`) on `port` (any when `None`), with
    /// the process holding it; a socket held by several processes (after
    /// fork or descriptor passing) appears once per descriptor.
    pub fn files_in(
        &mut self,
        netns: Option<&Path>,
        port: Option<u16>,
    ) -> Result<Vec<SocketFile>, SocketTableError> {
        // The walk covers every process whatever its namespace: the program
        // keeps the files of this one namespace, so it must be named.
        let ino = match netns {
            Some(p) => netns::inode(p)?,
            None => netns::current_netns().map_err(SocketTableError::NetnsInode)?,
        };
        self.files_of(ino, port)
    }

    /// [`Self::files_in`] of the namespace with inode `netns`: the walk
    /// needs no way into the namespace, only its inode.
    pub fn files_of(
        &mut self,
        netns: u32,
        port: Option<u16>,
    ) -> Result<Vec<SocketFile>, SocketTableError> {
        self.set_filter(netns, port)?;
        let (name, target) = TASK_FILE;
        let bytes = self.run(name, target, None)?;
        Ok(decode::<FileRecord>(&bytes)
            .ok_or(SocketTableError::Truncated {
                target,
                len: bytes.len(),
            })?
            .iter()
            .filter_map(SocketFile::from_record)
            .collect())
    }

    /// Attaches the program, creates an iterator fd (on a thread inside
    /// `netns` when given, where the socket iterators take their namespace
    /// from) and reads it to the end.
    fn run(
        &mut self,
        name: &'static str,
        target: &'static str,
        netns: Option<&Path>,
    ) -> Result<Vec<u8>, SocketTableError> {
        let create = |e: &dyn std::error::Error| SocketTableError::Create {
            target,
            reason: probe::root_cause(e),
        };
        let prog: &mut Iter = self
            .ebpf
            .program_mut(name)
            .ok_or(SocketTableError::Missing(name))?
            .try_into()
            .map_err(|_: ProgramError| SocketTableError::Missing(name))?;
        // A link per snapshot: the iterator fd keeps what it needs, and
        // dropping the link afterwards leaves nothing attached.
        let id = prog.attach().map_err(|e| create(&e))?;
        let link: IterLink = prog.take_link(id).map_err(|e| create(&e))?;
        let mut file = match netns {
            None => link.into_file().map_err(|e| create(&e))?,
            Some(path) => netns::in_netns(Some(path), move || {
                link.into_file().map_err(|e| SocketTableError::Create {
                    target,
                    reason: probe::root_cause(&e),
                })
            })?,
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| SocketTableError::Read { target, source })?;
        Ok(bytes)
    }
}

/// Splits an iterator's output into records; `None` if it is not a whole
/// number of them.
pub fn decode_records(bytes: &[u8]) -> Option<Vec<SockRecord>> {
    decode(bytes)
}

fn decode<T: aya::Pod>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(size)
            .map(|chunk| {
                // SAFETY: the chunk is exactly one record long, T is plain
                // old data (`aya::Pod`) for which every bit pattern is
                // valid, and read_unaligned needs no alignment.
                unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<T>()) }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(r: &SockRecord) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe {
            std::slice::from_raw_parts(
                (r as *const SockRecord).cast::<u8>(),
                size_of::<SockRecord>(),
            )
        }
        .to_vec()
    }

    fn listener_v6() -> SockRecord {
        let mut r = SockRecord::zeroed();
        r.family = AF_INET6;
        r.proto = IPPROTO_TCP;
        r.state = 10;
        r.lport = 8080;
        r.laddr[15] = 1;
        r.ino = 42;
        r.uid = 1000;
        r.flags = sock_flag::UID_KNOWN | sock_flag::REUSEPORT | sock_flag::V6ONLY;
        r.bound_dev_if = 3;
        r.ack_backlog = 7;
        r.max_ack_backlog = 128;
        r
    }

    #[test]
    fn decodes_a_full_socket() {
        let s = KernelSocket::from_record(&listener_v6()).expect("decodes");
        assert_eq!(s.proto, Proto::Tcp);
        assert_eq!(s.local, "[::1]:8080".parse().expect("addr"));
        assert_eq!(s.remote, "[::]:0".parse().expect("addr"));
        assert_eq!(s.entry, Entry::Full);
        assert_eq!(
            (s.ino, s.uid, s.bound_dev_if),
            (Some(42), Some(1000), Some(3))
        );
        assert!(s.reuseport && s.v6only && !s.reuseaddr);
        assert_eq!((s.queued, s.queue_limit), (7, 128));
    }

    #[test]
    fn decodes_a_timewait_socket() {
        let mut r = SockRecord::zeroed();
        r.family = AF_INET;
        r.proto = IPPROTO_TCP;
        r.state = TCP_TIME_WAIT;
        r.tw_substate = TCP_TIME_WAIT;
        r.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        r.raddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        r.lport = 5000;
        r.rport = 40000;
        r.flags = sock_flag::REUSEADDR | sock_flag::TW_TIMER;
        r.tw_expires = 1000;
        r.jiffies = 1250;
        let s = KernelSocket::from_record(&r).expect("decodes");
        assert_eq!(s.local, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!(s.remote, "127.0.0.2:40000".parse().expect("addr"));
        assert_eq!(
            s.entry,
            Entry::TimeWait {
                substate: TCP_TIME_WAIT,
                expires_in_jiffies: Some(-250)
            }
        );
        assert_eq!((s.ino, s.uid), (None, None));
        assert!(s.reuseaddr && !s.reuseport);
    }

    #[test]
    fn unknown_family_or_proto_is_dropped() {
        let mut r = listener_v6();
        r.family = 1;
        assert!(KernelSocket::from_record(&r).is_none());
        let mut r = listener_v6();
        r.proto = 132;
        assert!(KernelSocket::from_record(&r).is_none());
    }

    #[test]
    fn records_split_and_partial_output_is_refused() {
        let mut bytes = bytes_of(&listener_v6());
        bytes.extend(bytes_of(&SockRecord::zeroed()));
        let recs = decode_records(&bytes).expect("two whole records");
        assert_eq!(recs, vec![listener_v6(), SockRecord::zeroed()]);
        assert!(decode_records(&bytes[..bytes.len() - 1]).is_none());
        assert_eq!(decode_records(&[]), Some(Vec::new()));
    }
}
