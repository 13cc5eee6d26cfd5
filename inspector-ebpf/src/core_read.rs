//! Shared maps and the helpers every program uses to read kernel memory
//! through offsets taken from the running kernel's BTF.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, bpf_probe_read_user, generated::bpf_get_current_comm,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use inspector_common::{
    AF_INET, AF_INET6, Config, Delivery, Event, IPPROTO_UDP, Offsets, Outcome, Owner, TCP_LISTEN,
    counter, flag, kind, phase,
};

/// Layout of the running kernel, filled by user space at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets::zeroed();

/// What goes to the ring buffer and what is counted in maps instead; user
/// space overrides it at load time (`serve` counts).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::ALL;

/// Whether events of kind `k` are emitted one by one ([`CONFIG`]). Hooks
/// ask first, before any helper call: where the answer is no they only
/// count.
#[inline(always)]
pub fn emits(k: u8) -> bool {
    // SAFETY: reading a plain integer from a static; volatile so the load
    // from the read-only map stays (see `off!`).
    let mask = unsafe { core::ptr::read_volatile(&CONFIG.emit_mask) };
    mask & (1 << k) != 0
}

/// Whether a TCP state change into `new` is emitted, where state changes
/// are ([`Config::state_mask`](inspector_common::Config)).
#[inline(always)]
pub fn emits_state(new: i32) -> bool {
    // SAFETY: as in `emits`.
    let mask = unsafe { core::ptr::read_volatile(&CONFIG.state_mask) };
    (0..32).contains(&new) && mask & (1 << new) != 0
}

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

/// Insert only if absent (`BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Unread bytes at which a commit wakes the reader: 256 events, well under
/// the ring's 4 MiB so a burst is read long before it could overflow.
const WAKEUP_BYTES: u64 = 256 * core::mem::size_of::<Event>() as u64;

/// All events, in the order they were committed.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU counters, indexed by `inspector_common::counter`, bumped
/// atomically ([`count`]).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

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
    pub sk: u64,
    pub uaddr: u64,
    pub nr: u32,
    /// `skc_num` before the call: 0 means the socket was unbound.
    pub num_before: u32,
    /// Set when the port decision inside this call was already reported
    /// (fentry mode: `inet_csk_get_port` / `udp_lib_get_port` ran).
    pub decided: u32,
    pub _pad: u32,
}

/// Where a `struct sockaddr` lives: the caller's memory (syscall
/// arguments) or the kernel's copy of it (arguments of `inet_bind` and
/// friends).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Space {
    User,
    Kernel,
}

#[inline(always)]
fn read_in<T>(space: Space, addr: u64) -> Result<T, i64> {
    match space {
        Space::User => read_user(addr),
        Space::Kernel => read(addr, 0),
    }
}

/// Fills `req_port`/`req_addr` from a `struct sockaddr_in` /
/// `sockaddr_in6`: family, port (network order), then the address at
/// offset 4 (v4) or 8 (v6). An unreadable address (the call fails with
/// EFAULT: `move_addr_to_kernel`) is counted and flagged
/// [`flag::ADDR_UNREADABLE`]; the fields stay zero and mean nothing then.
#[inline(always)]
pub fn read_sockaddr(ev: &mut Event, uaddr: u64, space: Space) {
    if try_read_sockaddr(ev, uaddr, space).is_err() {
        ev.req_port = 0;
        ev.req_addr = [0; 16];
        ev.flags |= flag::ADDR_UNREADABLE;
        count(counter::READ_USER_ADDR);
    }
}

#[inline(always)]
fn try_read_sockaddr(ev: &mut Event, uaddr: u64, space: Space) -> Result<(), i64> {
    // `sa_family` and `sin_port`/`sin6_port` in one read.
    let head: [u8; 4] = read_in(space, uaddr)?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    ev.req_port = u16::from_be_bytes([head[2], head[3]]);
    if family == u16::from(AF_INET) {
        let a: [u8; 4] = read_in(space, uaddr + 4)?;
        ev.req_addr[..4].copy_from_slice(&a);
    } else if family == u16::from(AF_INET6) {
        ev.req_addr = read_in(space, uaddr + 8)?;
    }
    Ok(())
}

