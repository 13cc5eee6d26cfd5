//! Fresh network namespaces for scenarios and tests.
//!
//! A namespace belongs to the thread that unshared it, so each one lives on a
//! dedicated thread; sockets created there stay in it. When the thread ends
//! and its sockets are closed the kernel tears the namespace down: nothing is
//! left behind.

use std::{fs, io, thread};

/// Runs `f` on a new thread inside a fresh network namespace whose `lo` is
/// up. `f` receives the namespace inode (as in events' `netns`).
pub fn in_new_netns<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(u32) -> T + Send + 'static,
{
    let handle = thread::Builder::new()
        .name("inspector-netns".into())
        .spawn(move || {
            enter_new_netns()?;
            let ino = crate::probe::current_netns()?;
            Ok::<T, io::Error>(f(ino))
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Moves the calling thread into a new network namespace and brings `lo` up.
pub fn enter_new_netns() -> io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; it affects only
    // the calling thread's namespace membership.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("creating a network namespace (unshare CLONE_NEWNET) needs root: {err}"),
        ));
    }
    loopback_up()
}

fn loopback_up() -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: valid socket fd and a properly initialised ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a sysctl of the calling thread's network namespace, e.g.
/// `set_sysctl("net/ipv4/tcp_tw_reuse", "0")`.
pub fn set_sysctl(name: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{name}");
    fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("setting {path} to {value}: {e}")))
}

/// Reads a sysctl of the calling thread's network namespace.
pub fn sysctl(name: &str) -> io::Result<String> {
    Ok(fs::read_to_string(format!("/proc/sys/{name}"))?
        .trim()
        .to_owned())
}
