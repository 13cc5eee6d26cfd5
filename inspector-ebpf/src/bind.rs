//! Bind decisions at the syscall boundary.
//!
//! Where fentry on `inet_csk_get_port` / `udp_lib_get_port` is refused, the
//! decision is observed as its caller sees it: the syscall's entry
//! remembers the socket and its port before the call, its exit reads the
//! result and the socket after it. `listen()` is a decision of its own
//! because `inet_csk_listen_start` calls `inet_csk_get_port` again.
//!
//! Two sets of hooks do this. Preferred: the per-syscall tracepoints
//! (`syscalls:sys_enter_bind`, `sys_exit_accept4`, ...) of only the calls
//! decoded, so no other system call of the host runs a program. They need
//! tracefs and `CONFIG_FTRACE_SYSCALLS`; where either is missing,
//! `raw_syscalls:sys_enter`/`sys_exit` (`tp_btf`) run on every system call
//! and filter by number.

use core::mem::MaybeUninit;

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use inspector_common::{Event, IPPROTO_TCP, counter, flag, kind, phase};

use crate::{
    counters::count,
    emit::{count_accept_from, emit, emits, quiet_success},
    fill::{blank_event, fill_sock_in_call, now},
    maps::{ACCEPTING, INFLIGHT, Inflight, off},
    owners::{begin_call, current_owner, remember_owner, set_owner},
    read::{Miss, Space, is_inet, read, read_sockaddr, sock_from_fd},
};

/// Offsets in the record of a `syscalls:sys_enter_*` / `sys_exit_*`
/// tracepoint (`/sys/kernel/tracing/events/syscalls/*/format`, laid out by
/// `ftrace_syscall_enter` / `ftrace_syscall_exit`): after the 8-byte common
/// header, `int __syscall_nr`, then each argument (or the return value) as
/// an 8-byte long.
const TP_NR: usize = 8;
const TP_ARG0: usize = 16;
const TP_ARG1: usize = 24;
const TP_RET: usize = 16;

/// A field of a classic tracepoint's record, by a direct load: the
/// verifier checks the offset against the record (`tp_prog_is_valid_access`),
/// and no helper call is needed.
#[inline(always)]
fn tp_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    use aya_ebpf::EbpfContext;
    // SAFETY: `ctx` points at the tracepoint's record; the offsets are
    // those of its format (above), inside it and aligned for `T`.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset).cast::<T>()) }
}

/// Entry of bind(), listen(), connect(), accept() and accept4(), attached
/// to their `syscalls:sys_enter_*` tracepoints.
#[tracepoint]
pub fn syscall_enter(ctx: TracePointContext) -> i32 {
    let nr: i32 = tp_field(&ctx, TP_NR);
    let fd: u64 = tp_field(&ctx, TP_ARG0);
    // listen()'s second argument is its backlog, never read as an address.
    let uaddr: u64 = tp_field(&ctx, TP_ARG1);
    if let Err(e) = enter(nr as u32, fd, uaddr) {
        // Counted by kind; the call then goes unreported.
        count(e.slot);
    }
    0
}

/// Exit of bind(), listen(), connect(), accept() and accept4(), attached to
/// their `syscalls:sys_exit_*` tracepoints.
#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> i32 {
    let nr: i32 = tp_field(&ctx, TP_NR);
    let ret: i64 = tp_field(&ctx, TP_RET);
    match exit(nr as u32, ret) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            aya_log_ebpf::warn!(
                &ctx,
                "syscall_exit: kernel read failed (counter {}), error {}",
                e.slot,
                e.code
            );
            0
        }
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    match try_sys_enter(&ctx) {
        Ok(()) => 0,
        Err(e) => {
            // Counted by kind; the call then goes unreported.
            count(e.slot);
            0
        }
    }
}

fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<(), Miss> {
    let nr: i64 = ctx.arg(1);
    let nr = nr as u32;
    if nr != off!(nr_bind) && nr != off!(nr_listen) && nr != off!(nr_connect) && !is_accept(nr) {
        return Ok(());
    }
    let regs: u64 = ctx.arg(0);
    let args = Miss::at(counter::READ_SYSCALL);
    let fd: u64 = read(regs, off!(regs_di)).map_err(&args)?;
    let uaddr: u64 = read(regs, off!(regs_si)).map_err(&args)?;
    enter(nr, fd, uaddr)
}

