//! The kernel's numbers as types: transport protocol, address family, TCP
//! state, errno and the phase of a port decision. Events carry the raw
//! numbers; records, filters, the explainer and the scenarios use these.
//! Each prints the name the trace schema (docs/trace-schema.md) uses, so
//! output stays readable without a lookup per record.

use std::fmt;

use inspector_common::{AF_INET6, IPPROTO_TCP, IPPROTO_UDP, phase};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transport protocol the inspector follows. The kernel programs only
/// emit TCP and UDP sockets (`is_inet` in inspector-ebpf).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// What a port means unless told otherwise (`balance --proto`).
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    /// From `sk->sk_protocol`; `None` for anything but TCP and UDP.
    pub fn from_kernel(p: u8) -> Option<Self> {
        match p {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    /// From `sk->sk_family`. The kernel programs only emit AF_INET and
    /// AF_INET6 sockets; anything but AF_INET6 reads as IPv4, as its
    /// addresses are decoded.
    pub fn from_kernel(f: u8) -> Self {
        if f == AF_INET6 {
            Self::Inet6
        } else {
            Self::Inet
        }
    }

    /// The family of a socket bound to `addr`: an IPv6 socket keeps an
    /// IPv6 address (v4-mapped for an IPv4 peer), an IPv4 socket an IPv4 one.
    pub fn of(addr: std::net::IpAddr) -> Self {
        if addr.is_ipv6() {
            Self::Inet6
        } else {
            Self::Inet
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inet => "inet",
            Self::Inet6 => "inet6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which call a port decision belongs to (`inspector_common::phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Bind,
    /// `listen()` calls `inet_csk_get_port()` again
    /// (`inet_csk_listen_start`): a bind can succeed and its listen fail.
    Listen,
    /// bind() to port 0, or listen() on an unbound socket: the kernel picks.
    Autobind,
    Connect,
    Unknown,
}

impl Phase {
    pub fn from_kernel(p: u8) -> Self {
        match p {
            phase::BIND => Self::Bind,
            phase::LISTEN => Self::Listen,
            phase::AUTOBIND => Self::Autobind,
            phase::CONNECT => Self::Connect,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::Autobind => "autobind",
            Self::Connect => "connect",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Declares named constants of a newtype over a kernel number and the
/// table that names them.
macro_rules! named_numbers {
    ($ty:ident($raw:ty) { $($name:ident = $value:expr),* $(,)? }) => {
        impl $ty {
            $(pub const $name: Self = Self($value);)*

            /// The symbolic name, if the table knows the value.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }

        impl From<$raw> for $ty {
            fn from(v: $raw) -> Self {
                Self(v)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.name() {
                    Some(n) => s.serialize_str(n),
                    None => s.collect_str(self),
                }
            }
        }

        impl $ty {
            /// The inverse of `Display`: a table name, or the number of a
            /// value the table does not know (`E4095` for an errno, `99`
            /// for a state).
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $(stringify!($name) => Some(Self::$name),)*
                    _ => s.strip_prefix('E').unwrap_or(s).parse::<$raw>().ok().map(Self),
                }
            }
        }

        /// Reads the string `Serialize` writes, so a recorded trace
        /// replays into the same values.
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        concat!("not a ", stringify!($ty), ": {:?}"), s
                    ))
                })
            }
        }
    };
}

/// A TCP state (`sk->sk_state`, `tw->tw_substate`) as numbered in
/// include/net/tcp_states.h. Prints its name (`TIME_WAIT`), or the number
/// for a state this table does not know.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcpState(u8);

named_numbers!(TcpState(u8) {
    ESTABLISHED = 1,
    SYN_SENT = 2,
    SYN_RECV = 3,
    FIN_WAIT1 = 4,
    FIN_WAIT2 = 5,
    TIME_WAIT = inspector_common::TCP_TIME_WAIT,
    CLOSE = 7,
    CLOSE_WAIT = 8,
    LAST_ACK = 9,
    LISTEN = inspector_common::TCP_LISTEN,
    CLOSING = 11,
    NEW_SYN_RECV = 12,
    BOUND_INACTIVE = 13,
});