/// Reads one field of [`OFFSETS`]. Volatile so the compiler keeps the load
/// from the read-only map instead of folding the zero it was compiled with.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a plain integer from a static.
        unsafe { core::ptr::read_volatile(&$crate::core_read::OFFSETS.$field) }
    };
}
pub(crate) use off;

#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|e| e as i64)
}

#[inline(always)]
pub fn read_user<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error.
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|e| e as i64)
}

/// A failed kernel read or map update, and the [`counter`] slot it is
/// charged to. Reads through [`read`] are socket reads unless the caller
/// says otherwise with [`Miss::at`]: every program starts from a socket.
#[derive(Clone, Copy)]
pub struct Miss {
    pub slot: u32,
    /// The helper's answer (a negative errno).
    pub code: i64,
}

impl Miss {
    /// Charges a helper's error `code` to `slot` (for `map_err`).
    #[inline(always)]
    pub fn at(slot: u32) -> impl Fn(i64) -> Self {
        move |code| Self { slot, code }
    }
}

impl From<i64> for Miss {
    #[inline(always)]
    fn from(code: i64) -> Self {
        Self {
            slot: counter::READ_SOCK,
            code,
        }
    }
}

/// Adds one to the [`counter`] `slot` of this CPU.
///
/// Atomically: a program can be interrupted on its CPU by another that
/// bumps the same slot (a softirq's `inet_sock_set_state` or
/// `sk_data_ready` over a process-context `sys_exit`, a hardirq's
/// `timer_start` over either), and a plain `*p += 1` would then lose the
/// inner count when the outer store lands.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        atomic_add(p, 1);
    }
}

/// `*p += v` in one instruction (`BPF_ATOMIC | BPF_ADD`, the old XADD, which
/// every verifier accepts on map values). Rust's `AtomicU64::fetch_add`
/// does not exist for the BPF target (it declares no compare-and-swap), so
/// the instruction is written out.
#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `p` is a valid, aligned pointer to a u64 in a map value; the
    // instruction only adds to it.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v, options(nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: host builds (clippy) only: `p` points to a live, aligned u64
    // that only atomics touch.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Swaps `v` into `*p` and returns what was there, in one instruction
/// (`BPF_ATOMIC | BPF_XCHG`, Linux 5.12+).
#[inline(always)]
fn atomic_swap(p: *mut u64, v: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = v;
        // SAFETY: `p` is a valid, aligned pointer to a u64 in a map value.
        unsafe {
            core::arch::asm!("{v} = xchg_64({p} + 0, {v})", p = in(reg) p, v = inout(reg) v, options(nostack));
        }
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: host builds (clippy) only: `p` points to a live, aligned u64
    // that only atomics touch.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p).swap(v, core::sync::atomic::Ordering::Acquire)
    }
}

/// Remembers `owner` as the owner of `sk`; a refused insert is counted.
#[inline(always)]
pub fn remember_owner(sk: u64, owner: &Owner) {
    if OWNERS.insert(sk, *owner, 0).is_err() {
        count(counter::MAP_OWNER_FULL);
    }
}

/// Records the syscall `tid` is in; a refused insert (map full) is
/// counted, and that call then goes unreported.
#[inline(always)]
pub fn begin_call(tid: u32, inflight: &Inflight) {
    if INFLIGHT.insert(tid, *inflight, 0).is_err() {
        count(counter::MAP_INFLIGHT_FULL);
    }
}

/// Adds one to `*map[key]`, creating it at 1: false when the map is
/// full. Two CPUs may create the same key at once; `BPF_NOEXIST` lets one
/// win and the other adds to the winner's entry.
#[inline(always)]
pub fn count_outcome(key: &Outcome) -> bool {
    if let Some(p) = OUTCOMES.get_ptr_mut(key) {
        atomic_add(p, 1);
        return true;
    }
    if OUTCOMES.insert(key, 1u64, BPF_NOEXIST).is_ok() {
        return true;
    }
    match OUTCOMES.get_ptr_mut(key) {
        Some(p) => {
            atomic_add(p, 1);
            true
        }
        None => false,
    }
}

