//! Types shared by the kernel programs (`inspector-ebpf`) and the user-space
//! loader (`inspector`). Everything here is `#[repr(C)]`, `Copy` and free of
//! `bool` so both sides agree on the bytes; layout is pinned by the tests at
//! the bottom of this file.
#![no_std]

/// What produced an [`Event`].
pub mod kind {
    /// A `bind()` or `listen()` decision (the kernel's `inet_csk_get_port` /
    /// `udp_lib_get_port` outcome as the caller saw it).
    pub const BIND: u8 = 1;
    /// A `connect()`: the ephemeral port the kernel picked, or the error
    /// (EADDRNOTAVAIL when the local port range is exhausted).
    pub const CONNECT: u8 = 2;
    /// A full TCP socket changed state (`sock:inet_sock_set_state`).
    pub const STATE: u8 = 3;
    /// The timer of an `inet_timewait_sock` was armed (entry into
    /// TIME_WAIT/FIN_WAIT2 timewait, or a re-arm).
    pub const TW_ARM: u8 = 4;
    /// The timer of an `inet_timewait_sock` was detached: either it is about
    /// to expire (followed by [`TW_EXPIRE`]), re-armed (followed by
    /// [`TW_ARM`]), or the timewait socket was killed/reused.
    pub const TW_CANCEL: u8 = 5;
    /// `tw_timer_handler` runs: the timewait socket expired.
    pub const TW_EXPIRE: u8 = 6;
    /// A connection was queued to, or a datagram delivered to, a member of a
    /// SO_REUSEPORT group.
    pub const REUSEPORT: u8 = 7;
    /// An `accept()` returned a socket: records its owner.
    pub const ACCEPT: u8 = 8;
}

/// The kinds of [`kind`] as an enum, for an exhaustive `match` on the user
/// side: a kind added there without a case here fails to compile there,
/// and an unknown byte from the ring buffer is `None`, counted, not
/// dropped in silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Bind,
    Connect,
    State,
    TwArm,
    TwCancel,
    TwExpire,
    Reuseport,
    Accept,
}

impl EventKind {
    pub const fn from_raw(k: u8) -> Option<Self> {
        Some(match k {
            kind::BIND => Self::Bind,
            kind::CONNECT => Self::Connect,
            kind::STATE => Self::State,
            kind::TW_ARM => Self::TwArm,
            kind::TW_CANCEL => Self::TwCancel,
            kind::TW_EXPIRE => Self::TwExpire,
            kind::REUSEPORT => Self::Reuseport,
            kind::ACCEPT => Self::Accept,
            _ => return None,
        })
    }
}

/// The operation a bind decision belongs to.
pub mod phase {
    pub const BIND: u8 = 1;
    pub const LISTEN: u8 = 2;
    /// bind() to port 0, or listen() on an unbound socket: the kernel picks.
    pub const AUTOBIND: u8 = 3;
    pub const CONNECT: u8 = 4;
}

