//! TIME_WAIT emitted where successful calls are quiet
//! ([`Config::quiet_success`](inspector_common::Config), `trace` without
//! `--connections`): each timewait entry names its connection's owner, so
//! user space needs no connect() or accept() event to learn it.
//!
//! `tcp_time_wait()` arms the new timewait socket's timer
//! (`inet_twsk_hashdance_schedule()`, or `inet_twsk_schedule()` on older
//! kernels), then moves the full socket to CLOSE (`tcp_done()`), on the
//! same CPU within the same call, with bottom halves off. So the arm of a
//! new timewait socket is held in this CPU's [`TW_HELD`] slot and emitted
//! at that CLOSE ([`at_close`]), with the owner the kernel remembers for
//! the full socket ([`OWNERS`]) and [`flag::TW_ENTRY`]: the kernel, not
//! user space, tells an entry from a re-arm. A re-arm is an arm whose
//! detach came just before on this CPU ([`TW_PENDING`], as in
//! [`tw_count`](crate::tw_count)), or one fentry mode names as such; it
//! goes out at once, without the flag.
//!
//! Nothing waits: any other timewait step on this CPU, and any arm, first
//! sends a held entry out (without owner), so the order of one socket's
//! steps holds; so does a CLOSE of another socket, which would only come
//! first if a softirq interrupted `tcp_time_wait()` between its arm and its
//! CLOSE.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use inspector_common::{flag, kind};

use crate::{
    maps::{OWNERS, Pending, TW_HELD, TW_PENDING, off},
    owners::set_owner,
    read::{Miss, read},
    state::{fill_tw, finish_tw},
};

/// How soon after a timewait timer's detach an arm of the same socket on
/// the same CPU is its re-arm (see `tw_count::REARM_WITHIN_NS`).
const REARM_WITHIN_NS: u64 = 1_000_000;

/// The step `k` of the timewait socket `tw`, where successful calls are
/// quiet. `rearm`: what the hook knows of an arm (`Some` in fentry mode).
#[inline(always)]
pub fn step(tw: u64, k: u8, rearm: Option<bool>) -> Result<(), Miss> {
    let (Some(held), Some(pending)) = (TW_HELD.get_ptr_mut(0), TW_PENDING.get_ptr_mut(0)) else {
        return Ok(());
    };
    // SAFETY: this CPU's slots; timewait steps do not interleave on a CPU
    // (softirq or bottom halves off), see the module comment.
    let (held, pending) = unsafe { (&mut *held, &mut *pending) };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    release(held, None)?;
    match k {
        kind::TW_CANCEL => {
            // A detach with no follow-up may be a SYN's takeover: the
            // 4-tuple, for `takes_over`, which then compares without a read.
            *pending = Pending {
                tw,
                in_connect: 0,
                at_ns: now,
                addrs: read(tw, off!(skc_daddr)).unwrap_or(0),
                ports: u64::from(read::<u32>(tw, off!(skc_dport)).unwrap_or(0)),
            };
            report(tw, k, now, 0, None)
        }
        kind::TW_ARM => {
            let rearm = rearm.unwrap_or_else(|| {
                pending.tw != 0
                    && pending.tw == tw
                    && now.wrapping_sub(pending.at_ns) < REARM_WITHIN_NS
            });
            if pending.tw == tw {
                pending.tw = 0;
            }
            if rearm {
                return report(tw, k, now, 0, None);
            }
            *held = Pending {
                tw,
                in_connect: 0,
                at_ns: now,
                addrs: 0,
                ports: 0,
            };
            Ok(())
        }
        _ => {
            if pending.tw == tw {
                pending.tw = 0;
            }
            report(tw, k, now, 0, None)
        }
    }
}