/// One more delivery to the member `sk`, if it is counted already; false
/// for a member not seen yet (its first delivery goes through [`emit`],
/// which reads it and creates the entry).
#[inline(always)]
pub fn add_delivery(sk: u64) -> bool {
    match DELIVERIES.get_ptr_mut(sk) {
        Some(d) => {
            // SAFETY: a map value pointer; only its count word is touched.
            atomic_add(unsafe { &raw mut (*d).count }, 1);
            true
        }
        None => false,
    }
}

/// Whether `ev` is counted in a map instead of emitted ([`CONFIG`]):
/// successful calls and accepts, state changes other than a listener's,
/// deliveries. Failures and listener transitions are emitted all the same.
#[inline(always)]
fn counted(ev: &Event) -> bool {
    if emits(ev.kind) {
        return false;
    }
    match ev.kind {
        kind::BIND | kind::CONNECT | kind::ACCEPT => {
            let key = Outcome {
                kind: ev.kind,
                proto: ev.proto,
                phase: ev.phase,
                _pad: 0,
                errno: ev.errno,
            };
            // A UDP bind() with SO_REUSEADDR still goes out after being
            // counted: user space checks whether it shares its address with
            // another uid's socket (a hijack, udp_lib_lport_inuse()).
            let shared_udp = ev.kind == kind::BIND
                && ev.errno == 0
                && ev.proto == IPPROTO_UDP
                && ev.phase == phase::BIND
                && ev.flags & flag::REUSEADDR != 0;
            // EINPROGRESS: a non-blocking connect() on its way, no failure.
            count_outcome(&key) && (ev.errno == 0 || ev.errno == EINPROGRESS) && !shared_udp
        }
        kind::STATE => ev.old_state != TCP_LISTEN && ev.new_state != TCP_LISTEN,
        kind::REUSEPORT => {
            if add_delivery(ev.sock) {
                return true;
            }
            let d = Delivery {
                count: 1,
                ino: ev.ino,
                netns: ev.netns,
                lport: ev.lport,
                proto: ev.proto,
                _pad: 0,
            };
            // Another CPU may have created it meanwhile: add to it then.
            DELIVERIES.insert(ev.sock, d, BPF_NOEXIST).is_ok() || add_delivery(ev.sock)
        }
        _ => false,
    }
}

const EINPROGRESS: i32 = 115;

/// Commits `ev` unless the netns filter excludes it or it is counted
/// instead ([`CONFIG`]); counts drops.
#[inline(always)]
pub fn emit(ev: &Event) {
    let want = off!(filter_netns);
    if want != 0 && ev.netns != want {
        return;
    }
    if counted(ev) {
        return;
    }
    // Waking the reader for every event costs the traced workload a
    // context switch per event; user space polls every few tens of
    // milliseconds anyway, so wake it only once a batch has piled up.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<Event>(ev, flags) {
        Ok(()) => count(counter::EMITTED),
        Err(_) => count(counter::DROPPED),
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The current task as an owner. Only meaningful in the task's own
/// syscall: its cgroup is the v2 cgroup of the task
/// (`bpf_get_current_cgroup_id`, the default hierarchy's even on a hybrid
/// v1/v2 host).
#[inline(always)]
pub fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
        comm: current_comm(),
        // SAFETY: helper without arguments.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
    }
}

/// The current task's name. The helper writes all 16 bytes (the name
/// padded with zeroes, or zeroes if it fails), so the buffer is handed over
/// uninitialised: aya's `bpf_get_current_comm()` zeroes it first and wraps
/// it in a `Result`, which compiles to a call of the byte-by-byte `memset`
/// builtin and a shuffle of single-byte copies on every connect and accept.
#[inline(always)]
fn current_comm() -> [u8; 16] {
    let mut comm = MaybeUninit::<[u8; 16]>::uninit();
    // SAFETY: the pointer and size describe `comm`; the helper's argument
    // may be uninitialised memory (`ARG_PTR_TO_UNINIT_MEM`) and it writes
    // every byte on success and failure alike.
    unsafe {
        bpf_get_current_comm(comm.as_mut_ptr().cast(), 16);
        comm.assume_init()
    }
}

