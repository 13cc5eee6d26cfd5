//! The `/` filter: what the panes keep.

use std::collections::BTreeMap;

use crate::model::record::Record;

/// What the `/` filter keeps: one term, or several that must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewFilter {
    Port(u16),
    Pid(u32),
    Comm(String),
    /// A namespace by inode or by its `/run/netns` name.
    Netns(String),
    /// A failure's errno name (`EADDRINUSE`), any case.
    Errno(String),
    All(Vec<ViewFilter>),
}

impl ViewFilter {
    /// `8080`, `port 8080`, `pid 42`, `comm nginx`, `netns blue`,
    /// `errno EADDRINUSE`, a bare name, or several of them
    /// (`port 8080 errno eaddrinuse`).
    pub fn parse(s: &str) -> Option<Self> {
        let mut terms = Vec::new();
        let mut words = s.split_whitespace();
        while let Some(w) = words.next() {
            let term = match w {
                "port" | "pid" | "comm" | "netns" | "errno" => {
                    let value = words.next()?;
                    match w {
                        "port" => Self::Port(value.parse().ok().filter(|p| *p != 0)?),
                        "pid" => Self::Pid(value.parse().ok()?),
                        "comm" => Self::Comm(value.to_owned()),
                        "netns" => Self::Netns(value.to_owned()),
                        _ => Self::Errno(value.to_ascii_uppercase()),
                    }
                }
                _ => match w.parse::<u16>() {
                    Ok(p) if p != 0 => Self::Port(p),
                    _ => Self::Comm(w.to_owned()),
                },
            };
            terms.push(term);
        }
        match terms.len() {
            0 => None,
            1 => terms.pop(),
            _ => Some(Self::All(terms)),
        }
    }

    fn netns_is(want: &str, netns: u32, names: &BTreeMap<u32, String>) -> bool {
        netns.to_string() == want || names.get(&netns).is_some_and(|n| n == want)
    }

    pub fn matches(&self, r: &Record, names: &BTreeMap<u32, String>) -> bool {
        match self {
            Self::Port(p) => r.lport == *p || r.rport == *p || r.req_port == Some(*p),
            Self::Pid(p) => r.pid == Some(*p) || r.last_pid == Some(*p),
            Self::Comm(c) => r.comm.as_deref() == Some(c) || r.last_comm.as_deref() == Some(c),
            Self::Netns(n) => Self::netns_is(n, r.netns, names),
            Self::Errno(e) => r.errno.is_some_and(|x| x.to_string() == *e),
            Self::All(terms) => terms.iter().all(|t| t.matches(r, names)),
        }
    }

    /// Whether a port (or a group on it) with these owners passes; an
    /// errno term says nothing about a port and keeps it.
    pub fn matches_port(
        &self,
        proto_port: (u16, u32),
        owners: &[&(u32, String)],
        names: &BTreeMap<u32, String>,
    ) -> bool {
        let (port, netns) = proto_port;
        match self {
            Self::Port(p) => port == *p,
            Self::Pid(p) => owners.iter().any(|(pid, _)| pid == p),
            Self::Comm(c) => owners.iter().any(|(_, comm)| comm == c),
            Self::Netns(n) => Self::netns_is(n, netns, names),
            Self::Errno(_) => true,
            Self::All(terms) => terms
                .iter()
                .all(|t| t.matches_port(proto_port, owners, names)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Port(p) => format!("port {p}"),
            Self::Pid(p) => format!("pid {p}"),
            Self::Comm(c) => format!("comm {c}"),
            Self::Netns(n) => format!("netns {n}"),
            Self::Errno(e) => format!("errno {e}"),
            Self::All(terms) => terms
                .iter()
                .map(Self::describe)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}