/// Bits of [`Event::flags`].
pub mod flag {
    /// SO_REUSEADDR (`sk->sk_reuse` non-zero).
    pub const REUSEADDR: u8 = 1 << 0;
    /// SO_REUSEPORT (`sk->sk_reuseport`).
    pub const REUSEPORT: u8 = 1 << 1;
    /// IPV6_V6ONLY (`sk->sk_ipv6only`).
    pub const V6ONLY: u8 = 1 << 2;
    /// `pid`/`tid`/`comm`/`uid` name the socket's owner, remembered from a
    /// bind/listen/connect/accept syscall on that socket.
    pub const OWNER_KNOWN: u8 = 1 << 3;
    /// The event was raised inside the owner's own syscall (bind, listen,
    /// connect, accept), so the current task is the owner.
    pub const SYSCALL: u8 = 1 << 4;
    /// A [`kind::TW_CANCEL`] raised while the current task was inside
    /// `connect()`: the timewait socket is being reused by a new connection.
    pub const IN_CONNECT: u8 = 1 << 5;
    /// The address passed to bind()/connect() could not be read (the call
    /// itself fails with EFAULT): `req_addr`/`req_port` are unknown, and a
    /// bind keeps phase `BIND` rather than claiming an autobind.
    pub const ADDR_UNREADABLE: u8 = 1 << 6;
    /// A [`kind::TW_ARM`] the kernel knows to be a new timewait socket,
    /// not a re-arm of one (where successful calls are quiet,
    /// [`Config::quiet_success`](crate::Config)): whatever was followed at
    /// its address before is gone, even with the same 4-tuple. Without
    /// it, an arm may be either.
    pub const TW_ENTRY: u8 = 1 << 7;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// `TCP_ESTABLISHED`: a connection's handshake is done.
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_TIME_WAIT: u8 = 6;
/// `TCP_CLOSE`: where every TCP socket ends.
pub const TCP_CLOSE: u8 = 7;
/// `TCP_SYN_RECV`: a connection's first state, cloned from its listener.
pub const TCP_SYN_RECV: u8 = 3;
/// `TCP_SYN_SENT`: a connect()ing socket waiting for the SYN-ACK.
pub const TCP_SYN_SENT: u8 = 2;

/// Slots of the per-CPU `TW_COUNTS` array, where TIME_WAIT is counted in
/// the kernel instead of emitted ([`Config::COUNTED`]).
///
/// The kernel's timer hooks tell a timewait socket's story in steps: its
/// timer armed (entry), detached then armed again (a re-arm, when the
/// FIN_WAIT2 substate moves on or a segment restarts the wait), detached
/// then run (expiry), or only detached (killed: reused by connect(), an
/// RST, a SYN taken over by a listener, namespace teardown). A program
/// sees one step at a time, so it counts steps, and remembers per CPU the
/// last detach to match the arm or expiry that follows it on the same CPU
/// within the same call. [`TwTotals::from_slots`] derives the outcomes.
pub mod tw_count {
    /// An arm that no detach of the same socket came just before: a
    /// timewait socket took over a connection.
    pub const ENTERED: u32 = 0;
    /// Detaches raised inside a connect() of the current task.
    pub const DETACHED_IN_CONNECT: u32 = 1;
    /// Every other detach.
    pub const DETACHED: u32 = 2;
    /// Arms that followed a detach inside a connect() (a softirq's re-arm
    /// while a connect() ran on the CPU).
    pub const REARMED_IN_CONNECT: u32 = 3;
    pub const REARMED: u32 = 4;
    /// Expiries that followed a detach inside a connect().
    pub const EXPIRED_IN_CONNECT: u32 = 5;
    pub const EXPIRED: u32 = 6;
    /// Expiries whose detach was not seen on this CPU just before
    /// (counted as expiries all the same).
    pub const EXPIRED_UNMATCHED: u32 = 7;
    pub const LEN: u32 = 8;
}

/// TIME_WAIT outcomes from the [`tw_count`] slots summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwTotals {
    /// Timewait sockets that took over a connection.
    pub entered: u64,
    /// Timewait sockets whose timer ran out.
    pub expired: u64,
    /// Detached inside a connect(): its 4-tuple reused by a new
    /// connection (`tcp_twsk_unique()`).
    pub reused: u64,
    /// Detached elsewhere: an RST, a new SYN taken by a listener,
    /// namespace teardown.
    pub killed: u64,
}

impl TwTotals {
    /// A detach is an exit unless an arm (re-arm) or an expiry followed
    /// it; each detach is matched at most once, so the differences never
    /// go below zero but for a read taken between a detach and its
    /// follow-up, which `saturating_sub` covers.
    pub fn from_slots(s: &[u64; tw_count::LEN as usize]) -> Self {
        let at = |i: u32| s[i as usize];
        use tw_count::*;
        Self {
            entered: at(ENTERED),
            expired: at(EXPIRED_IN_CONNECT) + at(EXPIRED) + at(EXPIRED_UNMATCHED),
            reused: at(DETACHED_IN_CONNECT)
                .saturating_sub(at(REARMED_IN_CONNECT))
                .saturating_sub(at(EXPIRED_IN_CONNECT)),
            killed: at(DETACHED)
                .saturating_sub(at(REARMED))
                .saturating_sub(at(EXPIRED)),
        }
    }
}

