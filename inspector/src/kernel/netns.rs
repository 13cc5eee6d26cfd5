//! Every network-namespace operation: opening and checking a namespace
//! file, its inode (as events' `netns`), running code inside a namespace,
//! fresh namespaces for scenarios and tests, and their sysctls.
//!
//! A namespace belongs to the thread that entered or unshared it, so code
//! that runs inside one runs on a dedicated thread; sockets created there
//! stay in it. When a fresh namespace's thread ends and its sockets are
//! closed the kernel tears the namespace down: nothing is left behind.

use std::{
    fs, io,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, MetadataExt as _},
    },
    path::{Path, PathBuf},
    thread,
};

use crate::kernel::sys::syscall;

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, include/uapi/linux/nsfs.h): the
/// `CLONE_NEW*` type of an nsfs file (`ns_ioctl()`).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

const FIX: &str = "give /proc/PID/ns/net or /run/netns/NAME";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {} ({FIX})", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {what}, not a network namespace: {FIX}", path.display())]
    NotNetns { path: PathBuf, what: &'static str },
    #[error("cannot enter network namespace {} (entering a namespace needs root)", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the namespace thread could not start")]
    Spawn(#[source] io::Error),
    #[error("the namespace thread panicked")]
    Panicked,
}

/// An open network namespace file, checked to be one.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    fd: OwnedFd,
}

impl Netns {
    /// Opens `path` (`/proc/PID/ns/net`, `/run/netns/NAME`) and checks with
    /// `NS_GET_NSTYPE` that it is a network namespace: a regular file, a
    /// directory or another kind of namespace is refused by name.
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let file = fs::File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let not = |what| NetnsError::NotNetns {
            path: path.to_path_buf(),
            what,
        };
        let fd = OwnedFd::from(file);
        // SAFETY: an ioctl without argument on a descriptor we own; on a
        // file outside nsfs it fails (ENOTTY) and changes nothing.
        match unsafe { syscall!(ioctl(fd.as_raw_fd(), NS_GET_NSTYPE)) } {
            Ok(libc::CLONE_NEWNET) => Ok(Self {
                path: path.to_path_buf(),
                fd,
            }),
            Ok(ty) => Err(not(ns_kind(ty))),
            Err(_) => {
                let ft = fs::File::from(fd).metadata().map(|m| m.file_type());
                Err(not(match ft {
                    Ok(t) if t.is_dir() => "a directory",
                    Ok(t) if t.is_file() => "a regular file",
                    Ok(t) if t.is_socket() || t.is_fifo() => "a socket or pipe",
                    Ok(t) if t.is_char_device() || t.is_block_device() => "a device",
                    _ => "not a namespace file",
                }))
            }
        }
    }

    /// The namespace inode, as the kernel's `net->ns.inum`.
    pub fn inode(&self) -> Result<u32, NetnsError> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: fstat on our descriptor into a buffer of the right size.
        unsafe { syscall!(fstat(self.fd.as_raw_fd(), st.as_mut_ptr())) }.map_err(|source| {
            NetnsError::Open {
                path: self.path.clone(),
                source,
            }
        })?;
        // SAFETY: fstat succeeded and filled the buffer.
        let ino = unsafe { st.assume_init() }.st_ino;
        u32::try_from(ino).map_err(|_| NetnsError::Open {
            path: self.path.clone(),
            source: io::Error::other("namespace inode does not fit 32 bits"),
        })
    }

    /// Moves the calling thread into this namespace.
    fn enter(&self) -> Result<(), NetnsError> {
        // SAFETY: setns on a namespace descriptor we own; it changes only
        // the calling thread's network namespace.
        unsafe { syscall!(setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET)) }
            .map(drop)
            .map_err(|source| NetnsError::Enter {
                path: self.path.clone(),
                source,
            })
    }
}

/// The namespace a `CLONE_NEW*` type names, for the error.
fn ns_kind(ty: libc::c_int) -> &'static str {
    match ty {
        libc::CLONE_NEWNS => "a mount namespace",
        libc::CLONE_NEWUTS => "a UTS namespace",
        libc::CLONE_NEWIPC => "an IPC namespace",
        libc::CLONE_NEWUSER => "a user namespace",
        libc::CLONE_NEWPID => "a PID namespace",
        libc::CLONE_NEWCGROUP => "a cgroup namespace",
        libc::CLONE_NEWTIME => "a time namespace",
        _ => "another kind of namespace",
    }
}

