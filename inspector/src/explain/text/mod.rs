//! The text form of an explanation, for an operator at a terminal: the
//! sockets on the port rolled up by what they are (state, owner, options)
//! with counts and expiry ranges, at most [`View::limit`] rows, then the
//! verdict, the blockers (rolled up the same way) and the advice, safest
//! first. Prose wraps at the terminal's width.
//!
//! Every line goes out through [`Lines`], which escapes it for the
//! terminal (`crate::util::escape`): process names, cgroup paths and the
//! sentences that quote them come from other processes.

mod bind;
mod connect;
mod rollup;

use std::io::{self, Write};

pub use self::{
    bind::{failure_line, write_bind},
    connect::{summary_line, write_connect},
};
use crate::util::escape;

/// How much to show, and how wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Rows of each rolled-up table (holders, blockers); `None` for all.
    pub limit: Option<usize>,
    /// Columns of the terminal; `None`: lines are not wrapped (a pipe).
    pub width: Option<usize>,
}

/// Lines to a writer, escaped for the terminal and, where the view has a
/// width, prose wrapped to it.
pub(super) struct Lines<'a, W: Write> {
    out: &'a mut W,
    width: Option<usize>,
}

impl<'a, W: Write> Lines<'a, W> {
    pub(super) fn new(out: &'a mut W, view: View) -> Self {
        Self {
            out,
            width: view.width,
        }
    }

    /// One line as it is (tables lay themselves out).
    pub(super) fn line(&mut self, s: &str) -> io::Result<()> {
        writeln!(self.out, "{}", escape::text(s.trim_end()))
    }

    pub(super) fn blank(&mut self) -> io::Result<()> {
        writeln!(self.out)
    }

    /// `head` then `text`, wrapped at spaces; continuation lines are
    /// indented by `indent` columns.
    pub(super) fn para(&mut self, head: &str, indent: usize, text: &str) -> io::Result<()> {
        let text = escape::text(text);
        let head = escape::text(head);
        let Some(width) = self.width else {
            return writeln!(self.out, "{head}{text}");
        };
        for l in wrap(&head, indent, &text, width) {
            writeln!(self.out, "{}", l.trim_end())?;
        }
        Ok(())
    }
}

/// The words of `text`; a command quoted in backticks stays one word, so
/// that it can be copied from one line, and so does a number with its
/// unit (`12 s`) or its name (`uid 0`, `pid 7`).
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut quoted = false;
    for w in text.split(' ').filter(|w| !w.is_empty()) {
        let unit = ["s", "s,", "s;", "s)", "ms", "ms,", "ms;", "ms)"].contains(&w);
        let number = w.starts_with(|c: char| c.is_ascii_digit());
        let glued = |last: &String| {
            (unit && last.ends_with(|c: char| c.is_ascii_digit()))
                || (number && ["uid", "pid", "(uid", "(pid"].contains(&last.as_str()))
        };
        match out.last_mut() {
            Some(last) if quoted || glued(last) => {
                last.push(' ');
                last.push_str(w);
            }
            _ => out.push(w.to_owned()),
        }
        if w.matches('`').count() % 2 == 1 {
            quoted = !quoted;
        }
    }
    out
}

/// `head` + `text` in lines of at most `width` columns where the words
/// allow (a word longer than a line stays whole).
fn wrap(head: &str, indent: usize, text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = head.to_owned();
    let mut len = cur.chars().count();
    let mut empty = true;
    for word in words(text) {
        let word = word.as_str();
        let w = word.chars().count();
        if !empty && len + 1 + w > width {
            lines.push(std::mem::replace(&mut cur, " ".repeat(indent)));
            len = indent;
            empty = true;
        }
        if !empty {
            cur.push(' ');
            len += 1;
        }
        cur.push_str(word);
        len += w;
        empty = false;
    }
    lines.push(cur);
    lines
}

/// A table: columns sized to their content; the last column (a note)
/// follows on the row where it fits the width, else on a line of its own
/// under the row.
pub(super) struct Table {
    pub(super) header: Vec<&'static str>,
    /// Cells of the columns, without the note.
    pub(super) rows: Vec<(Vec<String>, String)>,
    /// Indices of columns that may be left out when the table is too wide,
    /// the first to give way first (their content then goes to the note).
    pub(super) optional: Vec<usize>,
    /// Columns aligned to the right (counts).
    pub(super) right: Vec<usize>,
}