/// Counter slots in the per-CPU `COUNTERS` array: what the kernel side
/// emitted, lost and failed to do, by kind. Every failure a program meets is
/// counted in exactly one slot; user space reports them all.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Events lost because the ring buffer was full (`bpf_ringbuf_output`
    /// found no room).
    pub const DROPPED: u32 = 1;
    /// A field of a socket (`struct sock`, `sock_common`, a timewait or
    /// request socket) or of what it points to (netns, file inode) could not
    /// be read: the event was not emitted.
    pub const READ_SOCK: u32 = 2;
    /// The address passed to bind()/connect() could not be read (the
    /// caller's memory, or in fentry mode the kernel's copy of it): the
    /// event was emitted with `flag::ADDR_UNREADABLE`.
    pub const READ_USER_ADDR: u32 = 3;
    /// A `timer_list` (callback or expiry) could not be read.
    pub const READ_TIMER: u32 = 4;
    /// A syscall's arguments (`pt_regs`) or the caller's descriptor table
    /// down to its socket could not be read.
    pub const READ_SYSCALL: u32 = 5;
    /// A received packet (`sk_buff` headers) could not be read.
    pub const READ_PACKET: u32 = 6;
    /// The per-thread in-flight syscall map (`INFLIGHT`) refused an insert
    /// (full): that call is not reported.
    pub const MAP_INFLIGHT_FULL: u32 = 7;
    /// The socket owner map (`OWNERS`) refused an insert: later events of
    /// that socket have no owner.
    pub const MAP_OWNER_FULL: u32 = 8;
    /// Every per-CPU scratch slot was taken (nesting deeper than the slots):
    /// the event was not emitted.
    pub const SCRATCH_BUSY: u32 = 9;
    /// Runs of a program the kernel itself skipped, read by user space from
    /// each program's `bpf_prog_info.recursion_misses` (no program writes
    /// this slot). Classic tracepoint programs (the per-syscall hooks) are
    /// skipped while another tracing program or a BPF map syscall holds
    /// the CPU's `bpf_prog_active` (`trace_call_bpf()`); a skipped
    /// syscall program loses that call's record.
    pub const SKIPPED: u32 = 10;
    /// Ring-buffer entries user space could not decode (too short, or of
    /// a kind this build does not know), counted by user space (no program
    /// writes this slot): a kernel and user side out of step.
    pub const MALFORMED: u32 = 11;
    pub const LEN: u32 = 12;

    /// The kernel-side error slots: everything but [`EMITTED`] and
    /// [`DROPPED`].
    pub const ERRORS: core::ops::Range<u32> = READ_SOCK..LEN;

    /// The slot's name in output (`stats` records, the trace summary).
    pub const fn name(slot: u32) -> &'static str {
        match slot {
            EMITTED => "emitted",
            DROPPED => "dropped",
            READ_SOCK => "read_sock",
            READ_USER_ADDR => "read_user_addr",
            READ_TIMER => "read_timer",
            READ_SYSCALL => "read_syscall",
            READ_PACKET => "read_packet",
            MAP_INFLIGHT_FULL => "map_inflight_full",
            MAP_OWNER_FULL => "map_owner_full",
            SCRATCH_BUSY => "scratch_busy",
            SKIPPED => "skipped_by_kernel",
            MALFORMED => "malformed_event",
            _ => "unknown",
        }
    }
}

