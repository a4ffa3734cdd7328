//! Typed deserialization that goes on after an error: the node a type error is about is
//! reported, taken out (or replaced by a stand-in where the field is required), and the
//! file read again, so one bad field does not hide the others.

use std::path::Path;

use serde::Deserialize;

use crate::de::DeError;
use crate::load::covered;
use crate::locate::{join_key, Mark};
use crate::model::System;
use crate::report::Finding;
use crate::tree::{Entry, Kind, Node, Tree};

/// At most this many tries: every try takes out or replaces one node, so a file with this
/// many errors still ends; the rest are not reported.
const MAX_TRIES: usize = 400;

/// Stand-ins for a required field whose value could not be read, tried in turn: a string
/// (names, paths, commands), a role, an empty mapping, an empty list.
const STAND_INS: usize = 4;

/// The text of the first stand-in: a finding that quotes it is about a value already
/// reported as unreadable.
pub const UNREADABLE: &str = "(unreadable)";

fn stand_in(tree: &mut Tree, n: usize, path: String, mark: Mark) -> Option<Node> {
    let mut node = match n {
        0 => tree.new_scalar(path, mark, UNREADABLE),
        1 => tree.new_scalar(path, mark, "secondary"),
        2 => tree.new_collection(path, mark, true),
        3 => tree.new_collection(path, mark, false),
        _ => return None,
    };
    node.placeholder = Some(n);
    Some(node)
}

/// What is known about the node an error is about.
struct At {
    id: usize,
    path: String,
    mark: Mark,
    placeholder: Option<usize>,
    is_key: bool,
    in_map: bool,
}

fn describe(tree: &Tree, id: usize) -> Option<At> {
    let root = tree.root.as_ref()?;
    fn walk(n: &Node, id: usize) -> Option<&Node> {
        if n.id == id {
            return Some(n);
        }
        match &n.kind {
            Kind::Scalar { .. } => None,
            Kind::Seq(items) => items.iter().find_map(|i| walk(i, id)),
            Kind::Map(entries) => entries.iter().find_map(|e: &Entry| {
                if e.key.id == id {
                    Some(&e.key)
                } else {
                    walk(&e.value, id)
                }
            }),
        }
    }
    let node = walk(root, id)?;
    let parent = tree.parent_of(id);
    let is_key = parent.is_some_and(|(p, in_map)| {
        in_map
            && walk(root, p).is_some_and(|pn| match &pn.kind {
                Kind::Map(entries) => entries.iter().any(|e| e.key.id == id),
                _ => false,
            })
    });
    Some(At {
        id,
        path: node.path.clone(),
        mark: node.mark,
        placeholder: node.placeholder,
        is_key,
        in_map: parent.is_some_and(|(_, m)| m),
    })
}

/// Deserializes the tree into a [`System`], reporting each error once and working around
/// it; `hidden` gets every path that was taken out or replaced.
pub fn deserialize(
    tree: &mut Tree,
    path: &Path,
    hidden: &mut Vec<String>,
    findings: &mut Vec<Finding>,
) -> Option<System> {
    for _ in 0..MAX_TRIES {
        let root = tree.root.as_ref()?;
        let err: DeError = match System::deserialize(root) {
            Ok(s) => return Some(s),
            Err(e) => e,
        };
        let at = err.node.and_then(|id| describe(tree, id));
        let Some(at) = at else {
            findings.push(Finding::error("type", err.message).in_file(path, None));
            return None;
        };
        if let Some(field) = &err.missing {
            // A required field is absent (or was taken out after its own error).
            let full = join_key(&at.path, field);
            if !covered(hidden, &full) && !covered(hidden, &at.path) {
                let mut f = Finding::error("missing-field", format!("missing field `{field}`"))
                    .in_file(path, Some(at.mark));
                if !at.path.is_empty() {
                    f = f.field(at.path.clone());
                }
                findings.push(f);
            }
            hidden.push(full.clone());
            let key = tree.new_scalar(full.clone(), at.mark, field);
            let value = stand_in(tree, 0, full, at.mark)?;
            match tree.find_mut(at.id) {
                Some(Node {
                    kind: Kind::Map(entries),
                    ..
                }) => entries.push(Entry {
                    key,
                    value,
                    removed: false,
                }),
                _ => return None,
            }
            continue;
        }
        if !covered(hidden, &at.path) {
            let code = if err.message.starts_with("unknown field") {
                "unknown-field"
            } else {
                "type"
            };
            let mut f = Finding::error(code, humanize_at(&err.message, &at.path))
                .in_file(path, Some(at.mark));
            if !at.path.is_empty() {
                f = f.field(at.path.clone());
            }
            findings.push(f);
        }
        if at.path.is_empty() {
            return None;
        }
        hidden.push(at.path.clone());
        if !work_around(tree, at) {
            return None;
        }
    }
    None
}

