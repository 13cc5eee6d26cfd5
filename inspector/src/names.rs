//! Readable names for the kernel's numbers: errno values and TCP states.

/// The symbolic name of a Linux errno (x86_64/generic numbering), or
/// `E<number>` for one this table does not know.
pub fn errno_name(errno: i32) -> std::borrow::Cow<'static, str> {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        24 => "EMFILE",
        88 => "ENOTSOCK",
        89 => "EDESTADDRREQ",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => return std::borrow::Cow::Owned(format!("E{errno}")),
    };
    std::borrow::Cow::Borrowed(name)
}

/// errno values that do not mean the port decision failed: a non-blocking
/// connect() has picked its port when it returns EINPROGRESS.
pub fn errno_is_failure(errno: i32) -> bool {
    errno != 0 && errno != 115
}

/// TCP state names as in include/net/tcp_states.h.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => "UNKNOWN",
    }
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

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
            assert_eq!(errno_name(n), name);
        }
        assert_eq!(errno_name(4095), "E4095");
    }

    #[test]
    fn einprogress_is_not_a_failure() {
        assert!(!errno_is_failure(libc::EINPROGRESS));
        assert!(!errno_is_failure(0));
        assert!(errno_is_failure(libc::EADDRINUSE));
    }

    #[test]
    fn state_names() {
        assert_eq!(tcp_state_name(TCP_LISTEN), "LISTEN");
        assert_eq!(tcp_state_name(TCP_TIME_WAIT), "TIME_WAIT");
        assert_eq!(tcp_state_name(TCP_CLOSE), "CLOSE");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }
}