/// The inode of the network namespace file `path`, checked to be one.
pub fn inode(path: &Path) -> Result<u32, NetnsError> {
    Netns::open(path)?.inode()
}

/// The calling thread's network namespace inode.
pub fn current_netns() -> io::Result<u32> {
    let meta = fs::metadata("/proc/thread-self/ns/net")?;
    u32::try_from(meta.ino()).map_err(|_| io::Error::other("namespace inode does not fit 32 bits"))
}

/// Runs `f` on a thread inside the namespace of the file `path` (or in the
/// caller's namespace when `None`).
pub fn in_netns<T, E, F>(path: Option<&Path>, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<NetnsError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let ns = path.map(Netns::open).transpose().map_err(E::from)?;
    let handle = thread::Builder::new()
        .name("inspector-netns".into())
        .spawn(move || {
            if let Some(ns) = ns {
                ns.enter().map_err(E::from)?;
            }
            f()
        })
        .map_err(|e| E::from(NetnsError::Spawn(e)))?;
    handle.join().map_err(|_| E::from(NetnsError::Panicked))?
}

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
            let ino = current_netns()?;
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
    unsafe { syscall!(unshare(libc::CLONE_NEWNET)) }.map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("creating a network namespace (unshare CLONE_NEWNET) needs root: {err}"),
        )
    })?;
    set_link_flags("lo", libc::IFF_UP)
}

/// Moves the calling thread into the namespace of the open namespace
/// file `ns`.
pub fn enter_fd(ns: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns on a descriptor the caller keeps open; it changes only
    // the calling thread's network namespace.
    unsafe { syscall!(setns(ns.as_raw_fd(), libc::CLONE_NEWNET)) }.map(drop)
}

/// Sets `flags` (`IFF_*`) on the interface `name` of the calling thread's
/// namespace, keeping the others.
pub fn set_link_flags(name: &str, flags: libc::c_int) -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the
    // flags into the ifreq we own, on a socket we own.
    unsafe { syscall!(ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr)) }?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is
    // the initialised one.
    unsafe { ifr.ifr_ifru.ifru_flags |= flags as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads the ifreq (name and flags), which is
    // fully initialised and outlives the call.
    unsafe { syscall!(ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr)) }?;
    Ok(())
}

/// An interface request for `name`, the rest zero.
pub(super) fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is too long"),
        ));
    }
    // The rest stays zero: the name is NUL-terminated.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
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

/// A namespace's `ip_local_port_range` and how many of its ports
/// `ip_local_reserved_ports` takes out (`inet_is_local_reserved_port()`,
/// skipped by `__inet_hash_connect()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
    pub reserved: u32,
}

impl PortRange {
    /// Ports `connect()` can choose from.
    pub fn size(&self) -> u32 {
        (u32::from(self.high) + 1)
            .saturating_sub(u32::from(self.low))
            .saturating_sub(self.reserved)
    }

    /// From the two sysctl files' text: `"32768\t60999"` and
    /// `"8080,9000-9010"` (empty when none are reserved).
    pub fn parse(range: &str, reserved: &str) -> Option<Self> {
        let mut it = range.split_whitespace().map(str::parse::<u16>);
        let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
        if high < low {
            return None;
        }
        let mut n = 0u32;
        for part in reserved.trim().split(',').filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
                None => {
                    let p = part.trim().parse::<u16>().ok()?;
                    (p, p)
                }
            };
            let (a, b) = (a.max(low), b.min(high));
            if a <= b {
                n += u32::from(b - a) + 1;
            }
        }
        Some(Self {
            low,
            high,
            reserved: n,
        })
    }
}

/// Namespaces a dashboard follows at start at most.
const FOLLOWED_MAX: usize = 32;

/// A path into the namespace with inode `ino`: this process's own, a
/// `/run/netns` name, or a process inside it.
pub fn netns_path(ino: u32) -> Option<PathBuf> {
    let of = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.ino() == u64::from(ino));
    let own = PathBuf::from("/proc/self/ns/net");
    if of(&own) {
        return Some(own);
    }
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path().join("ns/net"));
    named.chain(procs).find(|p| of(p))
}