/// Takes the node out, or puts the next stand-in in its place; when no stand-in fits, does
/// the same to its parent. False when nothing is left to try.
fn work_around(tree: &mut Tree, at: At) -> bool {
    let mut at = at;
    loop {
        if at.is_key || (at.in_map && at.placeholder.is_none()) {
            return tree.remove_entry(at.id);
        }
        let next = at.placeholder.map_or(0, |n| n + 1);
        if next < STAND_INS {
            let Some(node) = stand_in(tree, next, at.path.clone(), at.mark) else {
                return false;
            };
            if let Some(slot) = tree.find_mut(at.id) {
                *slot = node;
                return true;
            }
            return false;
        }
        // No stand-in fits: give up on the parent instead.
        let Some((parent, _)) = tree.parent_of(at.id) else {
            return false;
        };
        match describe(tree, parent) {
            Some(p) if !p.path.is_empty() => at = p,
            _ => return false,
        }
    }
}

/// Fields whose range is narrower than their Rust type's: serde would name the type's.
const RANGES: &[(&str, &str, &str)] = &[
    (
        ".cpu_weight",
        "a whole number 0-65535",
        "a CPU weight 1-10000",
    ),
    (
        ".pids",
        "a whole number 0 or more",
        "a whole number 1 or more",
    ),
];

/// [`humanize`], with the range of the field at `path` where it is not its type's.
fn humanize_at(message: &str, path: &str) -> String {
    let text = humanize(message);
    for (suffix, wide, narrow) in RANGES {
        if path.ends_with(suffix) {
            if let Some(rest) = text.strip_prefix(&format!("expected {wide}")) {
                return format!("expected {narrow}{rest}");
            }
        }
    }
    text
}

/// Serde's wording made plainer: `invalid type: map, expected u32` becomes
/// `expected a whole number 0-4294967295, got a mapping`.
fn humanize(message: &str) -> String {
    fn expected(e: &str) -> String {
        match e {
            "u8" => "a whole number 0-255".into(),
            "u16" => "a whole number 0-65535".into(),
            "u32" => "a whole number 0-4294967295".into(),
            "u64" => "a whole number 0 or more".into(),
            "i64" | "i32" => "a whole number".into(),
            "a boolean" => "true or false".into(),
            "a map" => "a mapping".into(),
            "a sequence" => "a list".into(),
            // `struct Resources`, a Rust type's name: the file has a mapping there.
            e if e.starts_with("struct ") => "a mapping".into(),
            other => other.to_string(),
        }
    }
    fn got(g: &str) -> String {
        if let Some(s) = g.strip_prefix("string ") {
            return s.to_string();
        }
        for p in ["integer ", "floating point ", "boolean "] {
            if let Some(v) = g.strip_prefix(p) {
                return v.trim_matches('`').to_string();
            }
        }
        match g {
            "map" => "a mapping".into(),
            "sequence" => "a list".into(),
            "unit value" => "nothing (an empty value)".into(),
            other => other.to_string(),
        }
    }
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(kind) {
            if let Some((g, e)) = rest.split_once(", expected ") {
                return format!("expected {}, got {}", expected(e), got(g));
            }
        }
    }
    message.to_string()
}
