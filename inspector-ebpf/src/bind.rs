//! Bind decisions at the syscall boundary.
//!
//! Where fentry on `inet_csk_get_port` / `udp_lib_get_port` is refused, the
//! decision is observed as its caller sees it: `raw_syscalls:sys_enter`
//! remembers the socket and its port before the call, `sys_exit` reads the
//! result and the socket after it. `listen()` is a decision of its own
//! because `inet_csk_listen_start` calls `inet_csk_get_port` again.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use inspector_common::{Event, IPPROTO_TCP, counter, flag, kind, phase};

use crate::core_read::{
    INFLIGHT, Inflight, Miss, Space, begin_call, count, current_owner, emit, fill_sock, is_inet,
    now, off, read, read_sockaddr, remember_owner, set_owner, sock_from_fd,
};

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
    if nr != off!(nr_bind) && nr != off!(nr_listen) && nr != off!(nr_connect) {
        return Ok(());
    }
    let regs: u64 = ctx.arg(0);
    let args = Miss::at(counter::READ_SYSCALL);
    let fd: u64 = read(regs, off!(regs_di)).map_err(&args)?;
    let uaddr: u64 = read(regs, off!(regs_si)).map_err(&args)?;
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

    let mut ev = Event::zeroed();
    ev.ts_ns = now();
    fill_sock(&mut ev, inflight.sk)?;
    let owner = current_owner();
    set_owner(&mut ev, &owner);
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
        read_sockaddr(&mut ev, inflight.uaddr, Space::User);
        bind_or_connect(&mut ev, nr);
    }
    emit(&ev);
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

/// accept()/accept4() returned `ret` as the new descriptor: its socket now
/// belongs to the caller.
fn accepted(ret: i64) -> Result<(), Miss> {
    if ret < 0 {
        return Ok(());
    }
    let Some(sk) = sock_from_fd(ret as u64)? else {
        return Ok(());
    };
    report_accept(sk)
}

/// `sk` was just handed to the current task by accept() (both modes): it
/// becomes the socket's owner.
#[inline(always)]
pub fn report_accept(sk: u64) -> Result<(), Miss> {
    if !is_inet(sk)? {
        return Ok(());
    }
    let owner = current_owner();
    remember_owner(sk, &owner);
    let mut ev = Event::zeroed();
    ev.ts_ns = now();
    fill_sock(&mut ev, sk)?;
    set_owner(&mut ev, &owner);
    ev.kind = kind::ACCEPT;
    ev.flags |= flag::OWNER_KNOWN | flag::SYSCALL;
    emit(&ev);
    Ok(())
}
