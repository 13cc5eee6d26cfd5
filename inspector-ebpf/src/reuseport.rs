//! Which member of a SO_REUSEPORT group the kernel picked.
//!
//! Where fexit on `reuseport_select_sock` is refused, the outcome is visible
//! when the chosen socket is woken: `sock:sk_data_ready` fires on the listener
//! a connection was queued to, and on the UDP socket a datagram was queued
//! to. Only members of a group (`sk->sk_reuseport_cb` set) are reported.

use core::mem::MaybeUninit;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use inspector_common::{AF_INET6, Event, IPPROTO_TCP, IPPROTO_UDP, TCP_LISTEN, counter, kind};

use crate::{
    counters::count,
    emit::{add_delivery, emit, emits},
    fill::{blank_event, fill_sock, now},
    maps::off,
    owners::attribute,
    read::{Miss, read},
};

#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    match try_data_ready(&ctx) {
        Ok(()) => 0,
        Err(e) => {
            count(e.slot);
            // Rare by design: a kernel read failed. Counted by kind, and the
            // reason goes to the user-space log.
            aya_log_ebpf::warn!(
                &ctx,
                "sk_data_ready: kernel read failed (counter {}), error {}",
                e.slot,
                e.code
            );
            0
        }
    }
}

fn try_data_ready(ctx: &BtfTracePointContext) -> Result<(), Miss> {
    let sk: u64 = ctx.arg(0);
    // Counted, not emitted: a member seen before only needs its count
    // bumped (see `maps::CONFIG`); every other socket woken goes on
    // to the group check.
    if !emits(kind::REUSEPORT) && add_delivery(sk) {
        return Ok(());
    }
    let group: u64 = read(sk, off!(sk_reuseport_cb))?;
    if group == 0 {
        return Ok(());
    }
    let proto: u16 = read(sk, off!(sk_protocol))?;
    let mut slot = MaybeUninit::uninit();
    let ev = blank_event(&mut slot);
    if proto == u16::from(IPPROTO_TCP) {
        let state: u8 = read(sk, off!(skc_state))?;
        if state != TCP_LISTEN {
            return Ok(());
        }
        fill_sock(ev, sk)?;
        // inet_csk_reqsk_queue_add() appended the request just before
        // waking the listener; a request_sock starts with a sock_common.
        let req: u64 = read(sk, off!(icsk_accept_tail))?;
        if req != 0 {
            read_peer(ev, req)?;
        }
    } else if proto == u16::from(IPPROTO_UDP) {
        fill_sock(ev, sk)?;
        // __udp_enqueue_schedule_skb() queued the datagram at the tail.
        let tail: u64 = read(sk, off!(sk_receive_queue_prev))?;
        let head_of_list = sk + u64::from(off!(sk_receive_queue_prev)) - 8;
        if tail != 0 && tail != head_of_list {
            read_packet_source(ev, tail)?;
        }
    } else {
        return Ok(());
    }
    ev.ts_ns = now();
    ev.kind = kind::REUSEPORT;
    ev.aux = group;
    attribute(ev, sk);
    emit(ev);
    Ok(())
}

#[inline(always)]
fn read_peer(ev: &mut Event, req: u64) -> Result<(), Miss> {
    ev.rport = u16::from_be(read(req, off!(skc_dport))?);
    if ev.family == AF_INET6 {
        ev.raddr = read(req, off!(skc_v6_daddr))?;
    } else {
        let r: [u8; 4] = read(req, off!(skc_daddr))?;
        ev.raddr[..4].copy_from_slice(&r);
    }
    Ok(())
}

/// The sender of the packet in `skb` (IPv4 or IPv6; TCP and UDP both
/// start their header with the source port).
#[inline(always)]
pub fn read_packet_source(ev: &mut Event, skb: u64) -> Result<(), Miss> {
    read_source(ev, skb).map_err(Miss::at(counter::READ_PACKET))
}

#[inline(always)]
fn read_source(ev: &mut Event, skb: u64) -> Result<(), i64> {
    let head: u64 = read(skb, off!(skb_head))?;
    let nh: u16 = read(skb, off!(skb_network_header))?;
    let th: u16 = read(skb, off!(skb_transport_header))?;
    let ip = head + u64::from(nh);
    let version: u8 = read(ip, 0)?;
    if version >> 4 == 4 {
        let s: [u8; 4] = read(ip, 12)?;
        if ev.family == AF_INET6 {
            // IPv4 datagram on a dual-stack socket: show it v4-mapped.
            ev.raddr = [0; 16];
            ev.raddr[10] = 0xff;
            ev.raddr[11] = 0xff;
            ev.raddr[12..].copy_from_slice(&s);
        } else {
            ev.raddr[..4].copy_from_slice(&s);
        }
    } else if version >> 4 == 6 {
        ev.raddr = read(ip, 8)?;
    }
    let sport: u16 = read(head + u64::from(th), 0)?;
    ev.rport = u16::from_be(sport);
    Ok(())
}