/// Zeroes `slot` a word at a time and hands it out as an [`Event`], in
/// place. `Event::zeroed()` is one 152-byte memset, which this target
/// turns into a call of the `memset` builtin: a loop of single-byte
/// stores, about 600 instructions for every event emitted. Volatile stores
/// are never merged back into a memset, and the event is built where they
/// went: an event returned by value was copied, and the copy of known
/// zeroes became a memset again.
#[inline(always)]
pub fn blank_event(slot: &mut MaybeUninit<Event>) -> &mut Event {
    const WORDS: usize = core::mem::size_of::<Event>() / 8;
    const _: () = assert!(core::mem::size_of::<Event>().is_multiple_of(8));
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: in bounds of `slot` (WORDS whole words) and aligned:
        // Event has u64 fields, so its alignment is 8.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte was written; all-zero is a valid Event (integers
    // and byte arrays only).
    unsafe { slot.assume_init_mut() }
}

/// Makes `o` the event's owner; its cgroup too (a syscall event belongs to
/// its caller's cgroup, whoever created the socket).
#[inline(always)]
pub fn set_owner(ev: &mut Event, o: &Owner) {
    ev.pid = o.pid;
    ev.tid = o.tid;
    ev.comm = o.comm;
    ev.cgroup = o.cgroup;
}

/// Fills `pid`/`comm` from the remembered owner of `sk`, if any. The
/// socket's own cgroup, read by [`fill_sock`], stays: it names the socket's
/// cgroup in softirq and timer context, where the current task's would name
/// whoever the CPU interrupted; the owner's fills in only when it is unknown.
#[inline(always)]
pub fn attribute(ev: &mut Event, sk: u64) {
    // SAFETY: the value is copied out before the map entry can change.
    if let Some(o) = unsafe { OWNERS.get(sk) } {
        let o = *o;
        let own = ev.cgroup;
        set_owner(ev, &o);
        if own != 0 {
            ev.cgroup = own;
        }
        ev.flags |= flag::OWNER_KNOWN;
    }
}

/// The cgroup v2 id of a full socket: `sk->sk_cgrp_data.cgroup->kn->id`,
/// set when the socket was created (`cgroup_sk_alloc`: the creating task's
/// cgroup, the root's for a socket made in interrupt context) or cloned
/// from its listener (`cgroup_sk_clone`). 0 when this kernel's layout has
/// no such pointer (see `Offsets::sk_cgroup`) or it is unset.
#[inline(always)]
pub fn sock_cgroup(sk: u64) -> Result<u64, Miss> {
    let at = off!(sk_cgroup);
    if at == 0 {
        return Ok(0);
    }
    let cgrp: u64 = read(sk, at)?;
    if cgrp == 0 {
        return Ok(0);
    }
    let kn: u64 = read(cgrp, off!(cgroup_kn))?;
    if kn == 0 {
        return Ok(0);
    }
    Ok(read(kn, off!(kn_id))?)
}

/// Bytes of `struct sock_common` copied in one helper call: every field
/// the events need lies in them on the kernels we know (a field beyond is
/// read on its own).
const HEAD: usize = 128;

/// Per-CPU room for the copy. On the stack it would push the programs that
/// also hold an event past the 512-byte stack limit of older verifiers
/// (6.1 counts the combined stack of calls), hence a map.
///
/// One room per nesting level, each claimed with an atomic swap of its
/// `busy` word and given back when the [`Head`] is dropped. One slot shared
/// by all programs is not enough: on one CPU a process-context program
/// (`sys_exit`, an fentry on `inet_bind`, an iterator) can be interrupted
/// by a softirq whose program (`inet_sock_set_state`, `sk_data_ready`,
/// `timer_expire_entry`) copies its own socket over the outer one's half
/// read, and a hardirq (`timer_start` from an interrupt handler) can
/// interrupt both. Tracepoint programs run with preemption disabled (the
/// tracepoint disables it around its probes; `__bpf_trace_run` asserts
/// `cant_sleep()`), so those nest last-in first-out; fentry and
/// iterator programs only disable migration (`__bpf_prog_enter`,
/// `bpf_iter_run_prog`) and may be preempted by another task's program on
/// the same CPU, which a depth counter would hand the same slot. The swap
/// claim holds in both cases. Four slots cover task, softirq, hardirq and
/// one preempted task; beyond that an event is lost and counted
/// ([`counter::SCRATCH_BUSY`]), never read from a slot in use.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