/// A TCP socket `sk` moved to CLOSE: if it is the full socket whose
/// timewait socket this CPU holds, the entry goes out named after its
/// owner. `sk` is a BTF-typed pointer (the state tracepoint's argument).
#[inline(always)]
pub fn at_close(sk: u64) -> Result<(), Miss> {
    let Some(held) = TW_HELD.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot, see `step`.
    let held = unsafe { &mut *held };
    if held.tw == 0 {
        return Ok(());
    }
    // The full socket and its timewait socket share `struct sock_common`'s
    // layout: the remote port and both IPv4 addresses (for IPv6 the
    // placeholders the kernel keeps there) must match. The local port is
    // not compared: the full socket's `skc_num` is 0 by now.
    let (addrs_at, dport_at) = (
        sk + u64::from(off!(skc_daddr)),
        sk + u64::from(off!(skc_dport)),
    );
    // SAFETY: `sk` is BTF-typed and the offsets are in `struct sock_common`
    // in this kernel's BTF: verified direct loads, no helper call.
    let (addrs, dport) = unsafe {
        (
            core::ptr::read_volatile(addrs_at as *const u64),
            core::ptr::read_volatile(dport_at as *const u16),
        )
    };
    let tw_addrs: u64 = read(held.tw, off!(skc_daddr))?;
    let tw_dport: u16 = read(held.tw, off!(skc_dport))?;
    if addrs != tw_addrs || dport != tw_dport {
        return release(held, None);
    }
    release(held, Some(sk))
}

/// Whether the connection `sk`, just established (SYN_SENT or SYN_RECV ->
/// ESTABLISHED), has the 4-tuple of the timewait socket this CPU last
/// detached with no re-arm or expiry after it (read at the detach): the
/// new connection took that socket over. A SYN that arrived in TIME_WAIT
/// (`tcp_timewait_state_process()` -> `TCP_TW_SYN`) ended it and the
/// listener answered, or a connect() (or a Fast Open sendto()) found it in
/// `__inet_check_established()`; the handshake that establishes `sk` comes
/// on the CPU where the flow's packets do. The state change then goes out,
/// and user space reports the timewait socket reused rather than killed.
/// The detach is forgotten too: the new connection may close into a
/// timewait socket at the same address within `REARM_WITHIN_NS`, on this
/// CPU, whose arm is then an entry, not a re-arm. At a child's LISTEN ->
/// SYN_RECV (`inet_csk_clone_lock()`) its ports and addresses are still
/// the listener's, hence ESTABLISHED. `sk` is BTF-typed.
#[inline(always)]
pub fn takes_over(sk: u64) -> bool {
    let Some(pending) = TW_PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, see `step`.
    let pending = unsafe { &mut *pending };
    if pending.tw == 0 {
        return false;
    }
    // Both ports (`skc_dport`, `skc_num`) and both IPv4 addresses (for
    // IPv6 the placeholders the kernel keeps there).
    let (addrs_at, ports_at) = (
        sk + u64::from(off!(skc_daddr)),
        sk + u64::from(off!(skc_dport)),
    );
    // SAFETY: as in `at_close`.
    let (addrs, ports) = unsafe {
        (
            core::ptr::read_volatile(addrs_at as *const u64),
            core::ptr::read_volatile(ports_at as *const u32),
        )
    };
    let same = pending.addrs == addrs && pending.ports == u64::from(ports);
    if same {
        pending.tw = 0;
    }
    same
}

/// Sends the held entry out, if any, named after the owner of `sk`.
#[inline(always)]
fn release(held: &mut Pending, sk: Option<u64>) -> Result<(), Miss> {
    if held.tw == 0 {
        return Ok(());
    }
    let (tw, at) = (held.tw, held.at_ns);
    held.tw = 0;
    report(tw, kind::TW_ARM, at, flag::TW_ENTRY, sk)
}

/// One event of the timewait socket `tw`, at `at_ns`, named after the
/// owner remembered for `owner_of` where there is one.
#[inline(always)]
fn report(tw: u64, k: u8, at_ns: u64, flags: u8, owner_of: Option<u64>) -> Result<(), Miss> {
    let mut slot = core::mem::MaybeUninit::uninit();
    let ev = fill_tw(&mut slot, tw, k)?;
    ev.ts_ns = at_ns;
    ev.flags |= flags;
    if let Some(sk) = owner_of
        // SAFETY: the value is copied out before the map entry can change.
        && let Some(o) = unsafe { OWNERS.get(sk) }
    {
        let o = *o;
        set_owner(ev, &o);
        ev.uid = o.uid;
        ev.flags |= flag::OWNER_KNOWN;
    }
    finish_tw(ev, k);
    Ok(())
}
