//! What a predicted call returns, and the kernel rule that decides it:
//! the vocabulary the bind rules and the connect model share.

use std::{fmt, io};

use serde::{Serialize, Serializer};

use crate::kernel::Errno;

/// What a `bind()`, `listen()` or `connect()` returns, or would.
///
/// Prints (and serialises) as the trace schema writes a call's result:
/// `ok`, the errno's name (`EADDRINUSE`), or `not_reached` for a call
/// that never happens (`listen()` after a failed `bind()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Err(Errno),
    NotReached,
}

impl Outcome {
    /// From a syscall's errno as the caller saw it: 0 is success.
    pub fn of_errno(errno: i32) -> Self {
        if errno == 0 {
            Self::Ok
        } else {
            Self::Err(Errno::from(errno))
        }
    }

    /// From a syscall's result.
    pub fn of_result<T>(r: &io::Result<T>) -> Self {
        match r {
            Ok(_) => Self::Ok,
            Err(e) => Self::Err(Errno::of(e)),
        }
    }

    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.pad("ok"),
            Self::Err(e) => fmt::Display::fmt(e, f),
            Self::NotReached => f.pad("not_reached"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Compares with the name the outcome prints (its JSON form), for callers
/// that hold a name: `outcome == "ok"`.
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Self::Ok => *other == "ok",
            Self::NotReached => *other == "not_reached",
            Self::Err(e) => e
                .name()
                .map_or_else(|| e.to_string() == *other, |n| n == *other),
        }
    }
}

/// The kernel function and condition behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub function: &'static str,
    pub condition: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_the_trace_schema_does() {
        let all = [
            Outcome::Ok,
            Outcome::Err(Errno::EADDRINUSE),
            Outcome::NotReached,
            Outcome::of_errno(4095),
        ];
        assert_eq!(
            serde_json::to_string(&all).expect("json"),
            r#"["ok","EADDRINUSE","not_reached","E4095"]"#
        );
        assert_eq!(Outcome::of_errno(0), Outcome::Ok);
        assert_eq!(
            Outcome::of_errno(libc::EADDRNOTAVAIL),
            Outcome::Err(Errno::EADDRNOTAVAIL)
        );
        assert!(Outcome::Err(Errno::EACCES) == "EACCES");
        assert!(Outcome::of_errno(4095) == "E4095");
        assert!(Outcome::Ok != "not_reached");
        assert_eq!(format!("{:<12}|", Outcome::NotReached), "not_reached |");
    }
}
