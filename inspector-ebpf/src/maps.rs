//! Every map the programs share, and the two globals user space fills in
//! before loading: [`OFFSETS`] (the running kernel's layout) and [`CONFIG`]
//! (what is emitted and what only counted).
//!
//! One place for them because user space finds each map by its name and
//! sizes nothing itself: the bound written here is the bound in the kernel,
//! and each says why it is what it is and what happens when it is reached.
//! The helpers that use the maps live with their job (`counters`,
//! `owners`, `fill`, `emit`); this file only declares.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use inspector_common::{
    AcceptCount, AcceptKey, Config, Delivery, IterFilter, Offsets, Outcome, Owner, counter,
};

/// Layout of the running kernel, filled by user space at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets::zeroed();

/// What goes to the ring buffer and what is counted in maps instead; user
/// space overrides it at load time (`serve` counts).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::ALL;

/// Reads one field of [`OFFSETS`]. Volatile so the compiler keeps the load
/// from the read-only map instead of folding the zero it was compiled with.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a plain integer from a static.
        unsafe { core::ptr::read_volatile(&$crate::maps::OFFSETS.$field) }
    };
}
pub(crate) use off;

/// Calls by (kind, proto, phase, errno) where they are counted rather
/// than emitted. A handful of keys in practice; full, an outcome is
/// emitted as an event instead.
#[map]
pub static OUTCOMES: HashMap<Outcome, u64> = HashMap::with_max_entries(1024, 0);

/// Deliveries per SO_REUSEPORT member (keyed by its `struct sock`
/// address) where they are counted rather than emitted. Bounded: the
/// least recently served members make room.
#[map]
pub static DELIVERIES: LruHashMap<u64, Delivery> = LruHashMap::with_max_entries(16384, 0);

/// Accepts per (listening socket, accepting process) where they are
/// counted rather than emitted: who takes the connections of each
/// SO_REUSEPORT member, or of one listener shared by forked workers.
/// Bounded: the least recently accepting pair makes room, and its count
/// starts again from zero if it comes back (a counter reset to Prometheus).
#[map]
pub static ACCEPTS: LruHashMap<AcceptKey, AcceptCount> = LruHashMap::with_max_entries(16384, 0);

/// The listening socket of each accept() in flight, by thread, where
/// accepts are counted (tracepoint mode: the exit tracepoint has no
/// arguments). Kept apart from [`INFLIGHT`] so that threads blocked in
/// accept() for hours never crowd out a bind or connect; bounded, the
/// longest blocked call gives way and its accept is counted without its
/// listener.
#[map]
pub static ACCEPTING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Insert only if absent (`BPF_NOEXIST`).
pub const BPF_NOEXIST: u64 = 1;

/// All events, in the order they were committed.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU counters, indexed by `inspector_common::counter`, bumped
/// atomically ([`count`](crate::counters::count)).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// TIME_WAIT steps per [`tw_count`](inspector_common::tw_count) slot,
/// where TIME_WAIT is counted rather than emitted.
#[map]
pub static TW_COUNTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(inspector_common::tw_count::LEN, 0);

/// Each CPU's last timewait timer detach, not yet matched by the arm or
/// expiry that may follow it (`tw_count`, and `tw_entry` where the arm
/// that follows is told from an entry in the kernel).
#[map]
pub static TW_PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's timewait entry held for its full socket's CLOSE, where
/// successful calls are quiet (`tw_entry`): one, since the CLOSE follows
/// the arm within the same kernel call.
#[map]
pub static TW_HELD: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// The timewait socket's address; 0: none pending. Its own word: a
    /// `tp_btf` argument is a typed pointer to the verifier, which may be
    /// stored and compared but not masked (so no flag bits in it).
    pub tw: u64,
    /// 1 when the detach came inside a connect().
    pub in_connect: u64,
    /// When (`bpf_ktime_get_ns()`).
    pub at_ns: u64,
    /// Its `skc_addrpair` and `skc_portpair` (both IPv4 addresses, the
    /// remote and the local port), read at the detach where `tw_entry`
    /// needs them to know the connection that takes the 4-tuple over.
    pub addrs: u64,
    pub ports: u64,
}

/// The owner of each socket, remembered when its owner called bind, listen,
/// connect or accept on it. Events raised in softirq or timer context are
/// attributed from here, never to the task the CPU happened to be running.
#[map]
pub static OWNERS: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);

/// Per-CPU LRU lists: a lookup from every state change must not contend
/// on one global LRU lock.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Syscall in flight per thread (between sys_enter and sys_exit).
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Inflight {
    /// The socket; 0 when it is to be read at the exit from `fd` (a
    /// counted connect(), whose socket only a failure needs).
    pub sk: u64,
    /// The descriptor the call was made on (syscall hooks).
    pub fd: u64,
    pub uaddr: u64,
    pub nr: u32,
    /// `skc_num` before the call: 0 means the socket was unbound.
    pub num_before: u32,
    /// Set when the port decision inside this call was already reported
    /// (fentry mode: `inet_csk_get_port` / `udp_lib_get_port` ran).
    pub decided: u32,
    pub _pad: u32,
}

/// Bytes of `struct sock_common` copied in one helper call: every field
/// the events need lies in them on the kernels we know (a field beyond is
/// read on its own).
pub const HEAD: usize = 128;

/// Per-CPU room for the copy. On the stack it would push the programs that
/// also hold an event past the 512-byte stack limit of older verifiers
/// (6.1 counts the combined stack of calls), hence a map.
///
/// One room per nesting level, each claimed with an atomic swap of its
/// `busy` word and given back when the [`Head`](crate::fill::Head) is
/// dropped. One slot shared by all programs is not enough: on one CPU a
/// process-context program (`sys_exit`, an fentry on `inet_bind`, an
/// iterator) can be interrupted by a softirq whose program
/// (`inet_sock_set_state`, `sk_data_ready`, `timer_expire_entry`) copies its
/// own socket over the outer one's half read, and a hardirq (`timer_start`
/// from an interrupt handler) can interrupt both. Tracepoint programs run
/// with preemption disabled (the tracepoint disables it around its probes;
/// `__bpf_trace_run` asserts `cant_sleep()`), so those nest last-in
/// first-out; fentry and iterator programs only disable migration
/// (`__bpf_prog_enter`, `bpf_iter_run_prog`) and may be preempted by
/// another task's program on the same CPU, which a depth counter would hand
/// the same slot. The swap claim holds in both cases. Four slots cover
/// task, softirq, hardirq and one preempted task; beyond that an event is
/// lost and counted ([`counter::SCRATCH_BUSY`]), never read from a slot in
/// use.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

pub const SCRATCH_SLOTS: u32 = 4;

#[repr(C)]
pub struct Scratch {
    /// 1 while a program holds the slot.
    pub busy: u64,
    pub bytes: [u8; HEAD],
}

/// What the socket iterators keep, slot 0; written by user space before
/// each snapshot. One entry: a snapshot is one walk with one filter.
#[map]
pub static ITER_FILTER: Array<IterFilter> = Array::with_max_entries(1, 0);
