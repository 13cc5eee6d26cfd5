//! The kernel's own socket tables, read by BPF socket iterators.
//!
//! `iter/tcp` and `iter/udp` programs run once per socket of the TCP
//! (listening and established hashes) and UDP tables while user space
//! reads the iterator fd, and write one [`SockRecord`] each with
//! `bpf_seq_write`. Iterator programs are `BPF_PROG_TYPE_TRACING` with
//! attach type `BPF_TRACE_ITER`: no trampoline is involved, so they load
//! where fentry is refused.
//!
//! What the walk covers (net/ipv4/tcp_ipv4.c `bpf_iter_tcp_batch`,
//! net/ipv4/udp.c `bpf_iter_udp_batch`):
//! - only sockets of the network namespace the iterator fd was created in
//!   (`bpf_iter_init_seq_net` takes `current->nsproxy->net_ns` when the fd
//!   is created; `seq_sk_match` compares each socket's net with it);
//! - TCP: listeners, full sockets in the established hash, and the
//!   `inet_timewait_sock` / `request_sock` entries of that hash, passed as
//!   a `struct sock_common *` told apart by `skc_state`. A socket that is
//!   only bound (no listen, no connect) sits in the bind hash alone and is
//!   not walked; unhashed sockets are skipped (`bpf_iter_tcp_seq_show`).
//! - UDP: every bound socket (the port-keyed `hslot` table).
//!
//! `iter/task_file` walks every open file of every process
//! (kernel/bpf/task_iter.c `task_file_seq_get_next`, one thread per file
//! table) and writes a [`FileRecord`] for each inet TCP/UDP socket of the
//! filtered namespace: its owner, and the sockets the TCP walk misses, those
//! bound without listen() or connect() (state CLOSE, `skc_num` set).

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::generated::{bpf_get_socket_cookie, bpf_jiffies64, bpf_seq_write};
use inspector_common::{
    FileRecord, IPPROTO_TCP, IPPROTO_UDP, SockRecord, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT,
    sock_flag,
};

use crate::{
    counters::count,
    fill::{blank_event, fill_common, fill_sock},
    maps::{ITER_FILTER, off},
    read::{Miss, is_inet, read},
};

/// Byte offsets in the iterator contexts (`struct bpf_iter__tcp { meta;
/// sk_common; uid; }`, `struct bpf_iter__udp { meta; udp_sk; uid; bucket; }`,
/// each member 8-byte aligned) and in `struct bpf_iter_meta { seq; ... }`.
/// These are kernel ABI for iterator programs, unlike socket layouts.
const CTX_META: usize = 0;
const CTX_SOCK: usize = 8;
const CTX_UID: usize = 16;
/// `struct bpf_iter__task_file { meta; task; u32 fd; file; }`.
const CTX_TASK: usize = 8;
const CTX_FD: usize = 16;
const CTX_FILE: usize = 24;
/// `sk_type` values of the sockets followed (include/linux/net.h).
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;

/// `iter/tcp`: one record per TCP socket of the namespace.
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn iter_tcp(ctx: *mut c_void) -> i32 {
    match try_iter(ctx, IPPROTO_TCP) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            0
        }
    }
}

/// `iter/udp`: one record per bound UDP socket of the namespace.
#[unsafe(link_section = "iter/udp")]
#[unsafe(no_mangle)]
pub extern "C" fn iter_udp(ctx: *mut c_void) -> i32 {
    match try_iter(ctx, IPPROTO_UDP) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            0
        }
    }
}

#[inline(always)]
fn try_iter(ctx: *mut c_void, proto: u8) -> Result<(), Miss> {
    let base = ctx as usize;
    // SAFETY: the verifier checks context loads against the context's BTF
    // type; these offsets and sizes are those of its pointer members.
    let meta = unsafe { core::ptr::read_volatile((base + CTX_META) as *const u64) };
    // SAFETY: a verified context load of the socket pointer member, at its
    // BTF offset and size.
    let sk = unsafe { core::ptr::read_volatile((base + CTX_SOCK) as *const u64) };
    // The final call of a walk (`bpf_iter_*_seq_stop`) passes no socket.
    if sk == 0 || meta == 0 {
        return Ok(());
    }
    // SAFETY: `meta` is the context's `struct bpf_iter_meta *`, whose first
    // member is the `struct seq_file *` to write to.
    let seq = unsafe { core::ptr::read_volatile(meta as *const u64) };

    let state: u8 = read(sk, off!(skc_state))?;
    let mut rec = SockRecord::zeroed();
    // A timewait or request socket is only a `sock_common` with its own
    // tail: `struct sock` fields must not be read from it.
    let full = !(proto == IPPROTO_TCP && (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV));
    if !fill_record(&mut rec, sk, proto, state, full)? {
        return Ok(());
    }
    if state == TCP_NEW_SYN_RECV && proto == IPPROTO_TCP {
        // The iterator hands a request socket its listener's uid
        // (`bpf_iter_tcp_seq_show`).
        // SAFETY: context load of the `uid` member, checked by the verifier.
        rec.uid = unsafe { core::ptr::read_volatile((base + CTX_UID) as *const u32) };
        rec.flags |= sock_flag::UID_KNOWN;
    }
    // SAFETY: `sk` is the context's BTF-typed socket pointer, checked for
    // NULL above; the helper takes any `struct sock_common` (full, timewait
    // or request socket) and gives it a cookie if it has none yet, as
    // sock_diag does.
    rec.cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    // SAFETY: `seq` is the iterator's seq_file; the record is on this
    // program's stack and its size is passed with it.
    // The result needs no check: when the seq buffer is full the helper
    // answers -EOVERFLOW, and `bpf_seq_read` rolls this socket back and
    // shows it again in the next read.
    let _ = unsafe {
        bpf_seq_write(
            seq as *mut _,
            (&rec as *const SockRecord).cast(),
            core::mem::size_of::<SockRecord>() as u32,
        )
    };
    Ok(())
}

