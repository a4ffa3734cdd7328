//! Reading the Compose YAML through the config crate's span-keeping tree, and the comments
//! of the raw text (the tree has none).

use agent_config::tree::{Entry, Kind, Node};

/// The node's 1-based line.
pub fn line(n: &Node) -> usize {
    n.mark.line
}

/// The entries of a mapping (duplicates left out), or `None` for another kind.
pub fn entries(n: &Node) -> Option<Vec<&Entry>> {
    match &n.kind {
        Kind::Map(e) => Some(e.iter().filter(|e| !e.removed).collect()),
        _ => None,
    }
}

/// The items of a sequence.
pub fn items(n: &Node) -> Option<&[Node]> {
    match &n.kind {
        Kind::Seq(v) => Some(v),
        _ => None,
    }
}

/// A scalar's text (`None` for a collection).
pub fn scalar(n: &Node) -> Option<&str> {
    match &n.kind {
        Kind::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// Whether the node is a null (`~`, `null`, or nothing).
pub fn is_null(n: &Node) -> bool {
    matches!(&n.kind, Kind::Scalar { text, plain: true, .. } if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
}

/// The text of a key node.
pub fn key_text(e: &Entry) -> String {
    scalar(&e.key).unwrap_or("").to_string()
}

/// The value under `key` of a mapping.
pub fn get<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    entries(n)?
        .into_iter()
        .find(|e| key_text(e) == key)
        .map(|e| &e.value)
}

/// What kind of node this is, for messages.
pub fn kind_name(n: &Node) -> &'static str {
    match &n.kind {
        Kind::Scalar { .. } => "a scalar",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// A scalar or a list of scalars, each with its line.
pub fn strings(n: &Node) -> Option<Vec<(String, usize)>> {
    match &n.kind {
        Kind::Scalar { text, .. } => Some(vec![(text.clone(), line(n))]),
        Kind::Seq(v) => v
            .iter()
            .map(|i| scalar(i).map(|s| (s.to_string(), line(i))))
            .collect(),
        Kind::Map(_) => None,
    }
}

/// Every scalar of the tree (keys left alone) passed through `f`;
/// `f` says whether it changed the text: a changed scalar is a string (not null, not a number).
pub fn map_scalars(n: &mut Node, f: &mut dyn FnMut(&mut String, usize) -> bool) {
    let l = n.mark.line;
    match &mut n.kind {
        Kind::Scalar { text, plain, .. } => {
            if f(text, l) {
                *plain = false;
            }
        }
        Kind::Seq(v) => v.iter_mut().for_each(|c| map_scalars(c, f)),
        Kind::Map(es) => es.iter_mut().for_each(|e| map_scalars(&mut e.value, f)),
    }
}

/// The comment at the end of 1-based line `line` of `lines`, after column `from` (1-based):
/// the text after a `#` that follows whitespace outside quotes.
pub fn trailing_comment(lines: &[&str], line: usize, from: usize) -> Option<String> {
    let text = lines.get(line.checked_sub(1)?)?;
    let chars: Vec<char> = text.chars().collect();
    let mut quote: Option<char> = None;
    for i in from.saturating_sub(1)..chars.len() {
        let c = chars[i];
        match quote {
            Some(qc) if c == qc => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && (i == 0 || chars[i - 1].is_whitespace()) => {
                let s: String = chars[i + 1..].iter().collect();
                return Some(s.trim().to_string());
            }
            None => {}
        }
    }
    None
}

/// The comment lines right above 1-based line `line` (no blank line between), in order.
pub fn leading_comments(lines: &[&str], line: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut l = line.saturating_sub(1);
    while l >= 1 {
        let t = lines.get(l - 1).map(|s| s.trim()).unwrap_or("");
        match t.strip_prefix('#') {
            Some(c) => out.push(c.trim().to_string()),
            None => break,
        }
        l -= 1;
    }
    out.reverse();
    out
}