/// One kernel observation. Fixed size for every kind; fields a kind does not
/// use are zero. Addresses are in network byte order as the kernel keeps
/// them (IPv4 in the first 4 bytes); ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the `struct sock` (or `inet_timewait_sock`): the
    /// stable socket id that ties events of one socket together.
    pub sock: u64,
    /// Socket cookie where the program could obtain it, else 0.
    pub cookie: u64,
    /// Inode number of the socket's file (what `ss -e` and `/proc/PID/fd`
    /// show), 0 when the socket has no file (TIME_WAIT, unaccepted child).
    pub ino: u64,
    /// Kind specific: reuseport group id (`sk_reuseport_cb`) for REUSEPORT,
    /// timer expiry in jiffies for TW_ARM.
    pub aux: u64,
    pub kind: u8,
    pub phase: u8,
    pub family: u8,
    pub proto: u8,
    pub old_state: u8,
    /// New TCP state; for timewait events the `tw_substate`.
    pub new_state: u8,
    pub flags: u8,
    pub _pad0: u8,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// Network namespace inode (`net->ns.inum`).
    pub netns: u32,
    /// 0 on success, else the positive errno the caller sees.
    pub errno: i32,
    /// `sk->sk_bound_dev_if` (SO_BINDTODEVICE), 0 when unbound.
    pub bound_dev_if: i32,
    pub lport: u16,
    pub rport: u16,
    /// The port the caller asked for (bind: requested local port; connect:
    /// destination port).
    pub req_port: u16,
    pub _pad1: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// The address the caller asked for (bind: local; connect: destination).
    pub req_addr: [u8; 16],
    pub comm: [u8; 16],
    /// cgroup v2 id (the inode of the cgroup's directory in cgroupfs) the
    /// event belongs to: the calling task's for syscall events
    /// (`bpf_get_current_cgroup_id`), the socket's (`sk_cgrp_data`) for
    /// events of a full socket raised elsewhere, else the remembered
    /// owner's; 0 when unknown (timewait sockets carry none).
    pub cgroup: u64,
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            sock: 0,
            cookie: 0,
            ino: 0,
            aux: 0,
            kind: 0,
            phase: 0,
            family: 0,
            proto: 0,
            old_state: 0,
            new_state: 0,
            flags: 0,
            _pad0: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            netns: 0,
            errno: 0,
            bound_dev_if: 0,
            lport: 0,
            rport: 0,
            req_port: 0,
            _pad1: 0,
            laddr: [0; 16],
            raddr: [0; 16],
            req_addr: [0; 16],
            comm: [0; 16],
            cgroup: 0,
        }
    }
}

/// The owner remembered for a socket (kernel map `OWNERS`, keyed by the
/// `struct sock` address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    /// The owner's cgroup v2 id when it made the call.
    pub cgroup: u64,
}

