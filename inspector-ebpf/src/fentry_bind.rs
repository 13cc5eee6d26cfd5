//! Bind decisions where the kernel makes them (fentry mode).
//!
//! `inet_csk_get_port` (TCP) and `udp_lib_get_port` (UDP) decide whether a
//! socket gets its port: for bind(), for listen() (`inet_csk_listen_start`
//! moves the socket to LISTEN and asks again) and for autobind (port 0,
//! and UDP's implicit bind on connect or sendmsg). fexit sees the socket,
//! the port asked for and the verdict, whoever called: the bind syscall,
//! io_uring or the kernel itself.
//!
//! `inet_bind` / `inet6_bind` bracket bind(): the address the caller asked
//! for comes from their (kernel) copy of it, and a bind refused before the
//! port decision (EACCES, EADDRNOTAVAIL, EINVAL) is reported at their exit.
//! connect() is bracketed by `inet_stream_connect` / `inet_dgram_connect`,
//! and `inet_accept` hands a new socket to its owner.

use core::mem::MaybeUninit;

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use inspector_common::{IPPROTO_TCP, TCP_LISTEN, flag, kind, phase};

use crate::{
    bind::{bind_or_connect, report_accept},
    counters::count,
    emit::{emit, quiet_success},
    fill::{blank_event, fill_sock_in_call, now},
    maps::{INFLIGHT, Inflight, off},
    owners::{begin_call, current_owner, remember_owner, set_owner},
    read::{Miss, Space, is_inet, read, read_sockaddr},
};

/// errno for "address in use": what bind() and listen() return when the
/// port decision says no.
const EADDRINUSE: i32 = 98;

/// errno of a non-blocking connect() still on its way.
const EINPROGRESS: i32 = 115;

#[fentry(function = "inet_bind")]
pub fn fentry_inet_bind(ctx: FEntryContext) -> i32 {
    enter(&ctx, off!(nr_bind))
}

#[fentry(function = "inet6_bind")]
pub fn fentry_inet6_bind(ctx: FEntryContext) -> i32 {
    enter(&ctx, off!(nr_bind))
}

#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> i32 {
    leave(&ctx, off!(nr_bind))
}

#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> i32 {
    leave(&ctx, off!(nr_bind))
}

#[fentry(function = "inet_stream_connect")]
pub fn fentry_inet_stream_connect(ctx: FEntryContext) -> i32 {
    enter(&ctx, off!(nr_connect))
}

#[fentry(function = "inet_dgram_connect")]
pub fn fentry_inet_dgram_connect(ctx: FEntryContext) -> i32 {
    enter(&ctx, off!(nr_connect))
}

#[fexit(function = "inet_stream_connect")]
pub fn fexit_inet_stream_connect(ctx: FExitContext) -> i32 {
    leave(&ctx, off!(nr_connect))
}

#[fexit(function = "inet_dgram_connect")]
pub fn fexit_inet_dgram_connect(ctx: FExitContext) -> i32 {
    leave(&ctx, off!(nr_connect))
}

/// Entry of `inet_bind(sock, uaddr, len)` or `inet_*_connect(sock, uaddr,
/// len, flags)`: remembers the socket, the address asked for and the
/// owner, before anything inside the call (the SYN_SENT state change, the
/// port decision) needs them.
#[inline(always)]
fn enter(ctx: &FEntryContext, nr: u32) -> i32 {
    let sock: u64 = ctx.arg(0);
    let uaddr: u64 = ctx.arg(1);
    if let Err(e) = try_enter(sock, uaddr, nr) {
        count(e.slot);
    }
    0
}

#[inline(always)]
fn try_enter(sock: u64, uaddr: u64, nr: u32) -> Result<(), Miss> {
    let sk: u64 = read(sock, off!(socket_sk))?;
    if sk == 0 || !is_inet(sk)? {
        return Ok(());
    }
    let num_before: u16 = read(sk, off!(skc_num))?;
    let owner = current_owner();
    remember_owner(sk, &owner);
    let inflight = Inflight {
        sk,
        fd: 0,
        uaddr,
        nr,
        num_before: u32::from(num_before),
        decided: 0,
        _pad: 0,
    };
    begin_call(owner.tid, &inflight);
    Ok(())
}

