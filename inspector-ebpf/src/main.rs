//! Kernel programs of the inspector.
//!
//! Two sets of programs, one per mode, loaded by user space:
//! - tracepoint mode: tracepoints only, which need neither kprobes nor
//!   fentry (both refused on locked-down kernels); decisions are seen at the
//!   syscall boundary (the per-syscall `syscalls:*` tracepoints of the
//!   calls decoded, which need tracefs; else `tp_btf` on every syscall) and
//!   TIME_WAIT on the timewait socket's timer.
//! - fentry mode: fentry/fexit on the functions that decide
//!   (`inet_csk_get_port`, `udp_lib_get_port`, `reuseport_select_sock`, the
//!   timewait functions), cheaper and more precise where the kernel allows.
//!
//! Both emit the same events; the state tracepoint serves both. Struct layouts are not compiled in: user space reads the running kernel's
//! BTF and fills [`OFFSETS`] before loading, so one object runs on any BTF
//! kernel.
//!
//! One concern per file: `bind` (bind/listen/connect/accept decisions seen at
//! the syscall boundary), `state` (TCP state changes and the TIME_WAIT
//! lifecycle), `reuseport` (which member of a SO_REUSEPORT group got a
//! connection or datagram), and their fentry-mode counterparts
//! `fentry_bind`, `fentry_timewait`, `fentry_reuseport`; and `iter`, the
//! socket-table iterators user space runs on demand.
//!
//! What the programs share, one job per file: `maps` (every map and the
//! globals user space fills, with their bounds), `read` (kernel and user
//! memory at BTF offsets), `owners` (who an event belongs to), `fill`
//! (building an event from a socket), `emit` (ring buffer or count),
//! `tw_count` (TIME_WAIT counted where it is not emitted), `tw_entry`
//! (timewait entries named after their owner where calls are quiet) and
//! `counters` (what went wrong, counted per CPU).
#![no_std]
#![no_main]
// The atomic add and swap of `counters` are written as BPF instructions:
// the BPF target has no `AtomicU64::fetch_add` (it declares no
// compare-and-swap). Host builds (clippy) use the std atomics instead.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

// Programs, one concern each.
mod bind;
mod fentry_bind;
mod fentry_reuseport;
mod fentry_timewait;
mod iter;
mod reuseport;
mod state;

// What they share, one job each.
mod counters;
mod emit;
mod fill;
mod maps;
mod owners;
mod read;
mod tw_count;
mod tw_entry;

// Only the BPF build defines the handler: a host `cargo clippy --workspace`
// links std through the user-space side of shared dependencies.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