/// Kernel layout facts, read from the running kernel's BTF by user space at
/// load time and handed to the programs as a read-only global. Byte offsets
/// unless the name ends in `_bit` (absolute bit offset of a one-byte-contained
/// bitfield within `struct sock_common`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// Address of `tw_timer_handler` (from /proc/kallsyms).
    pub tw_timer_handler: u64,
    /// Only emit events from this network namespace inode (0: all).
    pub filter_netns: u32,
    // struct sock_common
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_reuse_bit: u32,
    pub skc_reuse_width: u32,
    pub skc_reuseport_bit: u32,
    pub skc_ipv6only_bit: u32,
    pub skc_bound_dev_if: u32,
    pub skc_net: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_cookie: u32,
    // struct sock
    pub sk_protocol: u32,
    pub sk_type: u32,
    pub sk_uid: u32,
    pub sk_reuseport_cb: u32,
    pub sk_receive_queue_prev: u32,
    pub sk_socket: u32,
    // struct net
    pub net_inum: u32,
    // struct socket / socket_alloc / inode
    pub socket_sk: u32,
    pub socket_file: u32,
    pub socket_alloc_inode: u32,
    pub inode_ino: u32,
    // task_struct -> files -> fdt -> fd[] -> file -> private_data
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_private_data: u32,
    // inet_connection_sock.icsk_accept_queue.rskq_accept_tail
    pub icsk_accept_tail: u32,
    // inet_timewait_sock
    pub tw_timer: u32,
    pub tw_substate: u32,
    // timer_list
    pub timer_function: u32,
    pub timer_expires: u32,
    // sk_buff
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    // struct pt_regs (syscall arguments and number)
    pub regs_di: u32,
    pub regs_si: u32,
    pub regs_orig_ax: u32,
    // syscall numbers of this architecture
    pub nr_bind: u32,
    pub nr_listen: u32,
    pub nr_connect: u32,
    pub nr_accept: u32,
    pub nr_accept4: u32,
    /// `inet_sock.inet_sport`: the local port as the state tracepoint
    /// reports it, kept after `skc_num` is cleared on close.
    pub inet_sport: u32,
    /// `sock.sk_cgrp_data.cgroup` (`struct sock_cgroup_data`, 5.15+);
    /// 0 when this kernel's layout lacks it (the older `val` union).
    pub sk_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup id, the inode of its directory.
    pub kn_id: u32,
    /// `sock.sk_ack_backlog`: connections in a listener's accept queue.
    pub sk_ack_backlog: u32,
    /// `sock.sk_max_ack_backlog`: the listen() backlog, as the kernel capped it.
    pub sk_max_ack_backlog: u32,
    /// `sock_reuseport.prog`: the group's SO_ATTACH_REUSEPORT_[CE]BPF program.
    pub reuseport_prog: u32,
    /// `sock_reuseport.incoming_cpu` (6.1+): members with SO_INCOMING_CPU
    /// set; 0 where this kernel's layout lacks it (offset 0 is `rcu`).
    pub reuseport_incoming_cpu: u32,
    /// `sock.sk_drops`: what `tcp_listendrop()` raises on a listener.
    pub sk_drops: u32,
    /// `sock.sk_drop_counters` (6.18+): per-NUMA-node drop counters that,
    /// where a socket has them, count instead of `sk_drops`; 0 where this
    /// kernel's layout lacks it.
    pub sk_drop_counters: u32,
    /// `numa_drop_counters.drops0` and `.drops1`.
    pub ndc_drops0: u32,
    pub ndc_drops1: u32,
}