/// bind(), listen(), connect() or accept() number `nr` starts on
/// descriptor `fd` (`uaddr`: the address asked for, bind and connect only).
#[inline(always)]
fn enter(nr: u32, fd: u64, uaddr: u64) -> Result<(), Miss> {
    if is_accept(nr) {
        return accepting(fd);
    }
    if nr == off!(nr_connect) && !emits(kind::CONNECT) {
        // Counted, not emitted (see `maps::CONFIG`): only a failure is
        // reported, and only a failure's exit reads the socket, from the
        // descriptor. No owner either: none of the connection's later
        // events goes out; a failure names its caller at the exit.
        let inflight = Inflight {
            sk: 0,
            fd,
            uaddr,
            nr,
            num_before: 0,
            decided: 0,
            _pad: 0,
        };
        begin_call(
            aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32,
            &inflight,
        );
        return Ok(());
    }
    let Some(sk) = sock_from_fd(fd)? else {
        return Ok(()); // not a socket: the syscall fails with ENOTSOCK/EBADF
    };
    if !is_inet(sk)? {
        return Ok(());
    }
    let num_before: u16 = read(sk, off!(skc_num))?;
    let owner = current_owner();
    // Remember the owner now: state changes raised inside this very call
    // (CLOSE -> SYN_SENT in connect) already find it.
    remember_owner(sk, &owner);
    let inflight = Inflight {
        sk,
        fd,
        uaddr,
        nr,
        num_before: u32::from(num_before),
        decided: 0,
        _pad: 0,
    };
    begin_call(owner.tid, &inflight);
    Ok(())
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    match try_sys_exit(&ctx) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            // Rare by design: a kernel read failed. Counted by kind, and the
            // reason goes to the user-space log.
            aya_log_ebpf::warn!(
                &ctx,
                "sys_exit: kernel read failed (counter {}), error {}",
                e.slot,
                e.code
            );
            0
        }
    }
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), Miss> {
    let regs: u64 = ctx.arg(0);
    // SAFETY: `regs` is the tracepoint's BTF-typed `struct pt_regs *` and
    // the offset is `orig_ax`'s in this kernel's BTF: a verified direct
    // load, no helper call. This runs after every system call on the host.
    let at = regs + u64::from(off!(regs_orig_ax));
    let nr: u64 = unsafe { core::ptr::read_volatile(at as *const u64) };
    let nr = nr as u32;
    let ret: i64 = ctx.arg(1);
    exit(nr, ret)
}

/// System call number `nr` returned `ret`.
#[inline(always)]
fn exit(nr: u32, ret: i64) -> Result<(), Miss> {
    if nr == off!(nr_accept) || nr == off!(nr_accept4) {
        return accepted(ret);
    }
    if nr != off!(nr_bind) && nr != off!(nr_listen) && nr != off!(nr_connect) {
        return Ok(());
    }
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out before removal.
    let Some(inflight) = (unsafe { INFLIGHT.get(tid) }).copied() else {
        return Ok(());
    };
    let _ = INFLIGHT.remove(tid);
    if inflight.nr != nr {
        return Ok(());
    }
    // A connect() that worked (or is on its way) is neither emitted nor
    // counted where connections are counted or calls quiet (see
    // `maps::CONFIG`): what `serve` and the default `trace` report of
    // connect() is its failures, and their causes. The owner stays in
    // OWNERS from the entry.
    if nr == off!(nr_connect)
        && (!emits(kind::CONNECT) || quiet_success())
        && (ret == 0 || ret == -EINPROGRESS)
    {
        return Ok(());
    }
    let mut inflight = inflight;
    if inflight.sk == 0 {
        // A counted connect() that failed: its socket, read now.
        let Some(sk) = sock_from_fd(inflight.fd)? else {
            return Ok(());
        };
        if !is_inet(sk)? {
            return Ok(());
        }
        inflight.sk = sk;
    }

    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    ev.ts_ns = now();
    fill_sock_in_call(ev, inflight.sk)?;
    let owner = current_owner();
    set_owner(ev, &owner);
    ev.flags |= flag::OWNER_KNOWN | flag::SYSCALL;
    ev.errno = if ret < 0 { (-ret) as i32 } else { 0 };

    if nr == off!(nr_listen) {
        if u16::from(ev.proto) != u16::from(IPPROTO_TCP) {
            return Ok(());
        }
        ev.kind = kind::BIND;
        ev.phase = if inflight.num_before == 0 {
            phase::AUTOBIND
        } else {
            phase::LISTEN
        };
        ev.req_port = inflight.num_before as u16;
        ev.req_addr = ev.laddr;
    } else {
        read_sockaddr(ev, inflight.uaddr, Space::User);
        bind_or_connect(ev, nr);
    }
    emit(ev);
    Ok(())
}

