//! Who an event belongs to: the task in its own system call
//! ([`current_owner`]), or the owner remembered for the socket
//! ([`remember_owner`], [`attribute`]); and the system call each thread is
//! in between its entry and exit ([`begin_call`]).
//!
//! State changes, deliveries and TIME_WAIT timers run in softirq or timer
//! context, where the current task is whoever the CPU interrupted. So the
//! task that bound, listened on, connected or accepted a socket is
//! remembered in [`OWNERS`] while it is known, and later events on the
//! socket are attributed from there, never to the current task.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::bpf_get_current_comm,
};
use inspector_common::{Event, Owner, counter, flag};

use crate::{
    counters::count,
    maps::{INFLIGHT, Inflight, OWNERS, off},
};

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

/// Whether the current thread is inside connect() ([`INFLIGHT`]): a
/// timewait socket detached there is its 4-tuple taken over by the new
/// connection (`__inet_check_established()`), unless an arm or expiry
/// follows the detach.
#[inline(always)]
pub fn in_connect() -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out at once.
    unsafe { INFLIGHT.get(tid) }.is_some_and(|i| i.nr == off!(nr_connect))
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
/// socket's own cgroup, read by [`fill_sock`](crate::fill::fill_sock),
/// stays: it names the socket's cgroup in softirq and timer context, where
/// the current task's would name whoever the CPU interrupted; the owner's
/// fills in only when it is unknown.
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
