//! A socket held by another user: a forked child that drops to
//! uid/gid 65534 (nobody), binds (and optionally listens), reports the errno
//! and holds the socket until the parent lets go.
//!
//! The child inherits the forking thread's network namespace. Between
//! `fork` and `_exit` it only makes async-signal-safe system calls on
//! memory prepared before the fork.

use std::{io, net::SocketAddr};

use socket2::SockAddr;

use super::ctx::Proto;

pub const NOBODY: u32 = 65534;

/// The child process; dropping it ends the child and reaps it.
#[derive(Debug)]
pub struct Foreign {
    pub pid: u32,
    /// Errno of the child's bind (or listen), `None` on success.
    pub errno: Option<i32>,
    release: libc::c_int,
    /// Where a counting child reports its datagrams on release (-1: none).
    counted: libc::c_int,
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
    let sa: SockAddr = addr.into();
    let family = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let mut report = [0 as libc::c_int; 2];
    let mut release = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the arrays.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let err = io::Error::last_os_error();
        close(report[0]);
        close(report[1]);
        return Err(err);
    }
    // SAFETY: the child below only makes async-signal-safe calls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        for fd in report.iter().chain(&release) {
            close(*fd);
        }
        return Err(err);
    }
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls on memory prepared before fork;
        // the child never returns into Rust code of the parent.
        unsafe {
            // The parent's ends: a held write end would keep the child
            // waiting for ever.
            libc::close(report[0]);
            libc::close(release[1]);
            child(&sa, family, ty, opts, report[1], release[0])
        }
    }
    close(report[1]);
    close(release[0]);
    let mut errno: libc::c_int = 0;
    // SAFETY: reading an int from our pipe end into a local.
    let n = unsafe {
        libc::read(
            report[0],
            (&raw mut errno).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    let counted = if opts.count {
        report[0]
    } else {
        close(report[0]);
        -1
    };
    let foreign = Foreign {
        pid: pid as u32,
        errno: (errno != 0).then_some(errno),
        release: release[1],
        counted,
    };
    if n != std::mem::size_of::<libc::c_int>() as isize {
        return Err(io::Error::other(
            "the uid 65534 child died before reporting",
        ));
    }
    Ok(foreign)
}

/// The child: drop privileges, bind, report, wait to be released.
///
/// # Safety
/// Only to be called in a freshly forked child.
unsafe fn child(
    sa: &SockAddr,
    family: libc::c_int,
    ty: libc::c_int,
    opts: Options,
    report: libc::c_int,
    release: libc::c_int,
) -> ! {
    // SAFETY: all calls are async-signal-safe and use valid pointers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut err: libc::c_int = 0;
        // Raw system calls: they change only this (single-threaded)
        // process, with no libc bookkeeping across threads.
        let id = libc::c_long::from(NOBODY);
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
            || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
        {
            err = *libc::__errno_location();
        }
        let fd = if err == 0 {
            libc::socket(family, ty, 0)
        } else {
            -1
        };
        if err == 0 && fd < 0 {
            err = *libc::__errno_location();
        }
        for (on, opt) in [
            (opts.reuseport, libc::SO_REUSEPORT),
            (opts.reuseaddr, libc::SO_REUSEADDR),
        ] {
            if err == 0 && on {
                let one: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        if err == 0 && libc::bind(fd, sa.as_ptr().cast(), sa.len()) != 0 {
            err = *libc::__errno_location();
        }
        if err == 0 && opts.listen && libc::listen(fd, 16) != 0 {
            err = *libc::__errno_location();
        }
        libc::write(
            report,
            (&raw const err).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
        let mut byte = 0u8;
        // Blocks until the parent closes its end (or dies).
        libc::read(release, (&raw mut byte).cast(), 1);
        if opts.count {
            let mut n: libc::c_int = 0;
            let mut buf = [0u8; 64];
            while fd >= 0
                && libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) >= 0
            {
                n += 1;
            }
            libc::write(
                report,
                (&raw const n).cast(),
                std::mem::size_of::<libc::c_int>(),
            );
        }
        libc::_exit(0)
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor this module opened and still owns.
    unsafe { libc::close(fd) };
}

impl Foreign {
    /// Lets a counting child go and returns how many datagrams it had
    /// received.
    pub fn release_and_count(mut self) -> io::Result<u64> {
        close(self.release);
        self.release = -1;
        let mut n: libc::c_int = -1;
        // SAFETY: reading an int from our pipe end into a local.
        let got = unsafe {
            libc::read(
                self.counted,
                (&raw mut n).cast(),
                std::mem::size_of::<libc::c_int>(),
            )
        };
        if got != std::mem::size_of::<libc::c_int>() as isize || n < 0 {
            return Err(io::Error::other(
                "the uid 65534 child did not report a count",
            ));
        }
        Ok(n as u64)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        if self.release >= 0 {
            close(self.release);
        }
        if self.counted >= 0 {
            close(self.counted);
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
    }
}
