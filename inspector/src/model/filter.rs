//! Which records a user asked to see.

use std::{ops::RangeInclusive, str::FromStr};

use crate::kernel::{Proto, TcpState};
use crate::model::record::{Record, RecordType};

/// `--port 80,443,8000-8100`: a list of ports and inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet(Vec<RangeInclusive<u16>>);

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(&port))
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("empty entry in port list {s:?}"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!("port range {part} is backwards (write {hi}-{lo})"));
            }
            ranges.push(lo..=hi);
        }
        Ok(Self(ranges))
    }
}

fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range (1-65535)")),
        Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// The kernel keeps a task's name in `TASK_COMM_LEN` (16) bytes with a
/// terminating NUL (`__set_task_comm()` truncates): a longer name given on
/// the command line is compared by the 15 bytes the kernel kept.
const COMM_MAX: usize = 15;

fn kernel_comm(name: &str) -> &[u8] {
    &name.as_bytes()[..name.len().min(COMM_MAX)]
}

/// All filters of `trace` and the dashboard. Empty means "everything".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ports: Option<PortSet>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Network namespace inode (from `--netns PATH`).
    pub netns: Option<u32>,
    pub proto: Option<Proto>,
    pub failures_only: bool,
    /// cgroup v2 path prefix, relative to the v2 root (`--cgroup`).
    pub cgroup: Option<String>,
    /// Container id prefix (`--container`).
    pub container: Option<String>,
    /// TCP state changes only into LISTEN, SYN_RECV or CLOSE, where a
    /// socket's life begins or ends (`trace` without `--states`); the
    /// kernel then leaves the others unreported.
    pub lifecycle_states: bool,
    /// Decisions only (`trace` without `--connections`): no successful
    /// connect() or accept() and no state change but a listener's own.
    /// Failures, bind/listen, TIME_WAIT and SO_REUSEPORT records all stay.
    pub decisions_only: bool,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(ports) = &self.ports {
            let req = r.req_port.filter(|&p| p != 0);
            if !ports.contains(r.lport)
                && !ports.contains(r.rport)
                && !req.is_some_and(|p| ports.contains(p))
            {
                return false;
            }
        }
        if let Some(pid) = self.pid
            && r.pid != Some(pid)
            && r.last_pid != Some(pid)
        {
            return false;
        }
        if let Some(comm) = &self.comm {
            let want = kernel_comm(comm);
            let hit = |c: &Option<String>| c.as_deref().is_some_and(|c| c.as_bytes() == want);
            if !hit(&r.comm) && !hit(&r.last_comm) {
                return false;
            }
        }
        if self.netns.is_some_and(|n| n != r.netns) {
            return false;
        }
        if self.proto.is_some_and(|p| Some(p) != r.proto) {
            return false;
        }
        if self.failures_only && !r.is_failure() {
            return false;
        }
        if self.decisions_only
            && match r.kind {
                RecordType::Connect | RecordType::Accept => !r.is_failure(),
                RecordType::State => !matches!(
                    (r.old_state, r.new_state),
                    (Some(old), Some(new)) if inspector_common::listener_change(old.raw(), new.raw())
                ),
                _ => false,
            }
        {
            return false;
        }
        if self.lifecycle_states
            && r.kind == RecordType::State
            && !matches!(
                r.new_state,
                Some(TcpState::LISTEN | TcpState::SYN_RECV | TcpState::CLOSE)
            )
        {
            return false;
        }
        if let Some(want) = &self.cgroup
            && !r
                .cgroup
                .as_deref()
                .is_some_and(|c| c.starts_with(want.as_str()))
        {
            return false;
        }
        if let Some(want) = &self.container
            && !r
                .container
                .as_deref()
                .is_some_and(|c| c.starts_with(want.as_str()))
        {
            return false;
        }
        true
    }

    /// Whether a socket of the kernel's tables (a snapshot's, a seed's)
    /// is one the filter keeps: by the namespace, the protocol, its local
    /// port or its peer's, and its owner's pid and name. Nothing else
    /// judges a socket (it has no failure, and its cgroup is not read).
    pub fn matches_socket(&self, s: &crate::model::seed::SeedSock) -> bool {
        let port = |p: u16| self.ports.as_ref().is_none_or(|set| set.contains(p));
        let owner = s.owner.as_ref();
        self.netns.is_none_or(|n| n == s.netns)
            && self.proto.is_none_or(|p| p == s.proto)
            && (port(s.addr.port) || s.peer.is_some_and(|peer| port(peer.port())))
            && self.pid.is_none_or(|p| owner.is_some_and(|o| o.0 == p))
            && self
                .comm
                .as_deref()
                .is_none_or(|c| owner.is_some_and(|o| o.1.as_bytes() == kernel_comm(c)))
    }

    /// A short description for headers: "port 80,443 · tcp" or "none".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.ports {
            let list: Vec<String> =
                p.0.iter()
                    .map(|r| {
                        if r.start() == r.end() {
                            r.start().to_string()
                        } else {
                            format!("{}-{}", r.start(), r.end())
                        }
                    })
                    .collect();
            parts.push(format!("port {}", list.join(",")));
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if let Some(c) = &self.comm {
            parts.push(format!("comm {c}"));
        }
        if let Some(n) = self.netns {
            parts.push(format!("netns {n}"));
        }
        if let Some(p) = self.proto {
            parts.push(p.as_str().to_owned());
        }
        if self.failures_only {
            parts.push("failures only".to_owned());
        }
        if let Some(c) = &self.cgroup {
            parts.push(format!("cgroup {c}"));
        }
        if let Some(c) = &self.container {
            parts.push(format!("container {c}"));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(" · ")
        }
    }
}