impl Table {
    pub(super) fn write<W: Write>(&self, out: &mut Lines<'_, W>) -> io::Result<()> {
        let cols = self.header.len();
        let mut shown: Vec<usize> = (0..cols).collect();
        let widths = |shown: &[usize]| -> Vec<usize> {
            shown
                .iter()
                .map(|&c| {
                    self.rows
                        .iter()
                        .map(|(cells, _)| {
                            cells.get(c).map_or(0, |s| escape::text(s).chars().count())
                        })
                        .chain([self.header[c].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect()
        };
        let mut w = widths(&shown);
        if let Some(max) = out.width {
            for &c in &self.optional {
                if w.iter().sum::<usize>() + w.len() <= max {
                    break;
                }
                shown.retain(|&s| s != c);
                w = widths(&shown);
            }
        }
        let fixed = w.iter().sum::<usize>() + w.len();
        let fmt = |cells: &[String]| -> String {
            let mut l = String::new();
            for (i, &c) in shown.iter().enumerate() {
                let cell = escape::text(cells.get(c).map_or("", String::as_str)).into_owned();
                let pad = w[i].saturating_sub(cell.chars().count());
                if self.right.contains(&c) {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(&cell);
                } else {
                    l.push_str(&cell);
                    l.push_str(&" ".repeat(pad));
                }
                l.push(' ');
            }
            l
        };
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        out.line(&fmt(&header))?;
        let indent = w.first().map_or(0, |w| w + 1);
        for (cells, note) in &self.rows {
            let mut note = note.clone();
            for &c in &self.optional {
                if !shown.contains(&c)
                    && let Some(v) = cells
                        .get(c)
                        .filter(|v| !v.is_empty() && *v != "-" && *v != "*")
                {
                    let v = format!("{}: {v}", self.header[c].to_lowercase());
                    note = if note.is_empty() {
                        v
                    } else {
                        format!("{v}; {note}")
                    };
                }
            }
            let row = fmt(cells);
            let fits = out
                .width
                .is_none_or(|max| fixed + escape::text(&note).chars().count() <= max);
            if note.is_empty() || fits {
                out.line(&format!("{row}{note}"))?;
            } else {
                out.line(&row)?;
                out.para(&" ".repeat(indent), indent, &note)?;
            }
        }
        Ok(())
    }
}

/// The line that says rows were left out, and how to see them.
pub(super) fn more_rows(hidden_rows: usize, hidden_sockets: usize) -> String {
    format!(
        "... {hidden_rows} more row{} ({hidden_sockets} socket{}): --all lists every row, --json every socket",
        if hidden_rows == 1 { "" } else { "s" },
        if hidden_sockets == 1 { "" } else { "s" },
    )
}

#[cfg(test)]
mod screens;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_wraps_at_spaces_with_a_hanging_indent() {
        let l = wrap("  rule: ", 6, "one two three four five six", 20);
        assert_eq!(l, ["  rule: one two", "      three four", "      five six"]);
        assert!(l.iter().all(|l| l.len() <= 20));
        // A word longer than the line stays whole.
        let l = wrap("x: ", 3, "aaaaaaaaaaaaaaaaaaaaaaaaa b", 10);
        assert_eq!(l, ["x: aaaaaaaaaaaaaaaaaaaaaaaaa", "   b"]);
        // A quoted command is not cut, nor a number from its unit.
        let l = wrap("", 2, "run `ps -o pid -p 7` now", 12);
        assert_eq!(l, ["run", "  `ps -o pid -p 7`", "  now"]);
        let l = wrap("", 2, "free in 12-58 s, then", 14);
        assert_eq!(l, ["free in", "  12-58 s,", "  then"]);
        let l = wrap("", 2, "as uid 65534:", 8);
        assert_eq!(l, ["as", "  uid 65534:"]);
    }

    #[test]
    fn lines_escape_what_other_processes_wrote() {
        let mut buf = Vec::new();
        let mut out = Lines::new(
            &mut buf,
            View {
                limit: None,
                width: Some(40),
            },
        );
        out.line("pid 7 \x1b]2;PWN\x07").expect("write");
        out.para("  advice: ", 4, "stop pid 7 \x1b[2J now")
            .expect("write");
        let s = String::from_utf8(buf).expect("utf-8");
        assert!(!s.contains('\x1b'), "{s}");
        assert!(s.contains("\\x1b]2;PWN\\x07"), "{s}");
    }

    #[test]
    fn a_table_moves_optional_columns_and_long_notes_out_of_the_way() {
        let t = Table {
            header: vec!["COUNT", "STATE", "REMOTE", "OWNER"],
            rows: vec![(
                vec![
                    "50".into(),
                    "TIME_WAIT".into(),
                    "127.0.0.1:*".into(),
                    "-".into(),
                ],
                "a note that is long enough to wrap".into(),
            )],
            optional: vec![2],
            right: vec![0],
        };
        let mut buf = Vec::new();
        t.write(&mut Lines::new(
            &mut buf,
            View {
                limit: None,
                width: Some(30),
            },
        ))
        .expect("write");
        let s = String::from_utf8(buf).expect("utf-8");
        assert!(s.lines().all(|l| l.chars().count() <= 30), "{s}");
        assert!(s.starts_with("COUNT STATE     OWNER"), "{s}");
        assert!(s.contains("remote: 127.0.0.1:*"), "{s}");
        assert!(s.contains("   50 TIME_WAIT -"), "{s}");
    }
}
