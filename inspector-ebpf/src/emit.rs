//! Where a finished event goes: to the ring buffer ([`emit`]), or into a
//! count in a map where user space asked for counts ([`CONFIG`]), and when
//! the reader is woken.
//!
//! A host that makes thousands of connections a second must not pay an
//! event and a wakeup for each: `serve` asks for successful calls and
//! SO_REUSEPORT deliveries to be counted in [`OUTCOMES`] and
//! [`DELIVERIES`] and for state changes other than a listener's to stay in
//! the kernel, while failures and listener transitions go out all the
//! same. Hooks ask [`emits`] before reading anything, so a counted call
//! costs no helper call it does not need.

use inspector_common::{
    AcceptCount, AcceptKey, Delivery, Event, IPPROTO_UDP, Outcome, counter, flag, kind,
    listener_change, phase,
};

use crate::{
    counters::{atomic_add, count},
    maps::{ACCEPTS, BPF_NOEXIST, CONFIG, DELIVERIES, EVENTS, OUTCOMES, off},
    read::{is_inet, netns_of, read},
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Unread bytes at which a commit wakes the reader: 256 events, well under
/// the ring's 4 MiB so a burst is read long before it could overflow.
const WAKEUP_BYTES: u64 = 256 * core::mem::size_of::<Event>() as u64;

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

/// Whether a successful connect() or accept() only leaves its owner behind
/// ([`Config::quiet_success`](inspector_common::Config)), and timewait
/// entries name their connection's owner (`tw_entry`).
#[inline(always)]
pub fn quiet_success() -> bool {
    // SAFETY: as in `emits`.
    unsafe { core::ptr::read_volatile(&CONFIG.quiet_success) != 0 }
}

/// Whether a TCP state change into `new` is emitted, where state changes
/// are ([`Config::state_mask`](inspector_common::Config)).
#[inline(always)]
pub fn emits_state(new: i32) -> bool {
    // SAFETY: as in `emits`.
    let mask = unsafe { core::ptr::read_volatile(&CONFIG.state_mask) };
    (0..32).contains(&new) && mask & (1 << new) != 0
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

/// One more connection the current process accepted from `listener`; the
/// first one reads the listener's namespace and port, and skips a
/// listener the inspector does not follow (not TCP over IPv4/IPv6).
#[inline(always)]
pub fn count_accept_from(listener: u64) {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let key = AcceptKey {
        listener,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    if let Some(v) = ACCEPTS.get_ptr_mut(key) {
        // SAFETY: a map value pointer; only its count word is touched.
        atomic_add(unsafe { &raw mut (*v).count }, 1);
        return;
    }
    if !matches!(is_inet(listener), Ok(true)) {
        return;
    }
    let (Ok(netns), Ok(lport)) = (netns_of(listener), read::<u16>(listener, off!(skc_num))) else {
        count(counter::READ_SOCK);
        return;
    };
    let first = AcceptCount {
        count: 1,
        netns,
        lport,
        _pad: 0,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if ACCEPTS.insert(key, first, BPF_NOEXIST).is_err()
        && let Some(v) = ACCEPTS.get_ptr_mut(key)
    {
        // Another CPU created it in between.
        // SAFETY: as above.
        atomic_add(unsafe { &raw mut (*v).count }, 1);
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
        // Where calls are quiet the state hook builds only the changes that
        // go out: a listener's, and a connection taking over a timewait
        // socket's 4-tuple (`tw_entry::takes_over`).
        kind::STATE => !quiet_success() && !listener_change(ev.old_state, ev.new_state),
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
