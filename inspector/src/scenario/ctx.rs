//! What a scenario works through: fresh namespaces, real sockets, and a log
//! of every call and its errno that the evidence is checked against.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsFd as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{NsId, ScenarioError};
pub use crate::kernel::Proto;
use crate::kernel::{Errno, netns, sys::monotonic_ns, veth};

/// A socket of the scenario, with the label the log and the output use.
#[derive(Debug)]
pub struct Sock {
    pub label: String,
    pub proto: Proto,
    pub sock: Socket,
    /// Inode of the socket's file: how events name it (`ino`).
    pub ino: u64,
}

impl Sock {
    pub fn local_port(&self) -> u16 {
        self.sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(0, |a| a.port())
    }
}

/// One bind / listen / connect the driver made, and what it returned.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub socket: String,
    pub proto: Proto,
    /// `bind`, `listen` or `connect` (the trace schema's `phase` names).
    pub op: &'static str,
    pub addr: String,
    pub port: u16,
    /// The errno (by name in JSON), or null on success.
    pub errno: Option<Errno>,
}

/// Datagrams or connections one socket received, as the driver counted them.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub socket: String,
    #[serde(skip)]
    pub ino: u64,
    pub count: u64,
    /// Whether the kernel reports deliveries to it (a SO_REUSEPORT member):
    /// then the evidence must show exactly `count` of them.
    #[serde(skip)]
    pub checked: bool,
}

/// The server's and the client's address on the veth pair of
/// [`Ctx::two_hosts`]: link-local, so nothing routes them off the pair,
/// and not loopback.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 2);

/// One end of [`Ctx::two_hosts`]: its namespace and address.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    ns: usize,
    pub addr: Ipv4Addr,
}

#[derive(Debug, Clone, Copy)]
pub struct Hosts {
    pub server: Host,
    pub client: Host,
}

#[derive(Debug, Default)]
pub struct Ctx {
    namespaces: Arc<Mutex<Vec<NsId>>>,
    /// Each namespace's file, open until the result is assembled so its
    /// inode cannot be reused meanwhile (see [`NsId`]).
    ns_files: Vec<std::fs::File>,
    /// Sysctls and socket options, in the order they were set.
    pub setup: Vec<String>,
    pub calls: Vec<Call>,
    pub deliveries: Vec<Delivery>,
    /// Ports on which the evidence must show a TIME_WAIT entry.
    pub expect_time_wait: Vec<u16>,
    held: Vec<Socket>,
}

/// The errno of an I/O result, or `None` on success.
pub fn errno_of<T>(r: &io::Result<T>) -> Option<Errno> {
    r.as_ref().err().map(Errno::of)
}

pub fn sockaddr(s: &str) -> Result<SocketAddr, ScenarioError> {
    s.parse()
        .map_err(|_| ScenarioError::Setup(format!("bad address {s}")))
}

impl Ctx {
    pub(super) fn new(namespaces: Arc<Mutex<Vec<NsId>>>) -> Self {
        Self {
            namespaces,
            ..Self::default()
        }
    }

    /// Moves this scenario's thread into a new network namespace with `lo`
    /// up; sockets made before stay in the previous one.
    pub fn fresh_netns(&mut self) -> Result<u32, ScenarioError> {
        let since_ns = monotonic_ns();
        netns::enter_new_netns()?;
        self.ns_files
            .push(std::fs::File::open("/proc/thread-self/ns/net")?);
        let ino = netns::current_netns()?;
        if let Ok(mut n) = self.namespaces.lock() {
            n.push(NsId { ino, since_ns });
        }
        Ok(ino)
    }

    /// Two hosts: two fresh namespaces joined by a veth pair, the server at
    /// [`SERVER_ADDR`] and the client at [`CLIENT_ADDR`], so that their
    /// traffic is not loopback (which some rules treat apart). The thread
    /// is left in the server's namespace; [`Ctx::enter`] moves it.
    pub fn two_hosts(&mut self) -> Result<Hosts, ScenarioError> {
        self.fresh_netns()?;
        let client = Host {
            ns: self.ns_files.len() - 1,
            addr: CLIENT_ADDR,
        };
        self.fresh_netns()?;
        let server = Host {
            ns: self.ns_files.len() - 1,
            addr: SERVER_ADDR,
        };
        veth::add_pair("server0", "client0", self.ns_files[client.ns].as_fd())?;
        veth::set_ipv4("server0", SERVER_ADDR, 30)?;
        self.enter(client)?;
        veth::set_ipv4("client0", CLIENT_ADDR, 30)?;
        self.enter(server)?;
        self.setup.push(format!(
            "veth pair between two namespaces: server {SERVER_ADDR}/30, client {CLIENT_ADDR}/30"
        ));
        Ok(Hosts { server, client })
    }

    /// Moves this scenario's thread into `host`'s namespace: sockets made
    /// from now on are its.
    pub fn enter(&mut self, host: Host) -> Result<(), ScenarioError> {
        let ns = self
            .ns_files
            .get(host.ns)
            .ok_or_else(|| ScenarioError::Setup("no such host".into()))?;
        netns::enter_fd(ns.as_fd())?;
        Ok(())
    }

    /// Reads a sysctl of the current namespace: a fresh namespace shows
    /// the kernel's defaults.
    pub fn read_sysctl(&mut self, name: &str) -> Result<String, ScenarioError> {
        Ok(netns::sysctl(name)?)
    }

    /// Sets a sysctl of the current namespace and logs it.
    pub fn sysctl(&mut self, name: &str, value: &str) -> Result<(), ScenarioError> {
        netns::set_sysctl(name, value)?;
        self.setup
            .push(format!("sysctl {}={value}", name.replace('/', ".")));
        Ok(())
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.setup.push(line.into());
    }