impl Offsets {
    pub const fn zeroed() -> Self {
        // SAFETY: every field is an integer, for which all-zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// `TCP_NEW_SYN_RECV`: a request socket (`struct request_sock`) waiting in
/// the established hash for the handshake's final ACK.
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// Bits of [`SockRecord::flags`]. The first three are those of [`flag`].
pub mod sock_flag {
    /// SO_REUSEADDR (`skc_reuse` non-zero; for a timewait socket its
    /// `tw_reuse`, the same bits).
    pub const REUSEADDR: u8 = super::flag::REUSEADDR;
    /// SO_REUSEPORT (`skc_reuseport`; for a timewait socket `tw_reuseport`).
    pub const REUSEPORT: u8 = super::flag::REUSEPORT;
    /// IPV6_V6ONLY (`skc_ipv6only`).
    pub const V6ONLY: u8 = super::flag::V6ONLY;
    /// `uid` is meaningful: a full socket's `sk_uid`, or for a request socket
    /// its listener's. Timewait sockets have none.
    pub const UID_KNOWN: u8 = 1 << 3;
    /// `tw_expires` and `jiffies` were read (timewait sockets).
    pub const TW_TIMER: u8 = 1 << 4;
    /// A TCP listener whose SO_REUSEPORT group has a selecting BPF program
    /// (`sk_reuseport_cb->prog`).
    pub const REUSEPORT_PROG: u8 = 1 << 5;
    /// A TCP listener whose SO_REUSEPORT group has members with
    /// SO_INCOMING_CPU set (`sk_reuseport_cb->incoming_cpu`).
    pub const INCOMING_CPU: u8 = 1 << 6;
}

/// One socket as a BPF socket iterator (`iter/tcp`, `iter/udp`) found it in
/// the kernel's tables. Addresses in network byte order (IPv4 in the first
/// 4 bytes), ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRecord {
    /// Socket cookie (`sock_gen_cookie`), the id events and sock_diag share.
    pub cookie: u64,
    /// Inode of the socket's file; 0 for timewait and request sockets and
    /// for a full socket without a file (accepted child not yet accepted).
    pub ino: u64,
    /// Timewait sockets: `tw_timer.expires`, in jiffies.
    pub tw_expires: u64,
    /// `jiffies` when the record was written, to compare with `tw_expires`.
    pub jiffies: u64,
    /// Network namespace inode (`net->ns.inum`).
    pub netns: u32,
    /// `sk_uid` (kernel uid), see [`sock_flag::UID_KNOWN`].
    pub uid: u32,
    /// `skc_bound_dev_if` (SO_BINDTODEVICE), 0 when unbound.
    pub bound_dev_if: i32,
    pub lport: u16,
    pub rport: u16,
    pub family: u8,
    pub proto: u8,
    /// `skc_state`: a TCP state, [`TCP_TIME_WAIT`] or [`TCP_NEW_SYN_RECV`]
    /// included; UDP sockets use ESTABLISHED (connected) and CLOSE.
    pub state: u8,
    /// [`sock_flag`] bits.
    pub flags: u8,
    /// Timewait sockets: `tw_substate` (TIME_WAIT, or FIN_WAIT2 for a
    /// socket closed before the peer's FIN).
    pub tw_substate: u8,
    pub _pad: [u8; 3],
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// Listeners: `sk_ack_backlog`, the connections waiting in the accept
    /// queue (what `ss` shows as Recv-Q); 0 for other sockets.
    pub ack_backlog: u32,
    /// Listeners: `sk_max_ack_backlog`, the queue's limit (Send-Q in `ss`).
    pub max_ack_backlog: u32,
    /// TCP listeners: the socket's drop count (`sk_drops_read()`), which
    /// `tcp_listendrop()` raises for each SYN or handshake-completing ACK
    /// dropped because the accept queue was full; 0 for other sockets.
    pub drops: u32,
    pub _pad2: u32,
}

impl SockRecord {
    pub const fn zeroed() -> Self {
        // SAFETY: every field is an integer or byte array: all-zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// What the socket iterators keep (0 = any), set by user space in the
/// one-entry array `ITER_FILTER` before each snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterFilter {
    /// Network namespace inode. The iterators walk only the namespace of
    /// the thread that created the iterator fd anyway.
    pub netns: u32,
    /// Local port.
    pub lport: u16,
    pub _pad: u16,
    /// `iter/task_file` only: byte offsets of `task_struct.tgid`, `.pid`
    /// and `.comm`, read from the kernel's BTF by user space.
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_comm: u32,
    pub _pad2: u32,
}

/// One open file that is an inet TCP/UDP socket, as the `iter/task_file`
/// iterator found it in a process's descriptor table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// The socket, as the socket iterators describe it.
    pub sock: SockRecord,
    /// Thread group (process) id and the id of the task walked, in the
    /// initial PID namespace's numbering (`task_struct.tgid`, `.pid`).
    pub tgid: u32,
    pub pid: u32,
    /// The descriptor number in that process.
    pub fd: u32,
    pub _pad: u32,
    /// `task_struct.comm`, NUL-padded.
    pub comm: [u8; 16],
}

impl FileRecord {
    pub const fn zeroed() -> Self {
        // SAFETY: every field is an integer or byte array: all-zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// Load-time configuration of the kernel programs (a read-only global, like
/// [`Offsets`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bit `1 << kind` set: every event of that [`kind`] goes to the ring
    /// buffer. Clear: the programs count it in kernel maps instead
    /// ([`Outcome`], [`Delivery`]) and emit only what counts cannot say:
    /// failed bind/listen/connect calls, LISTEN transitions and closes of
    /// listeners, the first delivery to a member. Where the TIME_WAIT
    /// kinds are clear, TIME_WAIT is counted ([`tw_count`]).
    pub emit_mask: u32,
    /// Where [`kind::STATE`] is emitted: bit `1 << new_state` set, a change
    /// into that state goes out; the others happen unreported. `trace`
    /// without `--states` asks only for the changes that begin or end a
    /// socket's life ([`Config::LIFECYCLE`]).
    pub state_mask: u32,
    /// Non-zero: a successful connect() or accept() is not emitted, though
    /// its kind is; the kernel only remembers the caller as the socket's
    /// owner, and the connection's timewait entry, if it has one, carries
    /// that owner itself ([`flag::TW_ENTRY`]). Failures go out as before.
    pub quiet_success: u32,
}

impl Config {
    /// Every event emitted (trace, dashboard).
    pub const ALL: Self = Self {
        emit_mask: u32::MAX,
        state_mask: u32::MAX,
        quiet_success: 0,
    };
    /// Every event but the TCP state changes a connection passes through
    /// on its way (SYN_SENT, ESTABLISHED, FIN_WAIT1, ...): only the changes
    /// into LISTEN, SYN_RECV (a connection born from a listener, or taking
    /// over a timewait socket's 4-tuple) and CLOSE go out. About half the
    /// events of a short connection; its decisions (connect, accept,
    /// TIME_WAIT) all remain. The changes into ESTABLISHED, not reported,
    /// give the connection its cookie, which its timewait socket keeps.
    pub const LIFECYCLE: Self = Self {
        emit_mask: u32::MAX,
        state_mask: (1 << TCP_LISTEN) | (1 << TCP_SYN_RECV) | (1 << TCP_CLOSE),
        quiet_success: 0,
    };
    /// A connection's successful connect() and accept() and its state
    /// changes stay unreported; every decision goes out (`trace` without
    /// `--connections`): bind/listen calls, failed connect() calls,
    /// TIME_WAIT (each entry naming its connection's owner), SO_REUSEPORT
    /// deliveries and a listener's own changes.
    pub const DECISIONS: Self = Self {
        emit_mask: !(1 << kind::STATE),
        state_mask: 0,
        quiet_success: 1,
    };
    /// Counts in the kernel for what metrics aggregate anyway (`serve`):
    /// state changes, successful calls, accepts, SO_REUSEPORT deliveries
    /// and TIME_WAIT entries and exits. Nothing is read per connection in
    /// steady state.
    pub const COUNTED: Self = Self {
        emit_mask: !((1 << kind::BIND)
            | (1 << kind::CONNECT)
            | (1 << kind::STATE)
            | (1 << kind::REUSEPORT)
            | (1 << kind::ACCEPT)
            | (1 << kind::TW_ARM)
            | (1 << kind::TW_CANCEL)
            | (1 << kind::TW_EXPIRE)),
        state_mask: 0,
        quiet_success: 0,
    };

