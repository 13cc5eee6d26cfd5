//! The seam to raw system calls: `-1` becomes an [`io::Error`], every
//! descriptor is an [`OwnedFd`], and the one routine that forks a child to
//! bind as another user.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use socket2::SockAddr;

/// Return values of system calls that signal failure with `-1`.
pub trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

impl MinusOne for i32 {
    const MINUS_ONE: Self = -1;
}

impl MinusOne for i64 {
    const MINUS_ONE: Self = -1;
}

impl MinusOne for isize {
    const MINUS_ONE: Self = -1;
}

/// Turns a system call's `-1` into the `errno` it left behind.
pub fn cvt<T: MinusOne>(ret: T) -> io::Result<T> {
    if ret == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Calls `libc::$fn(args..)` and turns `-1` into [`io::Error::last_os_error`].
///
/// The call is `unsafe`: write the macro inside an `unsafe` block whose
/// `// SAFETY:` note says why the arguments are valid.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {
        $crate::kernel::sys::cvt(libc::$fn($($arg),*))
    };
}
pub(crate) use syscall;

/// Takes ownership of a descriptor a successful system call just returned.
///
/// # Safety
/// `fd` must be open and owned by nobody else.
pub unsafe fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the caller guarantees that `fd` is open and unowned.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    unsafe { syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)) }?;
    // SAFETY: pipe2 succeeded: both descriptors are new and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether `fd`'s other end has gone: a pipe whose reader closed polls
/// POLLERR on its write end (`pipe_poll()`), a hung-up terminal POLLHUP.
/// A regular file never reports either. Does not wait.
pub fn poll_error(fd: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks).
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields count from its closing ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ').skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let hz = clock_ticks()?;
    Some(std::time::Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / hz,
    ))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc`'s CPU times.
pub fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0)
}

/// What Prometheus's `process_*` metrics report, read from `/proc/self`
/// (the names and meanings of client_golang's process collector).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: u64,
    /// Since the epoch.
    pub start_time_seconds: f64,
}

/// [`ProcessStats`] of this process; `None` where `/proc` cannot be read.
pub fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let hz = clock_ticks()? as f64;
    // The command name may hold spaces: fields count from its closing ')',
    // field 3 (state) first; see proc_pid_stat(5).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut limit = std::mem::MaybeUninit::<libc::rlimit>::zeroed();
    // SAFETY: getrlimit writes one rlimit into a buffer of its size.
    let max_fds = match unsafe { syscall!(getrlimit(libc::RLIMIT_NOFILE, limit.as_mut_ptr())) } {
        // SAFETY: getrlimit succeeded and filled the buffer.
        Ok(_) => unsafe { limit.assume_init() }.rlim_cur,
        Err(_) => 0,
    };
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / hz,
        resident_bytes: field(24)? * u64::from(page_size()?),
        virtual_bytes: field(23)?,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + field(22)? as f64 / hz,
    })
}

/// The running kernel's release (`uname -r`), from
/// `/proc/sys/kernel/osrelease`.
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `setsockopt(fd, level, name, &value)` for an int option socket2 has no
/// setter for (IP_BIND_ADDRESS_NO_PORT, IP_MULTICAST_ALL).
pub fn set_int_option(
    fd: std::os::fd::BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to a c_int with its size.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))
    }
    .map(drop)
}

/// Attaches to the SO_REUSEPORT group of the socket `fd` a classic BPF
/// program that always chooses the group's first member (`ret #0`,
/// SO_ATTACH_REUSEPORT_CBPF): the program replaces the 4-tuple hash in
/// `reuseport_select_sock()`.
pub fn attach_reuseport_first_member(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let code = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: a valid descriptor; the option value is a sock_fprog
    // describing `code`, both alive for the call (the kernel copies the
    // program), with its size.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ))
    }
    .map(drop)
}

/// The inode of the file open on `fd` (`fstat`).
pub fn inode_of(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat on a valid descriptor into a buffer of the right size.
    unsafe { syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr())) }?;
    // SAFETY: fstat succeeded and filled the buffer.
    Ok(unsafe { st.assume_init() }.st_ino)
}