/// Fills `rec` from the socket at `sk` (`full`: a `struct sock`, not a
/// timewait or request socket); `false` when the filter drops it. The
/// cookie is left to the caller.
#[inline(always)]
fn fill_record(
    rec: &mut SockRecord,
    sk: u64,
    proto: u8,
    state: u8,
    full: bool,
) -> Result<bool, Miss> {
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    if full {
        fill_sock(ev, sk)?;
        rec.uid = ev.uid;
        rec.flags |= sock_flag::UID_KNOWN;
    } else {
        fill_common(ev, sk)?;
    }
    if let Some(f) = ITER_FILTER.get(0) {
        if f.netns != 0 && f.netns != ev.netns {
            return Ok(false);
        }
        if f.lport != 0 && f.lport != ev.lport {
            return Ok(false);
        }
    }
    if proto == IPPROTO_TCP && state == TCP_TIME_WAIT {
        // `tw_reuse` / `tw_reuseport` are `#define`s for the timewait
        // socket's `__tw_common.skc_reuse` / `skc_reuseport`
        // (include/net/inet_timewait_sock.h), copied from the closed socket
        // by `inet_twsk_alloc`: `fill_common` read them as the flags, the
        // same bits `inet_bind_conflict` reads as `sk2->sk_reuse`.
        rec.tw_substate = read(sk, off!(tw_substate))?;
        let timer = sk + u64::from(off!(tw_timer));
        if let Ok(expires) = read::<u64>(timer, off!(timer_expires)) {
            rec.tw_expires = expires;
            // SAFETY: helper without arguments.
            rec.jiffies = unsafe { bpf_jiffies64() };
            rec.flags |= sock_flag::TW_TIMER;
        }
    }
    let listener = proto == IPPROTO_TCP && state == TCP_LISTEN;
    if full && listener {
        // A listener's accept queue, as `ss` reads it for Recv-Q/Send-Q
        // (`tcp_diag_get_info`): `sk_acceptq_added()` counts each child
        // `inet_csk_reqsk_queue_add()` queues, `sk_acceptq_removed()` each
        // one accept() takes.
        rec.ack_backlog = read(sk, off!(sk_ack_backlog))?;
        rec.max_ack_backlog = read(sk, off!(sk_max_ack_backlog))?;
    }
    // A listener's or a UDP socket's: the sockets a SO_REUSEPORT group
    // chooses among.
    if full && (listener || proto == IPPROTO_UDP) {
        // A UDP socket's: datagrams dropped on it, mostly on a full
        // receive buffer (`__udp_queue_rcv_skb()`), as `/proc/net/udp`
        // shows in `drops`.
        rec.drops = read_drops(sk)?;
        // What decides the group's choice besides the 4-tuple hash
        // (net/core/sock_reuseport.c `reuseport_select_sock`): a BPF
        // program, else `reuseport_select_sock_by_hash`, which prefers the
        // member whose SO_INCOMING_CPU is the receiving CPU once any has it.
        let group: u64 = read(sk, off!(sk_reuseport_cb))?;
        if group != 0 {
            let prog: u64 = read(group, off!(reuseport_prog))?;
            if prog != 0 {
                rec.flags |= sock_flag::REUSEPORT_PROG;
            }
            let at = off!(reuseport_incoming_cpu);
            if at != 0 && read::<u16>(group, at)? != 0 {
                rec.flags |= sock_flag::INCOMING_CPU;
            }
        }
    }
    rec.ino = ev.ino;
    rec.netns = ev.netns;
    rec.bound_dev_if = ev.bound_dev_if;
    rec.lport = ev.lport;
    rec.rport = ev.rport;
    rec.family = ev.family;
    rec.proto = proto;
    rec.state = state;
    rec.flags |= ev.flags & (sock_flag::REUSEADDR | sock_flag::REUSEPORT | sock_flag::V6ONLY);
    rec.laddr = ev.laddr;
    rec.raddr = ev.raddr;
    Ok(true)
}

