//! Scenario results as text a reader takes in at once: one block per
//! scenario (verdict, claim, what happened, why) and a closing tally.

use std::fmt::Write as _;

use super::{CATALOG, ScenarioResult, Verdict};

const WIDTH: usize = 100;

/// Wraps `text` at [`WIDTH`], indenting continuation lines by `indent`.
fn wrap(out: &mut String, label: &str, text: &str, indent: usize) {
    let mut line = format!("{:indent$}{label:<9}", "", indent = indent);
    let start = line.len();
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > WIDTH && line.len() > start {
            let _ = writeln!(out, "{}", line.trim_end());
            line = " ".repeat(start);
        }
        line.push_str(word);
        line.push(' ');
    }
    let _ = writeln!(out, "{}", line.trim_end());
}

pub fn verdict_label(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Confirmed) => "CONFIRMED",
        Some(Verdict::Refuted) => "REFUTED",
        Some(Verdict::Partly) => "PARTLY TRUE",
        Some(Verdict::Untestable) => "UNTESTABLE",
        None => "DID NOT RUN",
    }
}

/// The text block of one result.
pub fn block(r: &ScenarioResult) -> String {
    let mut out = String::new();
    let check = &r.evidence_check;
    let evidence = if r.error.is_some() {
        String::new()
    } else if check.agrees {
        format!(
            "evidence agrees ({} checks, {} events)",
            check.checked, r.evidence_total
        )
    } else {
        format!(
            "EVIDENCE DISAGREES ({} of {} checks)",
            check.mismatches.len(),
            check.checked
        )
    };
    let _ = writeln!(
        out,
        "{:>2}  {:<38} {:<12} {evidence}",
        r.number,
        r.name,
        verdict_label(r.verdict)
    );
    wrap(&mut out, "setup", r.title, 4);
    let claim = match r.source {
        Some(doc) => format!("\"{}\" ({doc})", r.claim),
        None => format!("{} (own claim, no document states it)", r.claim),
    };
    wrap(&mut out, "claim", &claim, 4);
    wrap(&mut out, "observed", r.summary(), 4);
    if let Some(reason) = &r.reason {
        wrap(&mut out, "reason", reason, 4);
    }
    if let Some(advice) = &r.advice {
        wrap(&mut out, "advice", advice, 4);
    }
    if !r.explanation.is_empty() {
        wrap(&mut out, "why", &r.explanation, 4);
    }
    for m in &check.mismatches {
        wrap(&mut out, "mismatch", m, 4);
    }
    out
}

/// The closing tally. Verdicts count for the documents only where a
/// document made the claim; own claims are counted apart.
pub fn tally(results: &[ScenarioResult]) -> String {
    let documented: Vec<&ScenarioResult> = results.iter().filter(|r| r.source.is_some()).collect();
    let count = |v: Verdict| documented.iter().filter(|r| r.verdict == Some(v)).count();
    let failed = results.iter().filter(|r| r.verdict.is_none()).count();
    let agree = results
        .iter()
        .filter(|r| r.error.is_none() && r.evidence_check.agrees)
        .count();
    let ran = results.len() - failed;
    let mut s = format!(
        "{} document claims: {} confirmed, {} refuted, {} partly true",
        documented.len(),
        count(Verdict::Confirmed),
        count(Verdict::Refuted),
        count(Verdict::Partly)
    );
    let untestable = count(Verdict::Untestable);
    if untestable > 0 {
        let _ = write!(s, ", {untestable} untestable here");
    }
    let own = results.len() - documented.len();
    if own > 0 {
        let _ = write!(
            s,
            " (plus {own} own claim{})",
            if own == 1 { "" } else { "s" }
        );
    }
    if failed > 0 {
        let _ = write!(s, ", {failed} did not run");
    }
    let _ = write!(
        s,
        "; the kernel's evidence agrees with the driver in {agree} of {ran}"
    );
    s
}

/// `scenario list` as text.
pub fn list() -> String {
    let mut out = String::new();
    for s in CATALOG {
        let _ = writeln!(out, "{:>2}  {:<38} {}", s.number, s.name, s.title);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_lines_short_and_words_whole() {
        let mut out = String::new();
        let text = "word ".repeat(60);
        wrap(&mut out, "claim", &text, 4);
        assert!(out.lines().all(|l| l.len() <= WIDTH), "{out}");
        assert!(
            out.lines().skip(1).all(|l| l.starts_with(&" ".repeat(13))),
            "{out}"
        );
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 60);
    }

    #[test]
    fn list_names_every_scenario() {
        let l = list();
        assert_eq!(l.lines().count(), CATALOG.len());
        assert!(l.contains("restart-over-time-wait"));
    }
}
