//! A socket the kernel's tables held at a moment, as the dashboard seeds
//! its panes with it: read from the socket iterators live, or from a
//! recording's snapshot lines in a replay.

use std::net::{IpAddr, SocketAddr};

use crate::{
    kernel::{Proto, TcpState},
    model::record::Record,
};

/// A socket's local address and the options that decide conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
}

impl SockAddr {
    pub fn of(r: &Record) -> Self {
        Self {
            ip: r.laddr,
            port: r.lport,
            reuseaddr: r.reuseaddr,
            reuseport: r.reuseport,
            v6only: r.v6only,
        }
    }
}

/// A socket of the kernel's table, to seed a model with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSock {
    pub proto: Proto,
    pub netns: u32,
    pub addr: SockAddr,
    pub cookie: u64,
    pub owner: Option<(u32, String)>,
    /// `sk_state` as the table had it.
    pub state: TcpState,
    /// Time left on a TIME_WAIT socket's timer; unknown, a whole
    /// TCP_TIMEWAIT_LEN.
    pub tw_left_ns: Option<u64>,
    /// Where a client's connection goes, live or in TIME_WAIT: its local
    /// port is held toward that destination (pane 5).
    pub peer: Option<SocketAddr>,
}