/// A socket's drop count as `sk_drops_read()` (include/net/sock.h) reads
/// it: the per-node counters where the socket has them (6.18+, UDP and
/// raw sockets), else `sk_drops`. On a listener, `tcp_listendrop()` adds
/// one for each SYN (`tcp_conn_request()`) or handshake-completing ACK
/// (`tcp_v4_syn_recv_sock()`) dropped because the accept queue was full,
/// the same events as the namespace's `ListenDrops`; `tcp_v4_rcv()` adds
/// the segments it discards on the listener (such as that ACK).
#[inline(always)]
fn read_drops(sk: u64) -> Result<u32, Miss> {
    let at = off!(sk_drop_counters);
    if at != 0 {
        let ndc: u64 = read(sk, at)?;
        if ndc != 0 {
            let a: u32 = read(ndc, off!(ndc_drops0))?;
            let b: u32 = read(ndc, off!(ndc_drops1))?;
            return Ok(a.wrapping_add(b));
        }
    }
    Ok(read(sk, off!(sk_drops))?)
}

/// `iter/task_file`: one record per open inet TCP/UDP socket file of the
/// filtered namespace, with the process holding it.
#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn iter_task_file(ctx: *mut c_void) -> i32 {
    match try_task_file(ctx) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            0
        }
    }
}

#[inline(always)]
fn try_task_file(ctx: *mut c_void) -> Result<(), Miss> {
    let base = ctx as usize;
    // SAFETY: context loads of the pointer members and of `fd`, at the
    // offsets and sizes of `struct bpf_iter__task_file`; the verifier
    // checks them against its BTF.
    let meta = unsafe { core::ptr::read_volatile((base + CTX_META) as *const u64) };
    // SAFETY: as above.
    let task = unsafe { core::ptr::read_volatile((base + CTX_TASK) as *const u64) };
    // SAFETY: as above.
    let fd = unsafe { core::ptr::read_volatile((base + CTX_FD) as *const u32) };
    // SAFETY: as above.
    let file = unsafe { core::ptr::read_volatile((base + CTX_FILE) as *const u64) };
    // The final call of a walk passes no task or file.
    if meta == 0 || task == 0 || file == 0 {
        return Ok(());
    }
    let Some(f) = ITER_FILTER.get(0) else {
        return Ok(());
    };
    // Which files are sockets: only a socket's `private_data` (its
    // `struct socket`) points back at the file, the same test as
    // `sock_from_fd`. Non-socket files are the common case: no error.
    let socket: u64 = read(file, off!(file_private_data))?;
    if socket == 0 {
        return Ok(());
    }
    let back: u64 = match read(socket, off!(socket_file)) {
        Ok(b) => b,
        Err(_) => return Ok(()),
    };
    if back != file {
        return Ok(());
    }
    let sk: u64 = read(socket, off!(socket_sk))?;
    if sk == 0 || !is_inet(sk)? {
        return Ok(());
    }
    let ty: u16 = read(sk, off!(sk_type))?;
    let proto: u16 = read(sk, off!(sk_protocol))?;
    if !((ty == SOCK_STREAM && proto == u16::from(IPPROTO_TCP))
        || (ty == SOCK_DGRAM && proto == u16::from(IPPROTO_UDP)))
    {
        return Ok(());
    }
    let state: u8 = read(sk, off!(skc_state))?;
    let mut rec = FileRecord::zeroed();
    // A socket with a file is always a full `struct sock`.
    if !fill_record(&mut rec.sock, sk, proto as u8, state, true)? {
        return Ok(());
    }
    // `bpf_get_socket_cookie` wants a BTF-typed socket and this one was
    // read through a file: take the cookie the socket already has. It is 0
    // only if nothing asked for one yet (`sock_gen_cookie` assigns it on
    // first use: the socket iterators, sock_diag and the probes all do).
    rec.sock.cookie = read(sk, off!(skc_cookie))?;
    rec.tgid = read(task, f.task_tgid)?;
    rec.pid = read(task, f.task_pid)?;
    rec.comm = read(task, f.task_comm)?;
    rec.fd = fd;
    // SAFETY: `meta` is the context's `struct bpf_iter_meta *`, whose first
    // member is the `struct seq_file *`.
    let seq = unsafe { core::ptr::read_volatile(meta as *const u64) };
    // SAFETY: as in `try_iter`; an overflow is retried by `bpf_seq_read`.
    let _ = unsafe {
        bpf_seq_write(
            seq as *mut _,
            (&rec as *const FileRecord).cast(),
            core::mem::size_of::<FileRecord>() as u32,
        )
    };
    Ok(())
}
