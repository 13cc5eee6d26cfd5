//! Shared maps and the helpers every program uses to read kernel memory
//! through offsets taken from the running kernel's BTF.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, bpf_probe_read_user,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use inspector_common::{AF_INET, AF_INET6, Event, Offsets, Owner, counter, flag};

/// Layout of the running kernel, filled by user space at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets::zeroed();

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Unread bytes at which a commit wakes the reader: 256 events, well under
/// the ring's 4 MiB so a burst is read long before it could overflow.
const WAKEUP_BYTES: u64 = 256 * core::mem::size_of::<Event>() as u64;

/// All events, in the order they were committed.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU counters, indexed by `inspector_common::counter`.
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
/// offset 4 (v4) or 8 (v6). An unreadable address leaves them zero.
#[inline(always)]
pub fn read_sockaddr(ev: &mut Event, uaddr: u64, space: Space) {
    let family: u16 = read_in(space, uaddr).unwrap_or(0);
    let port: u16 = read_in(space, uaddr + 2).unwrap_or(0);
    ev.req_port = u16::from_be(port);
    if family == u16::from(AF_INET) {
        let a: [u8; 4] = read_in(space, uaddr + 4).unwrap_or([0; 4]);
        ev.req_addr[..4].copy_from_slice(&a);
    } else if family == u16::from(AF_INET6) {
        ev.req_addr = read_in(space, uaddr + 8).unwrap_or([0; 16]);
    }
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

#[inline(always)]
fn bump(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn read_error() {
    bump(counter::READ_ERRORS);
}

/// Commits `ev` unless the netns filter excludes it; counts drops.
#[inline(always)]
pub fn emit(ev: &Event) {
    let want = off!(filter_netns);
    if want != 0 && ev.netns != want {
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
        Ok(()) => bump(counter::EMITTED),
        Err(_) => bump(counter::DROPPED),
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The current task as an owner.
#[inline(always)]
pub fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
pub fn set_owner(ev: &mut Event, o: &Owner) {
    ev.pid = o.pid;
    ev.tid = o.tid;
    ev.comm = o.comm;
}

/// Fills `pid`/`comm` from the remembered owner of `sk`, if any.
#[inline(always)]
pub fn attribute(ev: &mut Event, sk: u64) {
    // SAFETY: the value is copied out before the map entry can change.
    if let Some(o) = unsafe { OWNERS.get(sk) } {
        let o = *o;
        set_owner(ev, &o);
        ev.flags |= flag::OWNER_KNOWN;
    }
}

/// Bytes of `struct sock_common` copied in one helper call: every field
/// the events need lies in them on the kernels we know (a field beyond is
/// read on its own).
const HEAD: usize = 128;

/// Per-CPU room for the copy: on the stack it would push the programs
/// that also hold an event past the 512-byte stack limit of older
/// verifiers (6.1 counts the combined stack of calls).
#[map]
static HEADS: PerCpuArray<[u8; HEAD]> = PerCpuArray::with_max_entries(1, 0);

/// `struct sock_common`'s first [`HEAD`] bytes, read once.
struct Head {
    base: u64,
    bytes: &'static [u8; HEAD],
}

impl Head {
    #[inline(always)]
    fn read(base: u64) -> Result<Self, i64> {
        let slot = HEADS.get_ptr_mut(0).ok_or(-1i64)?;
        // SAFETY: the per-CPU slot is ours until this program returns (BPF
        // programs do not migrate or nest on a CPU).
        let bytes = unsafe { &mut *slot };
        // SAFETY: bpf_probe_read_kernel checks the source address.
        unsafe { bpf_probe_read_kernel_buf(base as *const u8, bytes) }.map_err(|e| e as i64)?;
        Ok(Self { base, bytes })
    }

    /// The field at `offset`, from the copy, or read on its own.
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let at = offset as usize;
        if at + core::mem::size_of::<T>() <= HEAD {
            // SAFETY: in bounds of the copy; any bit pattern is a valid T
            // for the integer and byte-array types read here.
            Ok(unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(at).cast::<T>()) })
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

/// Fills the `struct sock_common` part: family, ports, addresses, flags,
/// bound device and network namespace. Valid for full sockets, request
/// sockets and timewait sockets alike. One helper call reads the fields;
/// these hooks run for every connection, so every call counts.
#[inline(always)]
pub fn fill_common(ev: &mut Event, skc: u64) -> Result<(), i64> {
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
/// protocol, owner uid, cookie (if generated) and the socket inode.
#[inline(always)]
pub fn fill_sock(ev: &mut Event, sk: u64) -> Result<(), i64> {
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
/// the current task.
#[inline(always)]
pub fn sock_from_fd(fd: u64) -> Result<u64, i64> {
    if fd > i32::MAX as u64 {
        return Err(-1);
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, off!(task_files))?;
    let fdt: u64 = read(files, off!(files_fdt))?;
    let max: u32 = read(fdt, off!(fdt_max_fds))?;
    if fd >= u64::from(max) {
        return Err(-1);
    }
    let fds: u64 = read(fdt, off!(fdt_fd))?;
    let file: u64 = read(fds + fd * 8, 0)?;
    if file == 0 {
        return Err(-1);
    }
    let socket: u64 = read(file, off!(file_private_data))?;
    if socket == 0 {
        return Err(-1);
    }
    // Only a socket's private_data points back at its file: this tells a
    // socket from any other kind of file without knowing `socket_file_ops`.
    let back: u64 = read(socket, off!(socket_file))?;
    if back != file {
        return Err(-1);
    }
    read(socket, off!(socket_sk))
}

/// True for the sockets the inspector follows: TCP and UDP over IPv4/IPv6.
#[inline(always)]
pub fn is_inet(sk: u64) -> bool {
    let family: u16 = match read(sk, off!(skc_family)) {
        Ok(f) => f,
        Err(_) => return false,
    };
    if family != u16::from(AF_INET) && family != u16::from(AF_INET6) {
        return false;
    }
    let proto: u16 = match read(sk, off!(sk_protocol)) {
        Ok(p) => p,
        Err(_) => return false,
    };
    proto == u16::from(inspector_common::IPPROTO_TCP)
        || proto == u16::from(inspector_common::IPPROTO_UDP)
}