const SCRATCH_SLOTS: u32 = 4;

#[repr(C)]
pub struct Scratch {
    /// 1 while a program holds the slot.
    busy: u64,
    bytes: [u8; HEAD],
}

/// `struct sock_common`'s first [`HEAD`] bytes, read once into a claimed
/// scratch slot, which is released on drop.
struct Head {
    base: u64,
    slot: *mut Scratch,
}

impl Head {
    #[inline(always)]
    fn read(base: u64) -> Result<Self, Miss> {
        let slot = claim_scratch().ok_or(Miss {
            slot: counter::SCRATCH_BUSY,
            code: -16, // EBUSY
        })?;
        // From here on `Drop` gives the slot back, on every path.
        let head = Self { base, slot };
        // SAFETY: the slot is this program's until `head` is dropped (its
        // `busy` word was swapped from 0 to 1 by us); the helper checks the
        // source address and writes at most `HEAD` bytes.
        unsafe { bpf_probe_read_kernel_buf(base as *const u8, &mut (*slot).bytes) }
            .map_err(|e| Miss::from(e as i64))?;
        Ok(head)
    }

    /// The field at `offset`, from the copy, or read on its own.
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let at = offset as usize;
        if at + core::mem::size_of::<T>() <= HEAD {
            // SAFETY: in bounds of the copy in our claimed slot; any bit
            // pattern is a valid T for the integer and byte-array types
            // read here.
            Ok(unsafe {
                core::ptr::read_unaligned((*self.slot).bytes.as_ptr().add(at).cast::<T>())
            })
        } else {
            read(self.base, offset)
        }
    }

    #[inline(always)]
    fn bit(&self, bit: u32, width: u32) -> Result<u8, i64> {
        let byte: u8 = self.get(bit / 8)?;
        Ok(((u16::from(byte) >> (bit % 8)) & ((1u16 << width) - 1)) as u8)
    }
}

impl Drop for Head {
    #[inline(always)]
    fn drop(&mut self) {
        // Every read of the copy happens before the slot is given back.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: our claimed slot; a plain store releases it (same CPU:
        // whoever claims it next runs after this instruction).
        unsafe { core::ptr::write_volatile(&raw mut (*self.slot).busy, 0) };
    }
}

/// The first free scratch slot of this CPU, now ours.
#[inline(always)]
fn claim_scratch() -> Option<*mut Scratch> {
    for i in 0..SCRATCH_SLOTS {
        if let Some(slot) = SCRATCH.get_ptr_mut(i) {
            // SAFETY: a map value pointer; only its `busy` word is touched.
            let busy = unsafe { &raw mut (*slot).busy };
            if atomic_swap(busy, 1) == 0 {
                return Some(slot);
            }
        }
    }
    None
}

/// Fills the `struct sock_common` part: family, ports, addresses, flags,
/// bound device and network namespace. Valid for full sockets, request
/// sockets and timewait sockets alike. One helper call reads the fields;
/// these hooks run for every connection, so every call counts.
#[inline(always)]
pub fn fill_common(ev: &mut Event, skc: u64) -> Result<(), Miss> {
    let h = Head::read(skc)?;
    let family: u16 = h.get(off!(skc_family))?;
    ev.family = family as u8;
    ev.lport = h.get(off!(skc_num))?;
    ev.rport = u16::from_be(h.get(off!(skc_dport))?);
    if ev.family == AF_INET6 {
        ev.laddr = h.get(off!(skc_v6_rcv_saddr))?;
        ev.raddr = h.get(off!(skc_v6_daddr))?;
    } else if ev.family == AF_INET {
        let l: [u8; 4] = h.get(off!(skc_rcv_saddr))?;
        let r: [u8; 4] = h.get(off!(skc_daddr))?;
        ev.laddr[..4].copy_from_slice(&l);
        ev.raddr[..4].copy_from_slice(&r);
    }
    if h.bit(off!(skc_reuse_bit), off!(skc_reuse_width))? != 0 {
        ev.flags |= flag::REUSEADDR;
    }
    if h.bit(off!(skc_reuseport_bit), 1)? != 0 {
        ev.flags |= flag::REUSEPORT;
    }
    if h.bit(off!(skc_ipv6only_bit), 1)? != 0 {
        ev.flags |= flag::V6ONLY;
    }
    ev.bound_dev_if = h.get(off!(skc_bound_dev_if))?;
    ev.cookie = h.get(off!(skc_cookie))?;
    let net: u64 = h.get(off!(skc_net))?;
    ev.netns = read(net, off!(net_inum))?;
    Ok(())
}

