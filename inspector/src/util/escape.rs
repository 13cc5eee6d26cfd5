//! Strings from other processes and from the kernel (process names,
//! cgroup paths, namespace names, host names, explanations that quote
//! them) made safe for a terminal or a log line: a control character
//! (C0, DEL, C1) or a bidirectional override is shown as `\xNN` /
//! `\u{NNNN}` instead of reaching the terminal, where it could retitle or
//! clear it, or, as a newline, forge a log line of its own. JSON and metric
//! labels escape by their own rules and do not come through here.

use std::{borrow::Cow, fmt};

/// Whether `c` must not reach a terminal as it is.
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        // Bidirectional embeddings, overrides and isolates: they reorder
        // what follows them on the line.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character escaped; borrowed when there is none
/// (the common case: no copy).
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push(&mut out, c);
    }
    Cow::Owned(out)
}

fn push(out: &mut String, c: char) {
    use fmt::Write as _;
    if !unsafe_char(c) {
        out.push(c);
    } else if (c as u32) < 0x100 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:04x}}}", c as u32);
    }
}

/// A `Display` of a string, escaped as [`text`] does.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match text(self.0) {
            Cow::Borrowed(s) => f.pad(s),
            Cow::Owned(s) => f.pad(&s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass() {
        let pwn = "\u{1b}]2;PWN\u{7}\u{1b}[2J";
        let e = text(pwn);
        assert_eq!(e, "\\x1b]2;PWN\\x07\\x1b[2J");
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(text("x\ninspector: OK"), "x\\x0ainspector: OK");
        assert_eq!(text("a\u{9b}b\u{7f}"), "a\\x9bb\\x7f");
        assert_eq!(text("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert!(matches!(text("nginx: worker"), Cow::Borrowed(_)));
        assert_eq!(format!("{:<8}|", Escaped("a\tb")), "a\\x09b  |");
    }
}
