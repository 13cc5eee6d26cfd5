//! The README and the documents it links stay true to the binary: every
//! `inspector` command the README shows parses (run with `--help` after
//! its arguments, so an unknown flag or a bad value fails), and every
//! relative link points at a file of the repository.

mod common;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The `inspector ...` commands of a Markdown text: those in code spans
/// and those at the start of a line of a shell code block, without `sudo`
/// and without a trailing `# comment`.
fn commands(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Outside a block: None; inside: whether it is shell.
    let mut block: Option<bool> = None;
    for line in md.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(fence == "sh"),
            };
            continue;
        }
        if let Some(shell) = block {
            if !shell {
                continue;
            }
            let l = line.split(" #").next().unwrap_or_default().trim();
            let l = l.strip_prefix("sudo ").unwrap_or(l);
            if l == "inspector" || l.starts_with("inspector ") {
                out.push(l.to_owned());
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            // Odd pieces are inside a code span.
            let span = span.strip_prefix("sudo ").unwrap_or(span);
            if i % 2 == 1 && (span == "inspector" || span.starts_with("inspector ")) {
                out.push(span.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_readme_command_parses() {
    let md = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let cmds = commands(&md);
    assert!(cmds.len() >= 10, "the README shows its commands: {cmds:?}");
    for c in &cmds {
        let mut args: Vec<&str> = c.split_whitespace().skip(1).collect();
        args.push("--help");
        let out = common::inspector(&args).output().expect("run inspector");
        assert!(
            out.status.success(),
            "README command `{c}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `[text](target)` links of a Markdown text, outside code.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let root = root();
    let mut docs = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let mut broken = Vec::new();
    for doc in &docs {
        let md = std::fs::read_to_string(doc).expect("read");
        for link in links(&md) {
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            let target = doc.parent().expect("dir").join(file);
            if !target.exists() {
                broken.push(format!("{}: {link}", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_an_operators_page() {
    let md = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = md.lines().count();
    assert!(
        lines < 300,
        "README.md has {lines} lines: move detail to docs/"
    );
}