    pub fn socket(&mut self, label: &str, proto: Proto, v6: bool) -> Result<Sock, ScenarioError> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let ty = match proto {
            Proto::Tcp => Type::STREAM,
            Proto::Udp => Type::DGRAM,
        };
        let sock = Socket::new(domain, ty, None)?;
        let ino = inode(&sock)?;
        Ok(Sock {
            label: label.to_owned(),
            proto,
            sock,
            ino,
        })
    }

    pub fn tcp(&mut self, label: &str) -> Result<Sock, ScenarioError> {
        self.socket(label, Proto::Tcp, false)
    }

    pub fn udp(&mut self, label: &str) -> Result<Sock, ScenarioError> {
        self.socket(label, Proto::Udp, false)
    }

    pub fn reuseaddr(&mut self, s: &Sock) -> Result<(), ScenarioError> {
        s.sock.set_reuse_address(true)?;
        self.setup.push(format!("{}: SO_REUSEADDR=1", s.label));
        Ok(())
    }

    pub fn reuseport(&mut self, s: &Sock) -> Result<(), ScenarioError> {
        s.sock.set_reuse_port(true)?;
        self.setup.push(format!("{}: SO_REUSEPORT=1", s.label));
        Ok(())
    }

    pub fn v6only(&mut self, s: &Sock, on: bool) -> Result<(), ScenarioError> {
        s.sock.set_only_v6(on)?;
        self.setup
            .push(format!("{}: IPV6_V6ONLY={}", s.label, u8::from(on)));
        Ok(())
    }

    /// IP_BIND_ADDRESS_NO_PORT: a bind() to port 0 leaves the port to
    /// connect() (`inet_bind()` skips `inet_csk_get_port()`).
    pub fn bind_address_no_port(&mut self, s: &Sock) -> Result<(), ScenarioError> {
        crate::kernel::sys::set_int_option(
            s.sock.as_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        )?;
        self.setup
            .push(format!("{}: IP_BIND_ADDRESS_NO_PORT=1", s.label));
        Ok(())
    }

    fn log(&mut self, s: &Sock, op: &'static str, addr: SocketAddr, errno: Option<Errno>) {
        self.calls.push(Call {
            socket: s.label.clone(),
            proto: s.proto,
            op,
            addr: addr.ip().to_string(),
            port: addr.port(),
            errno,
        });
    }

    /// `bind()`; returns the errno, `None` on success.
    pub fn bind(&mut self, s: &Sock, addr: &str) -> Result<Option<Errno>, ScenarioError> {
        let a = sockaddr(addr)?;
        let errno = errno_of(&s.sock.bind(&a.into()));
        self.log(s, "bind", a, errno);
        Ok(errno)
    }

    /// `listen()`; the logged address is the one the socket is bound to.
    pub fn listen(&mut self, s: &Sock, backlog: i32) -> Option<Errno> {
        let errno = errno_of(&s.sock.listen(backlog));
        let a = s
            .sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.log(s, "listen", a, errno);
        errno
    }

    /// Blocking `connect()` to `addr`.
    pub fn connect(&mut self, s: &Sock, addr: &str) -> Result<Option<Errno>, ScenarioError> {
        let a = sockaddr(addr)?;
        let errno = errno_of(&s.sock.connect_timeout(&a.into(), Duration::from_secs(2)));
        self.log(s, "connect", a, errno);
        Ok(errno)
    }

    /// Records what `s` received; `checked` when the kernel reports its
    /// deliveries (a SO_REUSEPORT member), so the evidence must match.
    pub fn delivered(&mut self, s: &Sock, count: u64, checked: bool) {
        self.deliveries.push(Delivery {
            socket: s.label.clone(),
            ino: s.ino,
            count,
            checked,
        });
    }

    /// Keeps a socket open until the scenario's thread ends.
    pub fn hold(&mut self, s: Sock) {
        self.held.push(s.sock);
    }

    pub(super) fn close_all(&mut self) {
        self.held.clear();
    }

    pub(super) fn deliveries_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.deliveries).unwrap_or_default()
    }
}

/// The inode of a socket's file, as events report it (`ino`).
pub fn inode(s: &Socket) -> io::Result<u64> {
    crate::kernel::sys::inode_of(s.as_fd())
}

/// Accepts connections on `listener` until `n` arrived or `timeout` passed.
pub fn accept_n(listener: &Sock, n: usize, timeout: Duration) -> Vec<Socket> {
    let mut out = Vec::new();
    let _ = listener.sock.set_nonblocking(true);
    let start = Instant::now();
    while out.len() < n && start.elapsed() < timeout {
        match listener.sock.accept() {
            Ok((s, _)) => out.push(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break,
        }
    }
    out
}

/// Drains what is queued on a UDP socket now: the source of each datagram.
pub fn drain_udp(s: &Sock) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let _ = s.sock.set_nonblocking(true);
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    while let Ok((_, from)) = s.sock.recv_from(&mut buf) {
        if let Some(a) = from.as_socket() {
            out.push(a);
        }
    }
    out
}

/// A UDP socket bound to `addr` (port 0 for any) that sends `count`
/// datagrams to `to`.
pub fn send_udp(from: &str, to: &str, count: usize) -> Result<u16, ScenarioError> {
    let from = sockaddr(from)?;
    let to: SockAddr = sockaddr(to)?.into();
    let domain = if from.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, None)?;
    s.bind(&from.into())?;
    for _ in 0..count {
        s.send_to(b"inspector", &to)?;
    }
    Ok(s.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port()))
}

/// Lets in-flight loopback packets land before counting.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(50));
}
