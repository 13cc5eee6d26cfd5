//! TCP state changes and the TIME_WAIT lifecycle.
//!
//! `sock:inet_sock_set_state` never reports TIME_WAIT: `tcp_time_wait()`
//! replaces the full socket by an `inet_timewait_sock` and the full socket
//! goes straight to CLOSE. The timewait socket's own timer tells its story:
//! armed in `inet_twsk_hashdance_schedule` (entry, or a re-arm when the
//! substate moves on), detached and then `tw_timer_handler` on expiry, or only
//! detached by `inet_twsk_deschedule_put` when it is reused or killed.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use inspector_common::{
    Event, IPPROTO_TCP, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT, counter, flag,
    kind, listener_change,
};

use crate::{
    counters::count,
    emit::{emit, emits, emits_state, quiet_success},
    fill::{blank_event, fill_common, fill_sock, now},
    maps::{OWNERS, off},
    owners::{attribute, in_connect},
    read::{Miss, read},
    tw_count::count_tw,
    tw_entry,
};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    match try_set_state(&ctx) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            // Rare by design: a kernel read failed. Counted by kind, and the
            // reason goes to the user-space log.
            aya_log_ebpf::warn!(
                &ctx,
                "inet_sock_set_state: kernel read failed (counter {}), error {}",
                e.slot,
                e.code
            );
            0
        }
    }
}

fn try_set_state(ctx: &BtfTracePointContext) -> Result<(), Miss> {
    let sk: u64 = ctx.arg(0);
    // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`, and the
    // offset and size are those of `sk_protocol` in this kernel's BTF: the
    // verifier checks the load; it needs no helper call, and this filter
    // runs for every state change of every socket.
    let at = sk + u64::from(off!(sk_protocol));
    let proto: u16 = unsafe { core::ptr::read_volatile(at as *const u16) };
    if proto != u16::from(IPPROTO_TCP) {
        return Ok(());
    }
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    let wanted = if emits(kind::STATE) {
        emits_state(new)
    } else {
        // Counted, not emitted (see `maps::CONFIG`): only a
        // listener's own transitions matter then; and where calls are
        // quiet, a connection established on a timewait socket's 4-tuple,
        // which tells user space that socket was reused.
        listener_change(old as u8, new as u8)
            || (new == i32::from(TCP_ESTABLISHED)
                && (old == i32::from(TCP_SYN_RECV) || old == i32::from(TCP_SYN_SENT))
                && quiet_success()
                && tw_entry::takes_over(sk))
    };
    if !wanted {
        // A closed socket still lets go of its owner, where connections
        // have owners (where they are counted only listeners do, and a
        // listener's close is `wanted`).
        if new == i32::from(TCP_CLOSE) && emits(kind::CONNECT) {
            // A timewait entry held for this socket's CLOSE names the
            // owner, which is let go of right after.
            if quiet_success()
                && let Err(e) = tw_entry::at_close(sk)
            {
                count(e.slot);
            }
            let _ = OWNERS.remove(sk);
        } else if new == i32::from(TCP_ESTABLISHED) && emits(kind::STATE) {
            // Every connection gets its cookie now, whether or not a change
            // of it is reported: its timewait socket copies it
            // (`inet_twsk_alloc()`), which is how user space tells the full
            // socket's CLOSE that follows a `tw_enter` from any other.
            // SAFETY: `sk` is the tracepoint's BTF-typed socket argument.
            let _ = unsafe { bpf_get_socket_cookie(sk as *mut _) };
        }
        return Ok(());
    }
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    ev.ts_ns = now();
    ev.kind = kind::STATE;
    fill_sock(ev, sk)?;
    if ev.lport == 0 {
        // On close the bind bucket lets go (`skc_num` = 0) while the
        // connection still has its source port.
        ev.lport = u16::from_be(read(sk, off!(inet_sport))?);
    }
    // SAFETY: `sk` is the tracepoint's BTF-typed socket argument.
    ev.cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    ev.old_state = old as u8;
    ev.new_state = new as u8;
    attribute(ev, sk);
    if new == i32::from(TCP_CLOSE) {
        // TCP_CLOSE: the socket is done; its address may be reused for
        // another socket, which must not inherit this owner.
        let _ = OWNERS.remove(sk);
    }
    emit(ev);
    Ok(())
}

#[btf_tracepoint(function = "timer_start")]
pub fn timer_start(ctx: BtfTracePointContext) -> i32 {
    tw_timer(&ctx, kind::TW_ARM)
}

#[btf_tracepoint(function = "timer_cancel")]
pub fn timer_cancel(ctx: BtfTracePointContext) -> i32 {
    tw_timer(&ctx, kind::TW_CANCEL)
}

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: BtfTracePointContext) -> i32 {
    tw_timer(&ctx, kind::TW_EXPIRE)
}

#[inline(always)]
fn tw_timer(ctx: &BtfTracePointContext, k: u8) -> i32 {
    let timer: u64 = ctx.arg(0);
    // Every timer of the system passes here (about 13 starts and cancels
    // per TCP connection): compare the callback first, with a direct load.
    // SAFETY: `timer` is the tracepoint's BTF-typed `struct timer_list *`
    // and the offset that of its `function` in this kernel's BTF: the
    // verifier checks the load (a faulting one reads 0), no helper call.
    let at = timer + u64::from(off!(timer_function));
    let function: u64 = unsafe { core::ptr::read_volatile(at as *const u64) };
    if function == 0 || function != off!(tw_timer_handler) {
        return 0;
    }
    let tw = timer - u64::from(off!(tw_timer));
    if !emits(k) {
        count_tw(tw, k, None);
        return 0;
    }
    let reported = if quiet_success() {
        tw_entry::step(tw, k, None)
    } else {
        report_tw(tw, k)
    };
    if let Err(e) = reported {
        count(e.slot);
    }
    0
}

/// One event of the timewait socket `tw`: its 4-tuple, flags, substate and
/// timer expiry (jiffies).
#[inline(always)]
pub fn report_tw(tw: u64, k: u8) -> Result<(), Miss> {
    let mut slot = MaybeUninit::uninit();
    let ev = fill_tw(&mut slot, tw, k)?;
    finish_tw(ev, k);
    Ok(())
}

/// The event of step `k` of the timewait socket `tw`, built in `slot`.
#[inline(always)]
pub fn fill_tw(slot: &mut MaybeUninit<Event>, tw: u64, k: u8) -> Result<&mut Event, Miss> {
    let ev = blank_event(slot);
    ev.ts_ns = now();
    ev.kind = k;
    ev.sock = tw;
    ev.proto = IPPROTO_TCP;
    fill_common(ev, tw)?;
    ev.new_state = read(tw, off!(tw_substate))?;
    ev.aux = read(tw + u64::from(off!(tw_timer)), off!(timer_expires))
        .map_err(Miss::at(counter::READ_TIMER))?;
    ev.uid = u32::MAX;
    Ok(ev)
}

/// Flags what only the moment tells (a detach inside connect()) and
/// emits the event.
#[inline(always)]
pub fn finish_tw(ev: &mut Event, k: u8) {
    if k == kind::TW_CANCEL && in_connect() {
        ev.flags |= flag::IN_CONNECT;
    }
    emit(ev);
}