/// A path into the namespace with inode `ino`, looking also where a
/// namespace of this process's own threads is found: a thread's
/// `/proc/self/task/TID/ns/net` (a scenario's thread) and a descriptor
/// open on a namespace file (a scenario holds its namespaces open until its
/// result is in).
pub fn netns_path_any(ino: u32) -> Option<PathBuf> {
    if let Some(p) = netns_path(ino) {
        return Some(p);
    }
    let of = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.ino() == u64::from(ino));
    let want = format!("net:[{ino}]");
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("ns/net"));
    let fds = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read_link(p).is_ok_and(|l| l.as_os_str() == want.as_str()));
    tasks.chain(fds).find(|p| of(p))
}

/// A namespace's `ip_local_port_range` and `ip_local_reserved_ports`
/// (sysctls of the namespace: read from a thread inside it).
pub fn port_range(ino: u32) -> Option<PortRange> {
    port_range_in(&netns_path_any(ino)?)
}

/// [`port_range`] of the namespace at `path`.
pub fn port_range_in(path: &Path) -> Option<PortRange> {
    // Inside: a sysctl that cannot be read is no range, not an error of
    // the namespace.
    let read = || -> Result<Option<PortRange>, NetnsError> {
        let Ok(range) = sysctl("net/ipv4/ip_local_port_range") else {
            return Ok(None);
        };
        let reserved = sysctl("net/ipv4/ip_local_reserved_ports").unwrap_or_default();
        Ok(PortRange::parse(&range, &reserved))
    };
    in_netns(Some(path), read).ok().flatten()
}

/// The namespaces a dashboard follows at start: the one it is told to, or
/// its own and every `/run/netns` one.
pub fn followed(only: Option<u32>) -> Vec<PathBuf> {
    if let Some(ino) = only {
        return netns_path(ino).into_iter().collect();
    }
    let mut paths = vec![PathBuf::from("/proc/self/ns/net")];
    paths.extend(
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    paths.truncate(FOLLOWED_MAX);
    paths
}

/// Where named namespaces are bind-mounted: `ip netns` and CNI plugins
/// (`/var/run/netns`, the same directory where `/var/run` links to `/run`).
pub const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// Longest `/run/netns` name kept; a longer one is cut.
const NAME_MAX: usize = 64;

/// A network namespace found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its inode, as events' `netns`.
    pub ino: u32,
    /// A path into it.
    pub path: PathBuf,
    /// Its name in a [`NAMED_DIRS`] directory, if it has one.
    pub name: Option<String>,
    /// A process inside it, if one was found.
    pub pid: Option<u32>,
}

/// Every network namespace of this host that has a name or a process in
/// it, by inode: named ones through their name, the others through the
/// first process found in them (`/proc/PID/ns/net`), with that process. One `stat` per name
/// and per process; namespaces held only by a thread or an open
/// descriptor are not found.
pub fn scan() -> std::collections::BTreeMap<u32, Found> {
    let mut found = std::collections::BTreeMap::new();
    let ino_of = |p: &Path| {
        fs::metadata(p)
            .ok()
            .and_then(|m| u32::try_from(m.ino()).ok())
    };
    for dir in NAMED_DIRS {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let (path, name) = (e.path(), e.file_name());
            let Some(name) = name.to_str() else { continue };
            // A name's mount point is a plain file until mounted on: its
            // inode is then the file system's, not a namespace's.
            if let Some(ino) = ino_of(&path)
                && Netns::open(&path).is_ok()
            {
                let name: String = name.chars().take(NAME_MAX).collect();
                found.entry(ino).or_insert(Found {
                    ino,
                    path,
                    name: Some(name),
                    pid: None,
                });
            }
        }
    }
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let path = e.path().join("ns/net");
        if let Some(ino) = ino_of(&path) {
            // A named one gets a process too: CNI names pods' namespaces,
            // and the process tells whose they are.
            found
                .entry(ino)
                .and_modify(|f: &mut Found| {
                    f.pid.get_or_insert(pid);
                })
                .or_insert(Found {
                    ino,
                    path,
                    name: None,
                    pid: Some(pid),
                });
        }
    }
    found
}

/// A thread's namespace file, `/proc/PID/task/TID/ns/net`, if the thread
/// is still in namespace `ino`.
pub fn thread_netns(pid: u32, tid: u32, ino: u32) -> Option<PathBuf> {
    let path = PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net"));
    fs::metadata(&path)
        .is_ok_and(|m| m.ino() == u64::from(ino))
        .then_some(path)
}
