//! The first step of an explanation: the request, checked. Bad input is
//! refused here, in one line that names the problem and the fix, before
//! anything is read from the kernel; what passes is a [`Plan`]: the
//! would-be socket (or destination) and the namespace file to look in.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use serde::Serialize;

use super::{
    rules::Sock,
    words::{fmt_addr, unmap},
};
use crate::kernel::{Proto, sys};

/// Rows of holders the text form shows unless told otherwise: a screenful
/// with the verdict below it.
pub const DEFAULT_ROWS: usize = 20;

/// What to explain: the would-be socket and the namespace to look in, or
/// (`connect`) a destination to connect to.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub port: u32,
    pub tcp: bool,
    pub udp: bool,
    pub addr: Option<IpAddr>,
    pub netns: Option<PathBuf>,
    pub pid: Option<u32>,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: Option<u32>,
    pub json: bool,
    pub probe: bool,
    /// Show only holders whose owner's cgroup path starts with this
    /// (`--cgroup`), or whose container id does (`--container`); the
    /// verdict still counts every holder.
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// `--connect HOST:PORT`: explain a connect() to it instead of a bind().
    pub connect: Option<String>,
    /// Rows of holders the text form lists (`--limit`); `None` lists them
    /// all (`--all`). JSON always carries every holder.
    pub limit: Option<usize>,
    /// The program that wants the port, when known (the failing process
    /// in `trace`): advice then tells another program holding the port
    /// from another instance of the same one.
    pub comm: Option<String>,
}

/// Bad input: one line naming the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Where the connection goes: an IP literal and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_addr(self.addr, self.port))
    }
}

impl Destination {
    /// Parses `HOST:PORT` (`[V6]:PORT` for IPv6); one line naming the
    /// problem otherwise. An IPv4-mapped IPv6 address is taken as its IPv4
    /// address: `tcp_v6_connect()` hands those to `tcp_v4_connect()`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shape = "give HOST:PORT with HOST an IP literal, such as 127.0.0.1:8080 or [::1]:8080";
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("--connect {s:?}: no port; {shape}"));
        };
        let port: u16 = match port.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "--connect {s:?}: port {port:?} is not a port from 1 to 65535"
                ));
            }
            Ok(p) => p,
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let Ok(addr) = bare.parse::<IpAddr>() else {
            return Err(format!(
                "--connect {s:?}: {host:?} is not an IP address (names are not resolved); {shape}"
            ));
        };
        if addr.is_ipv6() && !host.starts_with('[') {
            return Err(format!(
                "--connect {s:?}: put an IPv6 address in brackets, such as [::1]:8080"
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!(
                "--connect {s:?}: {addr} is not a unicast destination"
            ));
        }
        Ok(Self {
            addr: unmap(addr),
            port,
        })
    }

    pub fn socket_addr(self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// A checked request.
#[derive(Debug, Clone)]
pub enum Plan {
    Bind(BindPlan),
    Connect(ConnectPlan),
}

/// A `bind()` (and `listen()`) to predict.
#[derive(Debug, Clone)]
pub struct BindPlan {
    /// The would-be socket.
    pub sock: Sock,
    /// The namespace file to look in; the caller's namespace when `None`.
    pub netns: Option<PathBuf>,
    /// Bind (and listen) once for real to check the prediction.
    pub probe: bool,
    /// Holders listed: those of the cgroup or container asked for.
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// The program that wants the port, when known.
    pub comm: Option<String>,
}

/// A `connect()` from an unbound TCP socket to predict.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    pub destination: Destination,
    pub netns: Option<PathBuf>,
}

/// Checks `req` and resolves its namespace.
pub fn plan(req: &Request) -> Result<Plan, BadRequest> {
    match &req.connect {
        Some(to) => connect_plan(req, to).map(Plan::Connect),
        None => bind_plan(req).map(Plan::Bind),
    }
}

/// The namespace file of `--netns` or `--pid`, checked to exist (whether
/// it is a network namespace, opening it says).
fn namespace(req: &Request) -> Result<Option<PathBuf>, BadRequest> {
    match (&req.netns, req.pid) {
        (Some(_), Some(_)) => Err(BadRequest(
            "--netns and --pid conflict: give the namespace file, or a process whose namespace to use, not both"
                .into(),
        )),
        (Some(p), None) if !p.exists() => Err(BadRequest(format!(
            "no network namespace {}: give /proc/PID/ns/net or /run/netns/NAME",
            p.display()
        ))),
        (Some(p), None) => Ok(Some(p.clone())),
        (None, Some(pid)) => {
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if p.exists() {
                Ok(Some(p))
            } else {
                Err(BadRequest(format!(
                    "no process with pid {pid} (check `ps -p {pid}`)"
                )))
            }
        }
        (None, None) => Ok(None),
    }
}