    #[inline(always)]
    pub fn emits(&self, k: u8) -> bool {
        self.emit_mask & (1 << k) != 0
    }
}

/// Whether a TCP state change from `old` to `new` is a listener's own: it
/// starts listening, or closes. A connection cloned from a listener also
/// leaves LISTEN (`inet_csk_clone_lock()` sets the copy's LISTEN to
/// SYN_RECV), which is no change of the listener's.
#[inline(always)]
pub fn listener_change(old: u8, new: u8) -> bool {
    new == TCP_LISTEN || (old == TCP_LISTEN && new == TCP_CLOSE)
}

/// Key of the `OUTCOMES` map: how many calls of a kind ended how. Where
/// calls are counted ([`Config::COUNTED`]): every bind/listen decision,
/// and the connect() calls that failed (a successful connect() or accept()
/// is counted by nothing but its listener's accepts, `AcceptKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// [`kind::BIND`] or [`kind::CONNECT`].
    pub kind: u8,
    /// `IPPROTO_*`.
    pub proto: u8,
    /// [`phase`].
    pub phase: u8,
    pub _pad: u8,
    /// What the caller saw: 0 or a positive errno.
    pub errno: i32,
}

/// Value of the `DELIVERIES` map, keyed by the member's kernel socket
/// address: connections or datagrams handed to one SO_REUSEPORT member.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub count: u64,
    /// Socket inode (0: none).
    pub ino: u64,
    pub netns: u32,
    pub lport: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of the `ACCEPTS` map: connections one process took with accept()
/// from one listening socket, where accepts are counted rather than
/// emitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcceptKey {
    /// Kernel address of the listening `struct sock` (a SO_REUSEPORT
    /// member is known by the same address in `DELIVERIES`).
    pub listener: u64,
    /// The accepting process (thread group id).
    pub tgid: u32,
    pub _pad: u32,
}

