//! `--since` and `--until` of a replay: a moment of the recording, given as
//! a wall-clock time (RFC 3339, `2026-12-06T07:00:00Z`) or as an offset
//! from the recording's start (`+90s`, `+1h30m`), turned into the clock of
//! its records (`ts_ns`, CLOCK_MONOTONIC) with its header's pair of clocks.

use std::{fmt, str::FromStr};

use super::Header;

/// One end of a replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Nanoseconds since the Unix epoch.
    Wall(i128),
    /// Nanoseconds after the recording started.
    Offset(u64),
}

/// What `--since`/`--until` accept, for the one-line error.
const FORMS: &str = "an RFC 3339 time (2026-12-06T07:00:00Z) or an offset from the recording's start (+90s, +5m, +1h30m)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMoment(String);

impl fmt::Display for BadMoment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not {FORMS}", self.0)
    }
}

impl std::error::Error for BadMoment {}

impl FromStr for Moment {
    type Err = BadMoment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMoment(s.chars().take(64).collect());
        if let Some(rest) = s.strip_prefix('+') {
            let d: jiff::SignedDuration = rest.parse().map_err(|_| bad())?;
            return u64::try_from(d.as_nanos())
                .map(Self::Offset)
                .map_err(|_| bad());
        }
        let t: jiff::Timestamp = s.parse().map_err(|_| bad())?;
        Ok(Self::Wall(t.as_nanosecond()))
    }
}

impl Moment {
    /// The record time (`ts_ns`) of this moment in the recording `header`
    /// starts; a moment before the recording's clock began is 0.
    pub fn to_record_ns(self, header: &Header) -> u64 {
        match self {
            Self::Offset(ns) => header.start_mono_ns.saturating_add(ns),
            Self::Wall(unix_ns) => {
                let since_start = unix_ns - i128::from(header.start_unix_ns);
                let ns = i128::from(header.start_mono_ns) + since_start;
                u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
            }
        }
    }
}

/// The part of a recording a replay shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<Moment>,
    pub until: Option<Moment>,
}

impl Window {
    /// (since, until) in record time; an open end is 0 or `u64::MAX`.
    pub fn in_record_ns(&self, header: &Header) -> (u64, u64) {
        (
            self.since.map_or(0, |m| m.to_record_ns(header)),
            self.until.map_or(u64::MAX, |m| m.to_record_ns(header)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let mut h = Header::new("tracepoint".into(), "none".into());
        // 2026-12-06T07:00:00Z, and the monotonic clock at 1000 s then.
        h.start_unix_ns = 1_796_540_400_000_000_000;
        h.start_mono_ns = 1_000_000_000_000;
        h
    }

    #[test]
    fn offsets_and_wall_times_become_record_times() {
        let h = header();
        let at = |s: &str| s.parse::<Moment>().expect(s).to_record_ns(&h);
        assert_eq!(at("+0s"), 1_000_000_000_000);
        assert_eq!(at("+90s"), 1_090_000_000_000);
        assert_eq!(at("+1h30m"), 1_000_000_000_000 + 5_400_000_000_000);
        assert_eq!(at("2026-12-06T07:00:00Z"), 1_000_000_000_000);
        assert_eq!(at("2026-12-06T07:01:30Z"), 1_090_000_000_000);
        assert_eq!(at("2026-12-06T08:01:30+01:00"), 1_090_000_000_000);
        // Before the monotonic clock began: the start of time.
        assert_eq!(at("2026-12-05T07:00:00Z"), 0);
    }

    #[test]
    fn anything_else_is_one_clear_error() {
        for bad in [
            "yesterday",
            "+",
            "+-5s",
            "07:00",
            "2026-13-01T00:00:00Z",
            "",
        ] {
            let e = bad.parse::<Moment>().expect_err(bad).to_string();
            assert!(e.contains("RFC 3339") && e.contains("+90s"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_open_window_is_everything() {
        assert_eq!(Window::default().in_record_ns(&header()), (0, u64::MAX));
    }
}
