//! Building an event: a zeroed one in place ([`blank_event`]), its time
//! ([`now`]), and what a socket says about itself ([`fill_common`],
//! [`fill_sock`]).
//!
//! These run for every connection the host makes, so they are written for
//! instruction count: the event is zeroed a word at a time rather than by
//! the `memset` builtin, and the fields of `struct sock_common` come from
//! one copy of its head into a per-CPU scratch slot ([`Head`]) rather than a
//! helper call each.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf};
use inspector_common::{AF_INET, AF_INET6, Event, counter, flag};

use crate::{
    counters::atomic_swap,
    maps::{HEAD, SCRATCH, SCRATCH_SLOTS, Scratch, off},
    read::{Miss, read, sock_cgroup},
};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Zeroes `slot` a word at a time and hands it out as an [`Event`], in
/// place. `Event::zeroed()` is one 152-byte memset, which this target
/// turns into a call of the `memset` builtin: a loop of single-byte
/// stores, about 600 instructions for every event emitted. Volatile stores
/// are never merged back into a memset, and the event is built where they
/// went: an event returned by value was copied, and the copy of known
/// zeroes became a memset again.
#[inline(always)]
pub fn blank_event(slot: &mut MaybeUninit<Event>) -> &mut Event {
    const WORDS: usize = core::mem::size_of::<Event>() / 8;
    const _: () = assert!(core::mem::size_of::<Event>().is_multiple_of(8));
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: in bounds of `slot` (WORDS whole words) and aligned:
        // Event has u64 fields, so its alignment is 8.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte was written; all-zero is a valid Event (integers
    // and byte arrays only).
    unsafe { slot.assume_init_mut() }
}

/// `struct sock_common`'s first [`HEAD`] bytes, read once into a claimed
/// scratch slot ([`SCRATCH`]), which is released on drop.
pub struct Head {
    base: u64,
    slot: *mut Scratch,
}

impl Head {
    #[inline(always)]
    fn read(base: u64) -> Result<Self, Miss> {
        let slot = claim_scratch().ok_or(Miss {
            slot: counter::SCRATCH_BUSY,
            code: -16, // EBUSY
        })?;
        // From here on `Drop` gives the slot back, on every path.
        let head = Self { base, slot };
        // SAFETY: the slot is this program's until `head` is dropped (its
        // `busy` word was swapped from 0 to 1 by us); the helper checks the
        // source address and writes at most `HEAD` bytes.
        unsafe { bpf_probe_read_kernel_buf(base as *const u8, &mut (*slot).bytes) }
            .map_err(|e| Miss::from(e as i64))?;
        Ok(head)
    }

    /// The field at `offset`, from the copy, or read on its own.
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let at = offset as usize;
        if at + core::mem::size_of::<T>() <= HEAD {
            // SAFETY: in bounds of the copy in our claimed slot; any bit
            // pattern is a valid T for the integer and byte-array types
            // read here.
            Ok(unsafe {
                core::ptr::read_unaligned((*self.slot).bytes.as_ptr().add(at).cast::<T>())
            })
        } else {
            read(self.base, offset)
        }
    }

    #[inline(always)]
    fn bit(&self, bit: u32, width: u32) -> Result<u8, i64> {
        let byte: u8 = self.get(bit / 8)?;
        Ok(((u16::from(byte) >> (bit % 8)) & ((1u16 << width) - 1)) as u8)
    }
}

impl Drop for Head {
    #[inline(always)]
    fn drop(&mut self) {
        // Every read of the copy happens before the slot is given back.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: our claimed slot; a plain store releases it (same CPU:
        // whoever claims it next runs after this instruction).
        unsafe { core::ptr::write_volatile(&raw mut (*self.slot).busy, 0) };
    }
}

/// The first free scratch slot of this CPU, now ours.
#[inline(always)]
fn claim_scratch() -> Option<*mut Scratch> {
    for i in 0..SCRATCH_SLOTS {
        if let Some(slot) = SCRATCH.get_ptr_mut(i) {
            // SAFETY: a map value pointer; only its `busy` word is touched.
            let busy = unsafe { &raw mut (*slot).busy };
            if atomic_swap(busy, 1) == 0 {
                return Some(slot);
            }
        }
    }
    None
}

/// Fills the `struct sock_common` part: family, ports, addresses, flags,
/// bound device and network namespace. Valid for full sockets, request
/// sockets and timewait sockets alike. One helper call reads the fields;
/// these hooks run for every connection, so every call counts.
#[inline(always)]
pub fn fill_common(ev: &mut Event, skc: u64) -> Result<(), Miss> {
    let h = Head::read(skc)?;
    let family: u16 = h.get(off!(skc_family))?;
    ev.family = family as u8;
    ev.lport = h.get(off!(skc_num))?;
    ev.rport = u16::from_be(h.get(off!(skc_dport))?);
    if ev.family == AF_INET6 {
        ev.laddr = h.get(off!(skc_v6_rcv_saddr))?;
        ev.raddr = h.get(off!(skc_v6_daddr))?;
    } else if ev.family == AF_INET {
        let l: [u8; 4] = h.get(off!(skc_rcv_saddr))?;
        let r: [u8; 4] = h.get(off!(skc_daddr))?;
        ev.laddr[..4].copy_from_slice(&l);
        ev.raddr[..4].copy_from_slice(&r);
    }
    if h.bit(off!(skc_reuse_bit), off!(skc_reuse_width))? != 0 {
        ev.flags |= flag::REUSEADDR;
    }
    if h.bit(off!(skc_reuseport_bit), 1)? != 0 {
        ev.flags |= flag::REUSEPORT;
    }
    if h.bit(off!(skc_ipv6only_bit), 1)? != 0 {
        ev.flags |= flag::V6ONLY;
    }
    ev.bound_dev_if = h.get(off!(skc_bound_dev_if))?;
    ev.cookie = h.get(off!(skc_cookie))?;
    let net: u64 = h.get(off!(skc_net))?;
    ev.netns = read(net, off!(net_inum))?;
    Ok(())
}

/// Fills everything a full `struct sock` offers on top of [`fill_common`]:
/// protocol, owner uid, cookie (if generated), the socket inode and its
/// cgroup ([`sock_cgroup`]).
#[inline(always)]
pub fn fill_sock(ev: &mut Event, sk: u64) -> Result<(), Miss> {
    fill_sock_in_call(ev, sk)?;
    ev.cgroup = sock_cgroup(sk)?;
    Ok(())
}

/// [`fill_sock`] for an event of the caller's own syscall, which
/// [`set_owner`](crate::owners::set_owner) gives the caller's cgroup: the
/// socket's is not read (three kernel reads less on every connect and
/// accept).
#[inline(always)]
pub fn fill_sock_in_call(ev: &mut Event, sk: u64) -> Result<(), Miss> {
    fill_common(ev, sk)?;
    ev.sock = sk;
    let proto: u16 = read(sk, off!(sk_protocol))?;
    ev.proto = proto as u8;
    ev.uid = read(sk, off!(sk_uid))?;
    let socket: u64 = read(sk, off!(sk_socket))?;
    if socket != 0 {
        ev.ino = read(
            socket + u64::from(off!(socket_alloc_inode)),
            off!(inode_ino),
        )?;
    }
    Ok(())
}