/// Value of the `ACCEPTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptCount {
    pub count: u64,
    /// The listener's network namespace inode and local port, read when
    /// the entry was created.
    pub netns: u32,
    pub lport: u16,
    pub _pad: u16,
    /// `comm` of the thread whose accept created the entry, NUL-padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type below is `#[repr(C)]`, `Copy`, made of integers and
    // byte arrays with explicit padding fields (the layout tests pin their
    // sizes), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: `#[repr(C)]` integers only (u32 offsets and bit positions).
    unsafe impl aya::Pod for super::Offsets {}
    // SAFETY: `#[repr(C)]` u32 ids, explicit padding and a byte array.
    unsafe impl aya::Pod for super::Owner {}
    // SAFETY: `#[repr(C)]` integers and address byte arrays, explicit padding.
    unsafe impl aya::Pod for super::SockRecord {}
    // SAFETY: `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::IterFilter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FileRecord {}
    // SAFETY: `#[repr(C)]` u32s.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::Outcome {}
    // SAFETY: `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::Delivery {}
    // SAFETY: `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::AcceptKey {}
    // SAFETY: `#[repr(C)]` integers with explicit padding and a byte array.
    unsafe impl aya::Pod for super::AcceptCount {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn event_layout_is_pinned() {
        assert_eq!(align_of::<Event>(), 8);
        assert_eq!(offset_of!(Event, kind), 40);
        assert_eq!(offset_of!(Event, pid), 48);
        assert_eq!(offset_of!(Event, lport), 72);
        assert_eq!(offset_of!(Event, laddr), 80);
        assert_eq!(offset_of!(Event, comm), 128);
        assert_eq!(offset_of!(Event, cgroup), 144);
        assert_eq!(size_of::<Event>(), 152);
    }

    #[test]
    fn offsets_have_no_hidden_padding() {
        // 1 u64 + 60 u32 fields, nothing in between.
        assert_eq!(size_of::<Offsets>(), 8 + 60 * 4);
        assert_eq!(size_of::<Owner>(), 40);
        assert_eq!(size_of::<AcceptKey>(), 16);
        assert_eq!(size_of::<AcceptCount>(), 32);
        assert_eq!(offset_of!(Owner, cgroup), 32);
    }

    #[test]
    fn every_counter_slot_has_a_distinct_name() {
        for a in 0..counter::LEN {
            assert_ne!(counter::name(a), "unknown", "slot {a}");
            for b in a + 1..counter::LEN {
                assert_ne!(counter::name(a), counter::name(b));
            }
        }
        assert_eq!(counter::name(counter::LEN), "unknown");
        assert_eq!(counter::ERRORS.len() as u32, counter::LEN - 2);
    }

    #[test]
    fn sock_record_layout_is_pinned() {
        assert_eq!(size_of::<SockRecord>(), 104);
        assert_eq!(align_of::<SockRecord>(), 8);
        assert_eq!(offset_of!(SockRecord, netns), 32);
        assert_eq!(offset_of!(SockRecord, lport), 44);
        assert_eq!(offset_of!(SockRecord, family), 48);
        assert_eq!(offset_of!(SockRecord, tw_substate), 52);
        assert_eq!(offset_of!(SockRecord, laddr), 56);
        assert_eq!(offset_of!(SockRecord, raddr), 72);
        assert_eq!(offset_of!(SockRecord, ack_backlog), 88);
        assert_eq!(offset_of!(SockRecord, drops), 96);
        assert_eq!(size_of::<IterFilter>(), 24);
        assert_eq!(size_of::<FileRecord>(), 104 + 32);
        assert_eq!(offset_of!(FileRecord, comm), 120);
    }
}