/// Exit of a bracketed call: reports connect() with the errno its caller
/// sees, and a bind() that ended before (or without) a port decision.
#[inline(always)]
fn leave(ctx: &FExitContext, nr: u32) -> i32 {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out before removal.
    let Some(inflight) = (unsafe { INFLIGHT.get(tid) }).copied() else {
        return 0;
    };
    let _ = INFLIGHT.remove(tid);
    if inflight.nr != nr || inflight.decided != 0 {
        return 0;
    }
    let ret: i32 = ctx.ret().unwrap_or(0);
    // A connect() that worked (or is on its way) where calls are quiet:
    // its owner stays in OWNERS from the entry.
    if nr == off!(nr_connect) && quiet_success() && (ret == 0 || ret == -EINPROGRESS) {
        return 0;
    }
    if let Err(e) = report_call(&inflight, ret) {
        count(e.slot);
    }
    0
}

fn report_call(inflight: &Inflight, ret: i32) -> Result<(), Miss> {
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    ev.ts_ns = now();
    fill_sock_in_call(ev, inflight.sk)?;
    set_owner(ev, &current_owner());
    ev.flags |= flag::OWNER_KNOWN | flag::SYSCALL;
    ev.errno = if ret < 0 { -ret } else { 0 };
    read_sockaddr(ev, inflight.uaddr, Space::Kernel);
    bind_or_connect(ev, inflight.nr);
    emit(ev);
    Ok(())
}

#[fexit(function = "inet_csk_get_port")]
pub fn fexit_inet_csk_get_port(ctx: FExitContext) -> i32 {
    get_port(&ctx)
}

#[fexit(function = "udp_lib_get_port")]
pub fn fexit_udp_lib_get_port(ctx: FExitContext) -> i32 {
    get_port(&ctx)
}

/// `inet_csk_get_port(sk, snum)` / `udp_lib_get_port(sk, snum, ...)`
/// returned: 0 grants the port; anything else refuses it (current kernels
/// return -EADDRINUSE, older ones 1; the caller sees EADDRINUSE).
#[inline(always)]
fn get_port(ctx: &FExitContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let snum: u64 = ctx.arg(1);
    let ret: i32 = ctx.ret().unwrap_or(0);
    if let Err(e) = report_decision(sk, snum as u16, ret) {
        count(e.slot);
    }
    0
}

fn report_decision(sk: u64, snum: u16, ret: i32) -> Result<(), Miss> {
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    ev.ts_ns = now();
    fill_sock_in_call(ev, sk)?;
    // Always the caller's own call (bind, listen, connect, sendmsg): the
    // current task owns the socket.
    let owner = current_owner();
    remember_owner(sk, &owner);
    set_owner(ev, &owner);
    ev.kind = kind::BIND;
    ev.flags |= flag::OWNER_KNOWN | flag::SYSCALL;
    ev.errno = match ret {
        0 => 0,
        r if r < 0 => -r,
        _ => EADDRINUSE,
    };
    ev.req_port = snum;
    ev.req_addr = ev.laddr;
    let listening = ev.proto == IPPROTO_TCP && read::<u8>(sk, off!(skc_state))? == TCP_LISTEN;
    ev.phase = match (listening, snum) {
        (_, 0) => phase::AUTOBIND,
        (true, _) => phase::LISTEN,
        (false, _) => phase::BIND,
    };
    if ev.errno != 0 && ev.phase != phase::LISTEN {
        // A refused bind leaves the socket without an address
        // (`__inet_bind` / `__inet6_bind` clear it): report it as the
        // caller finds it, like the tracepoint mode.
        ev.laddr = [0; 16];
    }
    if let Some(inflight) = INFLIGHT.get_ptr_mut(owner.tid) {
        // SAFETY: this thread's own entry; nothing else writes it.
        let inflight = unsafe { &mut *inflight };
        if inflight.sk == sk && inflight.nr == off!(nr_bind) {
            // Inside bind(): the address asked for, and the exit of
            // inet_bind has nothing more to report.
            read_sockaddr(ev, inflight.uaddr, Space::Kernel);
            inflight.decided = 1;
        }
    }
    emit(ev);
    Ok(())
}

/// `inet_accept(sock, newsock, ...)` returned 0: the new socket, now
/// grafted onto its file, belongs to the caller, and came from the
/// listener `sock`.
#[fexit(function = "inet_accept")]
pub fn fexit_inet_accept(ctx: FExitContext) -> i32 {
    let ret: i32 = ctx.ret().unwrap_or(-1);
    if ret != 0 {
        return 0;
    }
    let sock: u64 = ctx.arg(0);
    let newsock: u64 = ctx.arg(1);
    let accepted = read::<u64>(sock, off!(socket_sk))
        .and_then(|listener| Ok((listener, read::<u64>(newsock, off!(socket_sk))?)))
        .map_err(Miss::from)
        .and_then(|(listener, sk)| {
            if sk == 0 {
                Ok(())
            } else {
                report_accept(sk, listener)
            }
        });
    if let Err(e) = accepted {
        count(e.slot);
    }
    0
}