/// The size of a memory page.
pub fn page_size() -> Option<u32> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).ok()
}

/// `open_by_handle_at(mount, handle, O_RDONLY|O_DIRECTORY|O_PATH)`.
///
/// # Safety
/// `handle` must point to a `struct file_handle` whose `handle_bytes`
/// bytes of `f_handle` follow it in memory.
pub unsafe fn open_by_handle(
    mount: std::os::fd::BorrowedFd<'_>,
    handle: *mut libc::file_handle,
) -> io::Result<OwnedFd> {
    // SAFETY: the caller vouches for `handle`; a returned descriptor is
    // owned by the OwnedFd.
    unsafe {
        let fd = syscall!(open_by_handle_at(
            mount.as_raw_fd(),
            handle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_PATH,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` for program `fd` into `info`.
pub fn bpf_prog_info(
    fd: std::os::fd::BorrowedFd<'_>,
    info: &mut aya_obj::generated::bpf_prog_info,
) -> io::Result<()> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    // SAFETY: a plain C union of integers: all-zero is valid.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The `info` member of the zeroed union, the one
    // BPF_OBJ_GET_INFO_BY_FD reads (writing a union field is safe).
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = std::ptr::from_mut(info) as u64;
    // SAFETY: the kernel writes at most `info_len` bytes to `info`, which
    // outlives the call; `attr` is a valid bpf_attr of that size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_int,
            &raw mut attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    cvt(rc).map(drop)
}

/// The caller's effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The socket a forked child binds: its options and whether it listens.
#[derive(Debug, Clone)]
pub struct BindSpec {
    pub addr: SocketAddr,
    /// TCP (`SOCK_STREAM`) rather than UDP.
    pub stream: bool,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// `IPV6_V6ONLY` to set on an IPv6 socket; left alone when `None`.
    pub v6only: Option<bool>,
    /// Listen with this backlog after a successful bind.
    pub listen: Option<libc::c_int>,
    /// A holding child counts the datagrams queued on its socket when
    /// released and reports them ([`Forked::release_and_count`]).
    pub count_on_release: bool,
    /// `connect()` here after a successful bind (a connected UDP socket,
    /// a client's side of a TCP connection).
    pub connect: Option<SocketAddr>,
    /// The child's process name (`PR_SET_NAME`, 15 bytes kept): tests
    /// give hostile ones.
    pub comm: Option<std::ffi::CString>,
}

/// What the child reported: errno values, `0` for success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Dropping to the uid or creating the socket failed with this errno
    /// (`0`: both worked).
    pub setup: i32,
    /// The bind's errno; `None` when not reached.
    pub bind: Option<i32>,
    /// The listen's errno; `None` when not reached or not asked for.
    pub listen: Option<i32>,
    /// The connect's errno; `None` when not reached or not asked for.
    pub connect: Option<i32>,
}

impl Report {
    /// The errno of the first step that failed, if any.
    pub fn first_error(&self) -> Option<i32> {
        [Some(self.setup), self.bind, self.listen, self.connect]
            .into_iter()
            .flatten()
            .find(|&e| e != 0)
    }
}

/// A child made by [`fork_as`]. Dropping it releases a holding child and
/// reaps it.
#[derive(Debug)]
pub struct Forked {
    pub pid: u32,
    pub report: Report,
    /// Our write end of the release pipe: the holding child waits until it
    /// closes.
    release: Option<OwnedFd>,
    /// Our read end of the report pipe, kept when the child reports a
    /// count on release.
    counted: Option<OwnedFd>,
}

impl Forked {
    /// Releases a holding child made with `count_on_release` and returns
    /// how many datagrams were queued on its socket.
    pub fn release_and_count(mut self) -> io::Result<u64> {
        drop(self.release.take());
        let fd = self.counted.take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the child was not asked to count",
            )
        })?;
        let mut n: libc::c_int = -1;
        let want = std::mem::size_of_val(&n);
        // SAFETY: reading at most `want` bytes into a local of that size.
        let got = unsafe { syscall!(read(fd.as_raw_fd(), (&raw mut n).cast(), want)) }?;
        match u64::try_from(n) {
            Ok(n) if usize::try_from(got).is_ok_and(|g| g == want) => Ok(n),
            _ => Err(io::Error::other(format!(
                "the uid child {} did not report a count",
                self.pid
            ))),
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        drop(self.release.take());
        let mut status = 0;
        let pid = libc::pid_t::try_from(self.pid).unwrap_or(-1);
        // SAFETY: waitpid on our own child with a valid status pointer; a
        // failure (already reaped) changes nothing.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}

/// Forks a child of the calling thread (so in its network namespace) that
/// drops to `uid` (gid, no supplementary groups), binds the socket `spec`
/// describes, reports, and either exits or, with `hold`, keeps the socket
/// until the returned [`Forked`] is dropped.
///
/// Before dropping privileges the child closes every descriptor it
/// inherited except stdio and its two pipe ends, so it holds none of the
/// parent's programs, maps or sockets. Between `fork` and `_exit` it makes
/// only async-signal-safe system calls on memory prepared before the fork.
pub fn fork_as(uid: u32, spec: &BindSpec, hold: bool) -> io::Result<Forked> {
    // (uid_t)-1 means "unchanged" to setresuid(2): the child would keep
    // the caller's uid.
    if uid == u32::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "uid 4294967295 is (uid_t)-1, which setresuid() reads as \"leave unchanged\": give a real uid",
        ));
    }
    let sa: SockAddr = spec.addr.into();
    let connect: Option<SockAddr> = spec.connect.map(Into::into);
    let plan = ChildPlan {
        id: libc::c_long::from(uid),
        family: if spec.addr.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        },
        ty: if spec.stream {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        },
        sa: &sa,
        reuseaddr: spec.reuseaddr,
        reuseport: spec.reuseport,
        v6only: spec.v6only.filter(|_| spec.addr.is_ipv6()),
        listen: spec.listen,
        count: hold && spec.count_on_release,
        connect: connect.as_ref(),
        comm: spec.comm.as_deref(),
    };
    let (report_rx, report_tx) = pipe()?;
    let (release_rx, release_tx) = if hold {
        let (rx, tx) = pipe()?;
        (Some(rx), Some(tx))
    } else {
        (None, None)
    };
    // SAFETY: the child branch below runs only `child`, which makes
    // async-signal-safe system calls on memory prepared before the fork
    // and never returns.
    let pid = unsafe { syscall!(fork()) }?;
    if pid == 0 {
        let release = release_rx.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        // SAFETY: we are the freshly forked, single-threaded child.
        unsafe { child(&plan, report_tx.as_raw_fd(), release) }
    }
    // The child's ends: a write end held here would keep our read waiting
    // for ever if the child died.
    drop(report_tx);
    drop(release_rx);
    let mut words: [libc::c_int; 4] = [-1; 4];
    let want = std::mem::size_of_val(&words);
    // SAFETY: reading at most `want` bytes into the local array of that size.
    let n = unsafe { syscall!(read(report_rx.as_raw_fd(), (&raw mut words).cast(), want)) };
    if !plan.count && matches!(n, Ok(n) if usize::try_from(n).is_ok_and(|n| n == want)) {
        // Wait for the child to close its end (EOF), so that once we
        // return it holds only its socket and the release pipe.
        let mut byte = 0u8;
        // SAFETY: reading at most one byte into a local.
        let _ = unsafe { syscall!(read(report_rx.as_raw_fd(), (&raw mut byte).cast(), 1)) };
    }
    let forked = Forked {
        pid: u32::try_from(pid).unwrap_or_default(),
        report: Report {
            setup: words[0],
            bind: (words[1] >= 0).then_some(words[1]),
            listen: (words[2] >= 0).then_some(words[2]),
            connect: (words[3] >= 0).then_some(words[3]),
        },
        release: release_tx,
        counted: plan.count.then_some(report_rx),
    };
    match n {
        Ok(n) if usize::try_from(n).is_ok_and(|n| n == want) => Ok(forked),
        Ok(_) => Err(io::Error::other(format!(
            "the uid {uid} child died before reporting"
        ))),
        Err(e) => Err(e),
    }
}

/// Everything the child needs, computed before the fork.
struct ChildPlan<'a> {
    id: libc::c_long,
    family: libc::c_int,
    ty: libc::c_int,
    sa: &'a SockAddr,
    reuseaddr: bool,
    reuseport: bool,
    v6only: Option<bool>,
    listen: Option<libc::c_int>,
    /// Count queued datagrams on release and report them.
    count: bool,
    connect: Option<&'a SockAddr>,
    comm: Option<&'a std::ffi::CStr>,
}

/// The forked child: close what it inherited, take its name, drop to the
/// uid, bind (then listen or connect), report `[setup, bind, listen,
/// connect]`, then wait for release (`release >= 0`) or exit.
///
/// # Safety
/// Only to be called in a freshly forked child, with `report` (and
/// `release` when not `-1`) open.
unsafe fn child(p: &ChildPlan<'_>, report: RawFd, release: RawFd) -> ! {
    // SAFETY: each call below is async-signal-safe, takes plain integers
    // or pointers to locals and to `p`, which the fork copied, and the
    // function ends in _exit without returning into the parent's code.
    unsafe {
        close_inherited(report, release);
        if let Some(name) = p.comm {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
        let errno = || *libc::__errno_location();
        let mut r: [libc::c_int; 4] = [0, -1, -1, -1];
        // Raw system calls: they change only this single-threaded process,
        // without libc's bookkeeping across threads (which a forked child of
        // a threaded parent cannot rely on).
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, p.id, p.id, p.id) != 0
            || libc::syscall(libc::SYS_setresuid, p.id, p.id, p.id) != 0
        {
            r[0] = errno();
        }
        // No PR_SET_PDEATHSIG: it fires when the forking *thread* exits
        // (forget_original_parent() in kernel/exit.c signals the children
        // of every exiting task), so a child forked from a short-lived
        // thread, such as one that entered a new network namespace, was
        // killed with its socket as soon as that thread returned. The
        // release pipe ends a holding child when the parent process dies:
        // the kernel closes the parent's write end and the read below
        // returns.
        let fd = if r[0] == 0 {
            libc::socket(p.family, p.ty, 0)
        } else {
            -1
        };
        if r[0] == 0 && fd < 0 {
            r[0] = errno();
        }
        if r[0] == 0 {
            let set = |level, name, on: bool| {
                let v: libc::c_int = on.into();
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&raw const v).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            };
            set(libc::SOL_SOCKET, libc::SO_REUSEADDR, p.reuseaddr);
            set(libc::SOL_SOCKET, libc::SO_REUSEPORT, p.reuseport);
            if let Some(only) = p.v6only {
                set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, only);
            }
            r[1] = if libc::bind(fd, p.sa.as_ptr().cast(), p.sa.len()) == 0 {
                0
            } else {
                errno()
            };
            if r[1] == 0
                && let Some(backlog) = p.listen
            {
                r[2] = if libc::listen(fd, backlog) == 0 {
                    0
                } else {
                    errno()
                };
            }
            if r[1] == 0
                && let Some(to) = p.connect
            {
                r[3] = if libc::connect(fd, to.as_ptr().cast(), to.len()) == 0 {
                    0
                } else {
                    errno()
                };
            }
        }
        libc::write(report, (&raw const r).cast(), std::mem::size_of_val(&r));
        if !p.count {
            libc::close(report);
        }
        if release >= 0 {
            let mut byte = 0u8;
            // Blocks until the parent closes its end (or dies).
            libc::read(release, (&raw mut byte).cast(), 1);
        }
        if p.count {
            let mut n: libc::c_int = 0;
            let mut buf = [0u8; 64];
            while fd >= 0
                && libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) >= 0
            {
                n += 1;
            }
            libc::write(report, (&raw const n).cast(), std::mem::size_of_val(&n));
        }
        libc::_exit(0)
    }
}

/// Closes every descriptor above stdio except `a` and `b` (`-1`: none).
///
/// # Safety
/// Only in a forked child, where no other code uses the descriptors.
unsafe fn close_inherited(a: RawFd, b: RawFd) {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut from: libc::c_uint = 3;
    for keep in [lo, hi] {
        let Ok(keep) = libc::c_uint::try_from(keep) else {
            continue;
        };
        if keep >= from {
            if keep > from {
                // SAFETY: closing descriptors of this child only.
                unsafe { close_span(from, keep - 1) };
            }
            from = keep + 1;
        }
    }
    // SAFETY: closing descriptors of this child only.
    unsafe { close_span(from, libc::c_uint::MAX) };
}

/// `close_range(first, last, 0)`, or one close per descriptor on kernels
/// before 5.9 that lack it.
///
/// # Safety
/// Only in a forked child, where no other code uses the descriptors.
unsafe fn close_span(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range takes plain integers and only closes descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } == 0 {
        return;
    }
    for fd in first..=last.min(first.saturating_add(65536)) {
        if let Ok(fd) = libc::c_int::try_from(fd) {
            // SAFETY: closing a descriptor of this child (or none: EBADF).
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, net::Ipv4Addr};

    use super::*;

    #[test]
    fn minus_one_is_the_errno() {
        assert_eq!(cvt(3i32).ok(), Some(3));
        // SAFETY: close(-1) touches no descriptor; it fails with EBADF.
        let e = unsafe { syscall!(close(-1)) }.expect_err("EBADF");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn process_stats_are_this_process() {
        let p = process_stats().expect("/proc/self");
        let held = fs::File::open("/proc/self/stat").expect("open");
        let more = process_stats().expect("/proc/self");
        assert!(
            more.open_fds > p.open_fds.saturating_sub(1),
            "{p:?} {more:?}"
        );
        drop(held);
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.max_fds >= p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }

    #[test]
    fn a_uid_of_minus_one_is_refused() {
        let spec = BindSpec {
            addr: (Ipv4Addr::LOCALHOST, 0).into(),
            stream: true,
            reuseaddr: false,
            reuseport: false,
            v6only: None,
            listen: None,
            count_on_release: false,
            connect: None,
            comm: None,
        };
        let e = fork_as(u32::MAX, &spec, false).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("4294967295"), "{e}");
    }

    /// The child keeps stdio, its release pipe and its socket: none of the
    /// descriptors the parent had open.
    #[test]
    fn the_child_holds_only_what_it_needs() {
        if geteuid() != 0 {
            eprintln!("SKIPPED: needs root to change uid and create a namespace");
            return;
        }
        let targets = crate::kernel::netns::in_new_netns(|_| {
            // Descriptors a forked child must not keep: a file, a socket,
            // and a pipe without close-on-exec semantics mattering.
            let _file = fs::File::open("/proc/self/status")?;
            let _sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            let _pipe = pipe()?;
            let spec = BindSpec {
                addr: (Ipv4Addr::LOCALHOST, 0).into(),
                stream: true,
                reuseaddr: false,
                reuseport: false,
                v6only: None,
                listen: Some(1),
                count_on_release: false,
                connect: None,
                comm: None,
            };
            let child = fork_as(65534, &spec, true)?;
            assert_eq!(child.report.first_error(), None, "{:?}", child.report);
            let mut targets = Vec::new();
            for e in fs::read_dir(format!("/proc/{}/fd", child.pid))? {
                let e = e?;
                let n: i32 = e.file_name().to_string_lossy().parse().unwrap_or(-1);
                if n > 2 {
                    targets.push(fs::read_link(e.path())?.to_string_lossy().into_owned());
                }
            }
            // A child that kept our end of its release pipe would never see
            // it close: end it here so that a regression fails, not hangs.
            let pid = libc::pid_t::try_from(child.pid).unwrap_or(-1);
            // SAFETY: kill(2) on our own child; it takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            drop(child);
            Ok::<_, io::Error>(targets)
        })
        .and_then(|r| r)
        .expect("child");
        assert_eq!(targets.len(), 2, "{targets:?}");
        assert!(
            targets.iter().any(|t| t.starts_with("socket:")),
            "{targets:?}"
        );
        assert!(
            targets.iter().any(|t| t.starts_with("pipe:")),
            "{targets:?}"
        );
    }
}
