//! The per-CPU counters of what went wrong or was dropped ([`count`]), and
//! the two atomic instructions every shared word is changed with.
//!
//! Nothing a program fails at is silent: a failed read, a full map, a busy
//! scratch slot or a full ring buffer each bump a slot of
//! [`COUNTERS`], which user space sums over the CPUs and shows. The atomics
//! are written as BPF instructions because the BPF target has no
//! `AtomicU64::fetch_add` (it declares no compare-and-swap).

use crate::maps::COUNTERS;

/// Adds one to the [`counter`](inspector_common::counter) `slot` of this
/// CPU.
///
/// Atomically: a program can be interrupted on its CPU by another that
/// bumps the same slot (a softirq's `inet_sock_set_state` or
/// `sk_data_ready` over a process-context `sys_exit`, a hardirq's
/// `timer_start` over either), and a plain `*p += 1` would then lose the
/// inner count when the outer store lands.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        atomic_add(p, 1);
    }
}

/// `*p += v` in one instruction (`BPF_ATOMIC | BPF_ADD`, the old XADD, which
/// every verifier accepts on map values). Rust's `AtomicU64::fetch_add`
/// does not exist for the BPF target (it declares no compare-and-swap), so
/// the instruction is written out.
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `p` is a valid, aligned pointer to a u64 in a map value; the
    // instruction only adds to it.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v, options(nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: host builds (clippy) only: `p` points to a live, aligned u64
    // that only atomics touch.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Swaps `v` into `*p` and returns what was there, in one instruction
/// (`BPF_ATOMIC | BPF_XCHG`, Linux 5.12+).
#[inline(always)]
pub fn atomic_swap(p: *mut u64, v: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = v;
        // SAFETY: `p` is a valid, aligned pointer to a u64 in a map value.
        unsafe {
            core::arch::asm!("{v} = xchg_64({p} + 0, {v})", p = in(reg) p, v = inout(reg) v, options(nostack));
        }
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: host builds (clippy) only: `p` points to a live, aligned u64
    // that only atomics touch.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p).swap(v, core::sync::atomic::Ordering::Acquire)
    }
}
