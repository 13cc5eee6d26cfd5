//! TIME_WAIT counted in the kernel where it is not emitted
//! ([`CONFIG`](crate::maps::CONFIG) without the TIME_WAIT kinds: `serve`).
//!
//! The timer hooks see a timewait socket's steps one at a time (see
//! [`tw_count`]): an arm, a detach, an expiry. Which detach was an exit
//! is only known from what follows it, and what follows a re-arm's or an
//! expiry's detach comes on the same CPU within the same kernel call
//! (`__mod_timer()` detaches then enqueues; `expire_timers()` detaches
//! then runs the callback). So each CPU remembers its last detach in
//! [`TW_PENDING`] (the socket's address, and whether it came inside a
//! connect()), and the arm or expiry that matches it is counted as its
//! follow-up. Every step is one per-CPU counter bump: no event, no hash
//! map, no read of the socket (but its namespace where user space asked
//! for one).
//!
//! Timewait timers are armed, detached and run in softirq or with bottom
//! halves disabled, so a CPU's steps do not interleave: a detach and its
//! follow-up are never split by another timewait socket's step.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use inspector_common::tw_count;

use crate::{
    counters::atomic_add,
    maps::{Pending, TW_COUNTS, TW_PENDING, off},
    owners::in_connect,
    read::netns_of,
};

/// How soon after a timewait timer's detach an arm of the same socket on
/// the same CPU is its re-arm: `__mod_timer()` enqueues right after it
/// detaches, with interrupts off; well under a microsecond on hardware,
/// tens of microseconds on an emulated CPU. (An expiry needs no bound:
/// `expire_timers()` detaches the timer just before running it, on the
/// same CPU, however long an interrupt or a stolen vCPU makes that.)
/// Anything later is
/// another story: a killed socket's memory may hold a new timewait socket,
/// for the same 4-tuple even (a SYN or a connect() took the old one over,
/// and the new connection closed). A new one within this bound on the same
/// CPU counts as a re-arm: neither the kill nor the new entry is counted,
/// so entries less exits still match the sockets waiting.
const REARM_WITHIN_NS: u64 = 1_000_000;

/// Which step of the timewait socket `tw` a hook saw. `rearm` is what the
/// hook knows of an arm: `Some(true)` for `__inet_twsk_schedule(.., rearm
/// = true)` (fentry mode), `None` where the arm alone does not tell (the
/// `timer_start` tracepoint).
#[inline(always)]
pub fn count_tw(tw: u64, k: u8, rearm: Option<bool>) {
    let want = off!(filter_netns);
    if want != 0 && netns_of(tw).ok() != Some(want) {
        return;
    }
    let Some(pending) = TW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; see the module comment for why no other
    // step of a timewait socket runs on this CPU meanwhile.
    let last = unsafe { *pending };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The detach this step follows, if it is this socket's. An expiry's
    // own detach comes just before it on this CPU (`expire_timers()`),
    // whatever an interrupt delays in between: the address says it. An
    // arm's is recent too (REARM_WITHIN_NS), for a killed socket's memory
    // may hold a new timewait socket that is armed later.
    let same = last.tw != 0 && last.tw == tw;
    let recent = now.wrapping_sub(last.at_ns) < REARM_WITHIN_NS;
    let pending_in_connect = last.in_connect != 0;
    let slot = match k {
        inspector_common::kind::TW_CANCEL => {
            let now_in_connect = in_connect();
            // SAFETY: as above.
            unsafe {
                *pending = Pending {
                    tw,
                    in_connect: u64::from(now_in_connect),
                    at_ns: now,
                    addrs: 0,
                    ports: 0,
                }
            };
            if now_in_connect {
                tw_count::DETACHED_IN_CONNECT
            } else {
                tw_count::DETACHED
            }
        }
        inspector_common::kind::TW_ARM => {
            if same && recent {
                // SAFETY: as above.
                unsafe { (*pending).tw = 0 };
                if pending_in_connect {
                    tw_count::REARMED_IN_CONNECT
                } else {
                    tw_count::REARMED
                }
            } else if rearm == Some(true) {
                // A re-arm of a timer no longer pending: no step at all.
                return;
            } else {
                tw_count::ENTERED
            }
        }
        _ => {
            if same {
                // SAFETY: as above.
                unsafe { (*pending).tw = 0 };
                if pending_in_connect {
                    tw_count::EXPIRED_IN_CONNECT
                } else {
                    tw_count::EXPIRED
                }
            } else {
                tw_count::EXPIRED_UNMATCHED
            }
        }
    };
    if let Some(p) = TW_COUNTS.get_ptr_mut(slot) {
        atomic_add(p, 1);
    }
}
