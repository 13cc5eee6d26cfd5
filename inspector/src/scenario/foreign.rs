//! A socket held by another user: a forked child that drops to
//! uid/gid 65534 (nobody), binds (and optionally listens), reports the errno
//! and holds the socket until the parent lets go ([`crate::kernel::sys::fork_as`]).
//!
//! The child inherits the forking thread's network namespace.

use std::{io, net::SocketAddr};

use super::ctx::Proto;
use crate::kernel::sys::{self, BindSpec, Forked};

pub const NOBODY: u32 = 65534;

/// The child process; dropping it ends the child and reaps it.
#[derive(Debug)]
pub struct Foreign {
    pub pid: u32,
    /// Errno of the child's bind (or listen), `None` on success.
    pub errno: Option<i32>,
    child: Forked,
}

/// Socket options of the child's socket, beyond [`bind_as_nobody`]'s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub listen: bool,
    /// On release, count the datagrams queued on the socket and report
    /// them ([`Foreign::release_and_count`]).
    pub count: bool,
}

/// Forks a child that, as uid/gid 65534, binds a socket to `addr` with
/// SO_REUSEPORT when `reuseport`, and listens when `listen` (TCP).
pub fn bind_as_nobody(
    proto: Proto,
    addr: SocketAddr,
    reuseport: bool,
    listen: bool,
) -> io::Result<Foreign> {
    bind_as_nobody_with(
        proto,
        addr,
        Options {
            reuseport,
            listen,
            ..Options::default()
        },
    )
}

/// [`bind_as_nobody`] with every option.
pub fn bind_as_nobody_with(proto: Proto, addr: SocketAddr, opts: Options) -> io::Result<Foreign> {
    let spec = BindSpec {
        addr,
        stream: proto == Proto::Tcp,
        reuseaddr: opts.reuseaddr,
        reuseport: opts.reuseport,
        v6only: None,
        listen: opts.listen.then_some(16),
        count_on_release: opts.count,
        connect: None,
        comm: None,
    };
    let child = sys::fork_as(NOBODY, &spec, true)?;
    Ok(Foreign {
        pid: child.pid,
        errno: child.report.first_error(),
        child,
    })
}

impl Foreign {
    /// Lets a counting child go and returns how many datagrams it had
    /// received.
    pub fn release_and_count(self) -> io::Result<u64> {
        self.child.release_and_count()
    }
}
