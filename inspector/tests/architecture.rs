//! The module map of docs/architecture.md, checked: every `crate::` path in
//! `inspector/src` (tests left out) points down the layers, never up or
//! sideways, and no two modules of a layer import each other in a circle.
//! The rule is enforced here rather than by crates so that one build and
//! one binary stay.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The layers, lowest first; a module may use its own folder and any
/// lower layer.
const LAYERS: &[&[&str]] = &[
    &["util"],
    &["kernel"],
    &["model"],
    &["output"],
    &["recording", "explain"],
    &["pipeline"],
    &["scenario"],
    &["commands"],
    &["cli", "fixture", "build_info", "lib", "main"],
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            // A module's unit tests, as a folder (`#[cfg(test)] mod tests;`).
            if path.file_name().is_some_and(|n| n != "tests") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            // A module's unit tests (`#[cfg(test)] mod tests;`).
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The code of a file without its test modules and comments.
fn code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first two segments of every `crate::` path, including the items of
/// `use crate::{a::b, c}` groups.
fn crate_paths(code: &str) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    _ => {}
                }
                if c == ',' && depth == 0 {
                    push(&mut out, &item);
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            push(&mut out, &item);
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            push(&mut out, &path);
        }
    }
    out
}

fn push(out: &mut BTreeSet<(String, Option<String>)>, item: &str) {
    let mut segs = item
        .trim()
        .split("::")
        .map(|s| s.trim().trim_start_matches('{').trim());
    let Some(first) = segs.next().filter(|s| !s.is_empty()) else {
        return;
    };
    let second = segs
        .next()
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty() && s.chars().next().is_some_and(char::is_lowercase));
    out.insert((first.to_owned(), second));
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    // (folder, module) -> modules of the same folder it uses.
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        let top = parts.remove(0);
        let module = parts.first().cloned().unwrap_or_else(|| "mod".into());
        let Some(own) = layer(&top) else {
            wrong.push(format!(
                "{}: a top-level module with no layer",
                rel.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("read");
        for (first, second) in crate_paths(&code(&text)) {
            if first == top {
                if let Some(m) = second.filter(|m| *m != module) {
                    edges
                        .entry((top.clone(), module.clone()))
                        .or_default()
                        .insert(m);
                }
                continue;
            }
            let Some(theirs) = layer(&first) else {
                wrong.push(format!(
                    "{}: uses crate::{first}, which is in no layer",
                    rel.display()
                ));
                continue;
            };
            // The binary's edge (lib, cli, main) wires everything.
            if theirs >= own && own != LAYERS.len() - 1 {
                wrong.push(format!(
                    "{}: uses crate::{first} (layer {theirs}) from layer {own}",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    // No circle between two modules of one folder.
    let mut circles = Vec::new();
    for ((top, a), uses) in &edges {
        for b in uses {
            if edges
                .get(&(top.clone(), b.clone()))
                .is_some_and(|back| back.contains(a))
                && a < b
            {
                circles.push(format!("{top}::{a} <-> {top}::{b}"));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules importing each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn source_files_stay_readable() {
    // About 800 lines: a file that grows past it has two jobs.
    const MAX: usize = 900;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).ok()?.lines().count();
            (n > MAX).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job:\n{}", long.join("\n"));
}
