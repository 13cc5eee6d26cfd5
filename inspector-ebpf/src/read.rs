//! Reading kernel and user memory at the offsets user space found in the
//! running kernel's BTF ([`off!`](crate::maps::off)): one field
//! ([`read`]), a `struct sockaddr` ([`read_sockaddr`]), the socket behind a
//! file descriptor ([`sock_from_fd`]), a socket's cgroup and kind.
//!
//! Rust eBPF has no CO-RE relocations, so every field is read through a
//! helper at a base plus an offset, and every read can fail. A failure is a
//! [`Miss`]: the helper's error and the counter slot it is charged to, so
//! the program's entry point counts it once and returns.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user};
use inspector_common::{AF_INET, AF_INET6, Event, counter, flag};

use crate::{counters::count, maps::off};

/// Where a `struct sockaddr` lives: the caller's memory (syscall
/// arguments) or the kernel's copy of it (arguments of `inet_bind` and
/// friends).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Space {
    User,
    Kernel,
}

#[inline(always)]
fn read_in<T>(space: Space, addr: u64) -> Result<T, i64> {
    match space {
        Space::User => read_user(addr),
        Space::Kernel => read(addr, 0),
    }
}

/// Fills `req_port`/`req_addr` from a `struct sockaddr_in` /
/// `sockaddr_in6`: family, port (network order), then the address at
/// offset 4 (v4) or 8 (v6). An unreadable address (the call fails with
/// EFAULT: `move_addr_to_kernel`) is counted and flagged
/// [`flag::ADDR_UNREADABLE`]; the fields stay zero and mean nothing then.
#[inline(always)]
pub fn read_sockaddr(ev: &mut Event, uaddr: u64, space: Space) {
    if try_read_sockaddr(ev, uaddr, space).is_err() {
        ev.req_port = 0;
        ev.req_addr = [0; 16];
        ev.flags |= flag::ADDR_UNREADABLE;
        count(counter::READ_USER_ADDR);
    }
}

#[inline(always)]
fn try_read_sockaddr(ev: &mut Event, uaddr: u64, space: Space) -> Result<(), i64> {
    // `sa_family` and `sin_port`/`sin6_port` in one read.
    let head: [u8; 4] = read_in(space, uaddr)?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    ev.req_port = u16::from_be_bytes([head[2], head[3]]);
    if family == u16::from(AF_INET) {
        let a: [u8; 4] = read_in(space, uaddr + 4)?;
        ev.req_addr[..4].copy_from_slice(&a);
    } else if family == u16::from(AF_INET6) {
        ev.req_addr = read_in(space, uaddr + 8)?;
    }
    Ok(())
}

#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|e| e as i64)
}

#[inline(always)]
pub fn read_user<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error.
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|e| e as i64)
}

/// A failed kernel read or map update, and the [`counter`] slot it is
/// charged to. Reads through [`read`] are socket reads unless the caller
/// says otherwise with [`Miss::at`]: every program starts from a socket.
#[derive(Clone, Copy)]
pub struct Miss {
    pub slot: u32,
    /// The helper's answer (a negative errno).
    pub code: i64,
}

impl Miss {
    /// Charges a helper's error `code` to `slot` (for `map_err`).
    #[inline(always)]
    pub fn at(slot: u32) -> impl Fn(i64) -> Self {
        move |code| Self { slot, code }
    }
}

impl From<i64> for Miss {
    #[inline(always)]
    fn from(code: i64) -> Self {
        Self {
            slot: counter::READ_SOCK,
            code,
        }
    }
}

/// The cgroup v2 id of a full socket: `sk->sk_cgrp_data.cgroup->kn->id`,
/// set when the socket was created (`cgroup_sk_alloc`: the creating task's
/// cgroup, the root's for a socket made in interrupt context) or cloned
/// from its listener (`cgroup_sk_clone`). 0 when this kernel's layout has
/// no such pointer (see `Offsets::sk_cgroup`) or it is unset.
#[inline(always)]
pub fn sock_cgroup(sk: u64) -> Result<u64, Miss> {
    let at = off!(sk_cgroup);
    if at == 0 {
        return Ok(0);
    }
    let cgrp: u64 = read(sk, at)?;
    if cgrp == 0 {
        return Ok(0);
    }
    let kn: u64 = read(cgrp, off!(cgroup_kn))?;
    if kn == 0 {
        return Ok(0);
    }
    Ok(read(kn, off!(kn_id))?)
}

/// `current->files->fdt->fd[fd]->private_data->sk`, if `fd` is a socket of
/// the current task (`None`: not a socket, or no such descriptor; the
/// syscall fails with ENOTSOCK/EBADF by itself).
#[inline(always)]
pub fn sock_from_fd(fd: u64) -> Result<Option<u64>, Miss> {
    if fd > i32::MAX as u64 {
        return Ok(None);
    }
    let at = Miss::at(counter::READ_SYSCALL);
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, off!(task_files)).map_err(&at)?;
    let fdt: u64 = read(files, off!(files_fdt)).map_err(&at)?;
    let max: u32 = read(fdt, off!(fdt_max_fds)).map_err(&at)?;
    if fd >= u64::from(max) {
        return Ok(None);
    }
    let fds: u64 = read(fdt, off!(fdt_fd)).map_err(&at)?;
    let file: u64 = read(fds + fd * 8, 0).map_err(&at)?;
    if file == 0 {
        return Ok(None);
    }
    let socket: u64 = read(file, off!(file_private_data)).map_err(&at)?;
    if socket == 0 {
        return Ok(None);
    }
    // Only a socket's private_data points back at its file: this tells a
    // socket from any other kind of file without knowing `socket_file_ops`.
    // Reading `socket->file` of another kind of file reads whatever lies
    // there; a fault is then no error of ours.
    let Ok(back) = read::<u64>(socket, off!(socket_file)) else {
        return Ok(None);
    };
    if back != file {
        return Ok(None);
    }
    read(socket, off!(socket_sk)).map(Some).map_err(&at)
}

/// The network namespace inode of a socket, full or timewait (both start
/// with a `sock_common`).
#[inline(always)]
pub fn netns_of(sk: u64) -> Result<u32, i64> {
    let net: u64 = read(sk, off!(skc_net))?;
    read(net, off!(net_inum))
}

/// True for the sockets the inspector follows: TCP and UDP over IPv4/IPv6.
#[inline(always)]
pub fn is_inet(sk: u64) -> Result<bool, Miss> {
    let family: u16 = read(sk, off!(skc_family))?;
    if family != u16::from(AF_INET) && family != u16::from(AF_INET6) {
        return Ok(false);
    }
    let proto: u16 = read(sk, off!(sk_protocol))?;
    Ok(proto == u16::from(inspector_common::IPPROTO_TCP)
        || proto == u16::from(inspector_common::IPPROTO_UDP))
}