impl TcpState {
    pub const fn raw(self) -> u8 {
        self.0
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.pad(n),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

/// An errno value as the caller of a syscall saw it (positive). Prints its
/// symbolic name (`EADDRINUSE`), or `E<number>` for one this table does not
/// know. The numbers are the host's (libc), which are the traced kernel's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Errno(i32);

named_numbers!(Errno(i32) {
    EPERM = libc::EPERM,
    ENOENT = libc::ENOENT,
    EINTR = libc::EINTR,
    EBADF = libc::EBADF,
    EAGAIN = libc::EAGAIN,
    ENOMEM = libc::ENOMEM,
    EACCES = libc::EACCES,
    EFAULT = libc::EFAULT,
    EBUSY = libc::EBUSY,
    EINVAL = libc::EINVAL,
    EMFILE = libc::EMFILE,
    ENOTSOCK = libc::ENOTSOCK,
    EDESTADDRREQ = libc::EDESTADDRREQ,
    EPROTONOSUPPORT = libc::EPROTONOSUPPORT,
    EOPNOTSUPP = libc::EOPNOTSUPP,
    EAFNOSUPPORT = libc::EAFNOSUPPORT,
    EADDRINUSE = libc::EADDRINUSE,
    EADDRNOTAVAIL = libc::EADDRNOTAVAIL,
    ENETDOWN = libc::ENETDOWN,
    ENETUNREACH = libc::ENETUNREACH,
    ECONNABORTED = libc::ECONNABORTED,
    ECONNRESET = libc::ECONNRESET,
    ENOBUFS = libc::ENOBUFS,
    EISCONN = libc::EISCONN,
    ENOTCONN = libc::ENOTCONN,
    ETIMEDOUT = libc::ETIMEDOUT,
    ECONNREFUSED = libc::ECONNREFUSED,
    EHOSTUNREACH = libc::EHOSTUNREACH,
    EALREADY = libc::EALREADY,
    EINPROGRESS = libc::EINPROGRESS,
});

impl Errno {
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The errno of a failed syscall; 0 (printed `E0`) when the error
    /// carries none.
    pub fn of(e: &std::io::Error) -> Self {
        Self(e.raw_os_error().unwrap_or(0))
    }

    /// Whether the call failed to get its port. A non-blocking connect()
    /// has picked its port when it returns EINPROGRESS
    /// (`__inet_stream_connect`), so that one is not a failure.
    pub fn is_failure(self) -> bool {
        self.0 != 0 && self != Self::EINPROGRESS
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.pad(n),
            // Unknown values are rare: one small allocation keeps padding.
            None => f.pad(&format!("E{}", self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_match_libc() {
        for (n, name) in [
            (libc::EADDRINUSE, "EADDRINUSE"),
            (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (libc::EINPROGRESS, "EINPROGRESS"),
            (libc::EACCES, "EACCES"),
            (libc::EINVAL, "EINVAL"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
        ] {
            assert_eq!(Errno::from(n).to_string(), name);
            assert_eq!(format!("{:?}", Errno::from(n)), name);
        }
        assert_eq!(Errno::from(4095).to_string(), "E4095");
        assert_eq!(Errno::from(4095).name(), None);
        assert_eq!(format!("{:<12}|", Errno::EACCES), "EACCES      |");
        assert_eq!(
            serde_json::to_string(&[Errno::EADDRINUSE, Errno::from(4095)]).expect("json"),
            r#"["EADDRINUSE","E4095"]"#
        );
    }

    #[test]
    fn einprogress_is_not_a_failure() {
        assert!(!Errno::EINPROGRESS.is_failure());
        assert!(!Errno::from(0).is_failure());
        assert!(Errno::EADDRINUSE.is_failure());
    }

    #[test]
    fn state_names() {
        assert_eq!(TcpState::LISTEN.to_string(), "LISTEN");
        assert_eq!(format!("{:?}", TcpState::TIME_WAIT), "TIME_WAIT");
        assert_eq!(TcpState::CLOSE.to_string(), "CLOSE");
        assert_eq!(TcpState::from(99).to_string(), "99");
        assert_eq!(TcpState::from(99).name(), None);
        assert_eq!(TcpState::from(6), TcpState::TIME_WAIT);
        assert_eq!(
            serde_json::to_string(&[TcpState::FIN_WAIT2, TcpState::from(99)]).expect("json"),
            r#"["FIN_WAIT2","99"]"#
        );
    }

    #[test]
    fn kernel_numbers_decode() {
        assert_eq!(Proto::from_kernel(IPPROTO_UDP), Some(Proto::Udp));
        assert_eq!(Proto::from_kernel(1), None);
        assert_eq!(Family::from_kernel(AF_INET6), Family::Inet6);
        assert_eq!(
            Family::of("::ffff:127.0.0.1".parse().expect("ip")),
            Family::Inet6
        );
        assert_eq!(Family::of("127.0.0.1".parse().expect("ip")), Family::Inet);
        assert_eq!(Phase::from_kernel(phase::AUTOBIND), Phase::Autobind);
        assert_eq!(Phase::from_kernel(0), Phase::Unknown);
        assert_eq!(
            serde_json::to_string(&(Proto::Tcp, Family::Inet6, Phase::Listen)).expect("json"),
            r#"["tcp","inet6","listen"]"#
        );
        assert_eq!(format!("{:<5}|", Proto::Udp), "udp  |");
    }

    #[test]
    fn kernel_numbers_read_back_what_they_print() {
        let errnos = [Errno::EADDRINUSE, Errno::from(4095), Errno::from(0)];
        let json = serde_json::to_string(&errnos).expect("json");
        assert_eq!(
            serde_json::from_str::<Vec<Errno>>(&json).expect("read"),
            errnos
        );
        let states = [TcpState::TIME_WAIT, TcpState::from(99)];
        let json = serde_json::to_string(&states).expect("json");
        assert_eq!(
            serde_json::from_str::<Vec<TcpState>>(&json).expect("read"),
            states
        );
        assert!(serde_json::from_str::<Errno>(r#""EWHAT""#).is_err());
        let t: (Proto, Family, Phase) =
            serde_json::from_str(r#"["udp","inet6","autobind"]"#).expect("read");
        assert_eq!(t, (Proto::Udp, Family::Inet6, Phase::Autobind));
    }
}