/// Fills everything a full `struct sock` offers on top of [`fill_common`]:
/// protocol, owner uid, cookie (if generated), the socket inode and its
/// cgroup ([`sock_cgroup`]).
#[inline(always)]
pub fn fill_sock(ev: &mut Event, sk: u64) -> Result<(), Miss> {
    fill_sock_in_call(ev, sk)?;
    ev.cgroup = sock_cgroup(sk)?;
    Ok(())
}

/// [`fill_sock`] for an event of the caller's own syscall, which
/// [`set_owner`] gives the caller's cgroup: the socket's is not read (three
/// kernel reads less on every connect and accept).
#[inline(always)]
pub fn fill_sock_in_call(ev: &mut Event, sk: u64) -> Result<(), Miss> {
    fill_common(ev, sk)?;
    ev.sock = sk;
    let proto: u16 = read(sk, off!(sk_protocol))?;
    ev.proto = proto as u8;
    ev.uid = read(sk, off!(sk_uid))?;
    let socket: u64 = read(sk, off!(sk_socket))?;
    if socket != 0 {
        ev.ino = read(
            socket + u64::from(off!(socket_alloc_inode)),
            off!(inode_ino),
        )?;
    }
    Ok(())
}

/// `current->files->fdt->fd[fd]->private_data->sk`, if `fd` is a socket of
/// the current task (`None`: not a socket, or no such descriptor; the
/// syscall fails with ENOTSOCK/EBADF by itself).
#[inline(always)]
pub fn sock_from_fd(fd: u64) -> Result<Option<u64>, Miss> {
    if fd > i32::MAX as u64 {
        return Ok(None);
    }
    let at = Miss::at(counter::READ_SYSCALL);
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, off!(task_files)).map_err(&at)?;
    let fdt: u64 = read(files, off!(files_fdt)).map_err(&at)?;
    let max: u32 = read(fdt, off!(fdt_max_fds)).map_err(&at)?;
    if fd >= u64::from(max) {
        return Ok(None);
    }
    let fds: u64 = read(fdt, off!(fdt_fd)).map_err(&at)?;
    let file: u64 = read(fds + fd * 8, 0).map_err(&at)?;
    if file == 0 {
        return Ok(None);
    }
    let socket: u64 = read(file, off!(file_private_data)).map_err(&at)?;
    if socket == 0 {
        return Ok(None);
    }
    // Only a socket's private_data points back at its file: this tells a
    // socket from any other kind of file without knowing `socket_file_ops`.
    // Reading `socket->file` of another kind of file reads whatever lies
    // there; a fault is then no error of ours.
    let Ok(back) = read::<u64>(socket, off!(socket_file)) else {
        return Ok(None);
    };
    if back != file {
        return Ok(None);
    }
    read(socket, off!(socket_sk)).map(Some).map_err(&at)
}

/// True for the sockets the inspector follows: TCP and UDP over IPv4/IPv6.
#[inline(always)]
pub fn is_inet(sk: u64) -> Result<bool, Miss> {
    let family: u16 = read(sk, off!(skc_family))?;
    if family != u16::from(AF_INET) && family != u16::from(AF_INET6) {
        return Ok(false);
    }
    let proto: u16 = read(sk, off!(sk_protocol))?;
    Ok(proto == u16::from(inspector_common::IPPROTO_TCP)
        || proto == u16::from(inspector_common::IPPROTO_UDP))
}
