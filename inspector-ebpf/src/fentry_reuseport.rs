//! Which member of a SO_REUSEPORT group the kernel picked (fentry mode).
//!
//! `reuseport_select_sock(sk, hash, skb, hdr_len)` makes the choice for
//! TCP listener lookups (each SYN) and UDP lookups (each datagram): by
//! `reciprocal_scale(hash, n)`, or by an attached SK_REUSEPORT / classic
//! BPF program. fexit sees the socket it returned and the packet.

use core::mem::MaybeUninit;

use aya_ebpf::{macros::fexit, programs::FExitContext};
use inspector_common::kind;

use crate::{
    counters::count,
    emit::{add_delivery, emit, emits},
    fill::{blank_event, fill_sock, now},
    maps::off,
    owners::attribute,
    read::{Miss, read},
    reuseport::read_packet_source,
};

#[fexit(function = "reuseport_select_sock")]
pub fn fexit_reuseport_select_sock(ctx: FExitContext) -> i32 {
    let chosen: u64 = ctx.ret().unwrap_or(0);
    if chosen == 0 {
        return 0; // no group, or an empty one: the caller keeps its socket
    }
    // Counted, not emitted: a member seen before only needs its count
    // bumped (see `maps::CONFIG`).
    if !emits(kind::REUSEPORT) && add_delivery(chosen) {
        return 0;
    }
    let skb: u64 = ctx.arg(2);
    if let Err(e) = report(chosen, skb) {
        count(e.slot);
    }
    0
}

fn report(sk: u64, skb: u64) -> Result<(), Miss> {
    let group: u64 = read(sk, off!(sk_reuseport_cb))?;
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    fill_sock(ev, sk)?;
    // Lookups without a packet (socket lookup helpers) have no sender.
    if skb != 0 {
        read_packet_source(ev, skb)?;
    }
    ev.ts_ns = now();
    ev.kind = kind::REUSEPORT;
    ev.aux = group;
    attribute(ev, sk);
    emit(ev);
    Ok(())
}