fn bind_plan(req: &Request) -> Result<BindPlan, BadRequest> {
    let bad = |m: String| Err(BadRequest(m));
    if req.port == 0 || req.port > 65535 {
        return bad(format!(
            "port {} is out of range: give a port from 1 to 65535",
            req.port
        ));
    }
    if req.tcp && req.udp {
        return bad("--tcp and --udp conflict: explain one protocol at a time".into());
    }
    let netns = namespace(req)?;
    if req.uid == Some(u32::MAX) {
        return bad(
            "uid 4294967295 is (uid_t)-1, which the kernel treats as \"no uid\" (setresuid() leaves the uid unchanged): give a real uid"
                .into(),
        );
    }
    let addr = match req.addr {
        Some(a) => a,
        None if req.v6only => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    if req.v6only && addr.is_ipv4() {
        return bad(format!(
            "--v6only applies to IPv6 sockets: give an IPv6 --addr (such as ::), not {addr}"
        ));
    }
    let proto = if req.udp { Proto::Udp } else { Proto::Tcp };
    let port = u16::try_from(req.port).map_err(|_| BadRequest("port out of range".into()))?;
    let mut sock = Sock::new(proto, addr, port);
    sock.reuseaddr = Some(req.reuseaddr);
    sock.reuseport = Some(req.reuseport);
    sock.v6only = req.v6only;
    sock.uid = req.uid.unwrap_or_else(sys::geteuid);
    Ok(BindPlan {
        sock,
        netns,
        probe: req.probe,
        cgroup: req.cgroup.clone(),
        container: req.container.clone(),
        comm: req.comm.clone(),
    })
}

/// The `--connect` request: the destination checked, the namespace
/// resolved as for a port; options that describe a bind() are refused.
fn connect_plan(req: &Request, to: &str) -> Result<ConnectPlan, BadRequest> {
    let binding = [
        ("PORT", req.port != 0),
        ("--udp", req.udp),
        ("--addr", req.addr.is_some()),
        ("--reuseaddr", req.reuseaddr),
        ("--reuseport", req.reuseport),
        ("--v6only", req.v6only),
        ("--uid", req.uid.is_some()),
        ("--probe", req.probe),
        ("--cgroup", req.cgroup.is_some()),
        ("--container", req.container.is_some()),
    ];
    if let Some((name, _)) = binding.iter().find(|(_, set)| *set) {
        return Err(BadRequest(format!(
            "--connect explains a TCP connect() from an unbound socket: {name} does not apply to it"
        )));
    }
    Ok(ConnectPlan {
        destination: Destination::parse(to).map_err(BadRequest)?,
        netns: namespace(req)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(port: u32) -> Request {
        Request {
            port,
            ..Request::default()
        }
    }

    fn bind(r: &Request) -> Result<BindPlan, BadRequest> {
        match plan(r)? {
            Plan::Bind(p) => Ok(p),
            Plan::Connect(_) => panic!("a port request planned as a connect"),
        }
    }

    #[test]
    fn bad_input_is_one_line_naming_the_fix() {
        for (r, needle) in [
            (req(0), "1 to 65535"),
            (req(70000), "1 to 65535"),
            (
                Request {
                    tcp: true,
                    udp: true,
                    ..req(80)
                },
                "--tcp and --udp",
            ),
            (
                Request {
                    netns: Some("/proc/1/ns/net".into()),
                    pid: Some(1),
                    ..req(80)
                },
                "--netns and --pid",
            ),
            (
                Request {
                    pid: Some(4_194_305),
                    ..req(80)
                },
                "no process with pid 4194305",
            ),
            (
                Request {
                    netns: Some("/run/netns/does-not-exist".into()),
                    ..req(80)
                },
                "/run/netns/does-not-exist",
            ),
            (
                Request {
                    v6only: true,
                    addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    ..req(80)
                },
                "--v6only",
            ),
            (
                Request {
                    uid: Some(u32::MAX),
                    probe: true,
                    ..req(80)
                },
                "uid 4294967295",
            ),
            (
                Request {
                    connect: Some("127.0.0.1:80".into()),
                    ..req(80)
                },
                "PORT does not apply",
            ),
            (
                Request {
                    connect: Some("localhost:80".into()),
                    ..Request::default()
                },
                "not an IP address",
            ),
        ] {
            let e = plan(&r).expect_err("refused").to_string();
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn defaults_are_a_tcp_wildcard_of_the_caller() {
        let p = bind(&req(8080)).expect("plan");
        assert_eq!(p.sock.proto, Proto::Tcp);
        assert_eq!(p.sock.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let p = bind(&Request {
            v6only: true,
            udp: true,
            ..req(8080)
        })
        .expect("plan");
        assert_eq!(p.sock.addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(p.sock.proto, Proto::Udp);
    }

    #[test]
    fn destinations_are_ip_literals_with_a_port() {
        let dest = |s: &str| Destination::parse(s).expect("destination");
        assert_eq!(dest("127.0.0.1:80").port, 80);
        assert_eq!(
            dest("[::1]:80").addr,
            "::1".parse::<IpAddr>().expect("addr")
        );
        assert_eq!(
            dest("[::ffff:10.0.0.1]:80").addr,
            "10.0.0.1".parse::<IpAddr>().expect("addr")
        );
        for (bad, needle) in [
            ("localhost:80", "not an IP address"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "not a port"),
            ("127.0.0.1:70000", "not a port"),
            ("::1:80", "brackets"),
            ("0.0.0.0:80", "unicast"),
            ("noport", "no port"),
        ] {
            let e = Destination::parse(bad).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }
}