#[cfg(test)]
mod tests {
    use inspector_common::{AF_INET, Event, IPPROTO_TCP, kind};

    use super::*;
    use crate::model::record::{RecordType, decode_bind};

    #[test]
    fn port_lists_and_ranges() {
        let p: PortSet = "80, 443,8000-8100".parse().expect("valid");
        assert!(p.contains(80) && p.contains(443) && p.contains(8000) && p.contains(8100));
        assert!(!p.contains(81) && !p.contains(8101));
    }

    #[test]
    fn bad_port_specs_are_refused_with_a_reason() {
        assert!("0".parse::<PortSet>().unwrap_err().contains("out of range"));
        assert!(
            "70000"
                .parse::<PortSet>()
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            "http"
                .parse::<PortSet>()
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            "90-80"
                .parse::<PortSet>()
                .unwrap_err()
                .contains("backwards")
        );
        assert!("80,,81".parse::<PortSet>().unwrap_err().contains("empty"));
    }

    #[test]
    fn a_comm_longer_than_the_kernel_keeps_matches_by_its_first_15_bytes() {
        let mut r = record(80, 0, 1);
        r.comm = Some("postgres-replic".into());
        let f = |c: &str| Filter {
            comm: Some(c.into()),
            ..Filter::default()
        };
        assert!(f("postgres-replication-worker").matches(&r));
        assert!(f("postgres-replic").matches(&r));
        assert!(!f("postgres-repl").matches(&r));
    }

    fn record(lport: u16, errno: i32, pid: u32) -> Record {
        let mut ev = Event::zeroed();
        ev.kind = kind::BIND;
        ev.family = AF_INET;
        ev.proto = IPPROTO_TCP;
        ev.lport = lport;
        ev.req_port = lport;
        ev.errno = errno;
        ev.netns = 7;
        let mut r = decode_bind(&ev, RecordType::Bind);
        r.pid = Some(pid);
        r.comm = Some("srv".into());
        r
    }

    #[test]
    fn sockets_are_judged_by_namespace_protocol_ports_and_owner() {
        use crate::model::seed::{SeedSock, SockAddr};
        let s = SeedSock {
            proto: Proto::Tcp,
            netns: 8,
            addr: SockAddr {
                ip: "127.0.0.1".parse().expect("ip"),
                port: 40000,
                reuseaddr: false,
                reuseport: false,
                v6only: false,
            },
            cookie: 1,
            owner: Some((42, "client".into())),
            state: TcpState::ESTABLISHED,
            tw_left_ns: None,
            peer: Some("10.0.0.1:443".parse().expect("peer")),
        };
        let ports = |p: &str| Some(p.parse::<PortSet>().expect("ports"));
        let keeps = |f: Filter| f.matches_socket(&s);
        assert!(keeps(Filter::default()));
        assert!(keeps(Filter {
            ports: ports("443"),
            netns: Some(8),
            proto: Some(Proto::Tcp),
            pid: Some(42),
            comm: Some("client".into()),
            // A socket has no failure: not judged by it.
            failures_only: true,
            ..Filter::default()
        }));
        assert!(!keeps(Filter {
            ports: ports("80"),
            ..Filter::default()
        }));
        assert!(!keeps(Filter {
            netns: Some(9),
            ..Filter::default()
        }));
        assert!(!keeps(Filter {
            proto: Some(Proto::Udp),
            ..Filter::default()
        }));
        assert!(!keeps(Filter {
            pid: Some(7),
            ..Filter::default()
        }));
    }

    #[test]
    fn filters_combine() {
        let r = record(8080, libc::EADDRINUSE, 42);
        assert!(Filter::default().matches(&r));
        let f = Filter {
            ports: Some("8080".parse().expect("valid")),
            ..Filter::default()
        };
        assert!(f.matches(&r));
        let f = Filter {
            ports: Some("80".parse().expect("valid")),
            ..Filter::default()
        };
        assert!(!f.matches(&r));
        assert!(
            Filter {
                pid: Some(42),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                pid: Some(43),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            Filter {
                comm: Some("srv".into()),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                netns: Some(8),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                proto: Some(Proto::Udp),
                ..Filter::default()
            }
            .matches(&r)
        );
        let failures = Filter {
            failures_only: true,
            ..Filter::default()
        };
        assert!(failures.matches(&r));
        assert!(!failures.matches(&record(8080, 0, 42)));
        assert!(!failures.matches(&record(8080, libc::EINPROGRESS, 42)));
    }

    #[test]
    fn cgroup_and_container_are_prefixes() {
        let mut r = record(8080, 0, 42);
        let cg = |c: &str| Filter {
            cgroup: Some(c.into()),
            ..Filter::default()
        };
        let ct = |c: &str| Filter {
            container: Some(c.into()),
            ..Filter::default()
        };
        // Unknown cgroup: only an unfiltered view shows it.
        assert!(!cg("/").matches(&r) && !ct("3f").matches(&r));
        r.cgroup = Some("/system.slice/docker-3f4e15.scope".into());
        r.container = Some("3f4e15".into());
        assert!(cg("/system.slice").matches(&r));
        assert!(cg("/system.slice/docker-3f").matches(&r));
        assert!(!cg("/user.slice").matches(&r));
        assert!(ct("3f4e").matches(&r) && !ct("4e").matches(&r));
        assert_eq!(
            Filter {
                cgroup: Some("/a".into()),
                container: Some("b".into()),
                ..Filter::default()
            }
            .describe(),
            "cgroup /a · container b"
        );
    }
}