/// Kind and phase of a bind() or connect() whose requested address is in
/// `ev` (both modes).
#[inline(always)]
pub fn bind_or_connect(ev: &mut Event, nr: u32) {
    if nr == off!(nr_bind) {
        ev.kind = kind::BIND;
        // Port 0 asks the kernel to pick, unless the address could not be
        // read at all: then nothing was asked that we know of.
        ev.phase = if ev.req_port == 0 && ev.flags & flag::ADDR_UNREADABLE == 0 {
            phase::AUTOBIND
        } else {
            phase::BIND
        };
    } else {
        ev.kind = kind::CONNECT;
        ev.phase = phase::CONNECT;
        // A failed connect leaves no destination on the socket: report the
        // one the caller asked for.
        if ev.rport == 0 {
            ev.rport = ev.req_port;
            ev.raddr = ev.req_addr;
        }
    }
}

#[inline(always)]
fn is_accept(nr: u32) -> bool {
    nr == off!(nr_accept) || nr == off!(nr_accept4)
}

/// accept()/accept4() starts on the listening descriptor `fd`: where
/// accepts are counted, its socket is remembered for the exit, which
/// counts the accept by listener and process (the exit tracepoint carries
/// no arguments). Where they are emitted, nothing to do: the event names
/// the accepted socket.
#[inline(always)]
fn accepting(fd: u64) -> Result<(), Miss> {
    if emits(kind::ACCEPT) {
        return Ok(());
    }
    let Some(listener) = sock_from_fd(fd)? else {
        return Ok(()); // fails with ENOTSOCK/EBADF
    };
    // Unix sockets accept too, and more often: not followed.
    if !is_inet(listener)? {
        return Ok(());
    }
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // Full, the oldest call in flight gives way (LRU): never an error.
    let _ = ACCEPTING.insert(tid, listener, 0);
    Ok(())
}

/// accept()/accept4() returned `ret` as the new descriptor: its socket now
/// belongs to the caller. Inlined: as a subprogram its frame adds to the
/// caller's, and 6.1's verifier refuses the combined 512-byte stack
/// (`check_max_stack_depth`).
#[inline(always)]
fn accepted(ret: i64) -> Result<(), Miss> {
    if !emits(kind::ACCEPT) {
        let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
        // SAFETY: copied out before removal; only this thread writes it.
        let listener = unsafe { ACCEPTING.get(tid) }.copied();
        if listener.is_some() {
            let _ = ACCEPTING.remove(tid);
        }
        if ret >= 0 {
            count_accept(listener.unwrap_or(0));
        }
        return Ok(());
    }
    if ret < 0 {
        return Ok(());
    }
    let Some(sk) = sock_from_fd(ret as u64)? else {
        return Ok(());
    };
    report_accept(sk, 0)
}

/// `sk` was just handed to the current task by accept() (both modes) from
/// the listening socket `listener` (0: not known): it becomes the
/// socket's owner.
#[inline(always)]
pub fn report_accept(sk: u64, listener: u64) -> Result<(), Miss> {
    if !emits(kind::ACCEPT) {
        count_accept(listener);
        return Ok(());
    }
    if !is_inet(sk)? {
        return Ok(());
    }
    let owner = current_owner();
    remember_owner(sk, &owner);
    if quiet_success() {
        // Only the owner is kept, for the connection's timewait entry.
        return Ok(());
    }
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    ev.ts_ns = now();
    fill_sock_in_call(ev, sk)?;
    set_owner(ev, &owner);
    ev.kind = kind::ACCEPT;
    ev.flags |= flag::OWNER_KNOWN | flag::SYSCALL;
    emit(ev);
    Ok(())
}

/// An accept counted, not emitted (see `maps::CONFIG`): by listener and
/// process, where the listener is known.
#[inline(always)]
fn count_accept(listener: u64) {
    if listener != 0 {
        count_accept_from(listener);
    }
}

/// errno of a non-blocking connect() still on its way.
const EINPROGRESS: i64 = 115;
