//! A socket's state as the dashboard names it.

use std::{cmp::Ordering, fmt};

use crate::kernel::{Proto, TcpState};

/// What a socket holding a port is doing, as pane 2 counts it and a
/// detail view lists it: a TCP state (include/net/tcp_states.h), or, where
/// the kernel's number means something else, what it means here
/// ([`HolderState::of`]). The tables keep the kernel's own number
/// ([`TcpState`], one byte in each of up to
/// [`MAX_SOCKETS`](super::MAX_SOCKETS) entries) and name it with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderState {
    /// A TCP socket in this state; a timewait socket is in TIME_WAIT.
    Tcp(TcpState),
    /// Bound to a port, neither listening nor connected (TCP or UDP).
    Bound,
    /// A connected UDP socket.
    Connected,
}

impl HolderState {
    pub const LISTEN: Self = Self::Tcp(TcpState::LISTEN);
    pub const SYN_SENT: Self = Self::Tcp(TcpState::SYN_SENT);
    pub const ESTABLISHED: Self = Self::Tcp(TcpState::ESTABLISHED);
    pub const TIME_WAIT: Self = Self::Tcp(TcpState::TIME_WAIT);

    /// A socket of protocol `proto` whose `sk_state` is `state`. A TCP
    /// socket with a port in TCP_CLOSE is only bound (a closed one has
    /// left the tables); a UDP socket is TCP_CLOSE when only bound and
    /// TCP_ESTABLISHED when connected (`__ip4_datagram_connect()`).
    pub fn of(proto: Option<Proto>, state: TcpState) -> Self {
        match (proto, state) {
            (Some(Proto::Udp), TcpState::ESTABLISHED) => Self::Connected,
            (Some(Proto::Udp), _) | (_, TcpState::CLOSE) => Self::Bound,
            (_, s) => Self::Tcp(s),
        }
    }

    /// The kernel's name (`TIME_WAIT`), `BOUND` or `CONNECTED`; `?` for a
    /// TCP state this build has no name for.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp(s) => s.name().unwrap_or("?"),
            Self::Bound => "BOUND",
            Self::Connected => "CONNECTED",
        }
    }

    /// `ss`'s shorter names (`ESTAB`, `FIN-WAIT-1`), so a row of counts
    /// fits.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Tcp(TcpState::ESTABLISHED) => "ESTAB",
            Self::Tcp(TcpState::SYN_SENT) => "SYN-SENT",
            Self::Tcp(TcpState::SYN_RECV) => "SYN-RECV",
            Self::Tcp(TcpState::FIN_WAIT1) => "FIN-WAIT-1",
            Self::Tcp(TcpState::FIN_WAIT2) => "FIN-WAIT-2",
            Self::Tcp(TcpState::CLOSE_WAIT) => "CLOSE-WAIT",
            Self::Tcp(TcpState::LAST_ACK) => "LAST-ACK",
            other => other.name(),
        }
    }

    /// Where a row of counts puts it: listeners first, then sockets only
    /// bound, then connections in the kernel's order.
    fn rank(self) -> u16 {
        match self {
            Self::LISTEN => 0,
            Self::Bound => 1,
            Self::Connected => 2,
            Self::Tcp(s) => 3 + u16::from(s.raw()),
        }
    }
}

impl Ord for HolderState {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for HolderState {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for HolderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
