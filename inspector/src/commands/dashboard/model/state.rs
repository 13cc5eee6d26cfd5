//! A socket's state as the dashboard names it.

use crate::kernel::TcpState;

/// A live socket's state as the dashboard names it, in one byte (a
/// `&'static str` is 16, in each of up to [`MAX_SOCKETS`] entries): a TCP
/// state by its number (include/net/tcp_states.h), or one of the names the
/// dashboard gives sockets the kernel keeps in a state of another meaning
/// (a UDP socket is TCP_CLOSE when only bound, TCP_ESTABLISHED when
/// connected; a TCP one only bound is TCP_CLOSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockState(u8);

impl SockState {
    /// Above every TCP state number (the kernel's end at
    /// TCP_BOUND_INACTIVE, 13), so that no TCP state has these.
    pub const BOUND: Self = Self(0xfe);
    pub const CONNECTED: Self = Self(0xfd);
    /// A TCP state this build has no name for.
    pub const UNKNOWN: Self = Self(0xff);
    pub const LISTEN: Self = Self(TcpState::LISTEN.raw());
    pub const SYN_SENT: Self = Self(TcpState::SYN_SENT.raw());
    pub const ESTABLISHED: Self = Self(TcpState::ESTABLISHED.raw());

    /// A TCP state; one without a name is [`SockState::UNKNOWN`].
    pub fn tcp(state: TcpState) -> Self {
        match state.name() {
            Some(_) => Self(state.raw()),
            None => Self::UNKNOWN,
        }
    }

    /// The state named `name` ([`SockState::name`]'s inverse); a name it
    /// does not know is [`SockState::UNKNOWN`].
    pub fn of(name: &str) -> Self {
        match name {
            "BOUND" => Self::BOUND,
            "CONNECTED" => Self::CONNECTED,
            _ => TcpState::parse(name).map_or(Self::UNKNOWN, Self::tcp),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::BOUND => "BOUND",
            Self::CONNECTED => "CONNECTED",
            Self(n) => TcpState::from(n).name().unwrap_or("?"),
        }
    }
}
