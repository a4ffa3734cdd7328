//! The system file as a tree of YAML nodes, each knowing its field path and place.
//!
//! Built from `saphyr-parser` events so that a type error can be pinned to the node it is
//! about, the node can be taken out, and deserialization tried again (see
//! [`crate::load`]). Aliases are expanded, duplicate keys keep their first value, and
//! unsupported tags are reported and their nodes left out.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::locate::{join_index, join_key, Mark};

/// A core-schema tag that changes how a scalar is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreTag {
    Str,
    Int,
    Float,
    Bool,
    Null,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A scalar: its text, whether it was written plain (unquoted), and a core tag.
    Scalar {
        text: String,
        plain: bool,
        tag: Option<CoreTag>,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
    /// Left out of deserialization (a duplicate key, or taken out after an error).
    pub removed: bool,
}

/// The most nodes a document may expand to through its aliases.
pub const MAX_NODES: usize = 200_000;

/// The number of nodes of `n`, itself included.
fn size(n: &Node) -> usize {
    1 + match &n.kind {
        Kind::Scalar { .. } => 0,
        Kind::Seq(items) => items.iter().map(size).sum(),
        Kind::Map(entries) => entries.iter().map(|e| size(&e.key) + size(&e.value)).sum(),
    }
}

/// A node of the document.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique within one tree (an alias's copy gets new ids).
    pub id: usize,
    /// Field path, as the [`crate::locate::SourceMap`] spells it.
    pub path: String,
    pub mark: Mark,
    pub kind: Kind,
    /// Set when this node is a stand-in put here by [`crate::load`]: the candidate number.
    pub placeholder: Option<usize>,
}

/// A problem found while building the tree that is not a syntax error.
#[derive(Debug, Clone)]
pub struct TreeIssue {
    pub path: String,
    pub at: Mark,
    pub message: String,
}

/// A YAML syntax error with its place.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub at: Mark,
    pub message: String,
}

/// The tree of a document, plus what was left out of it.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `None` for an empty document.
    pub root: Option<Node>,
    pub issues: Vec<TreeIssue>,
    next_id: usize,
}

enum Open {
    Seq(Node),
    Map {
        node: Node,
        key: Option<Node>,
        seen: HashMap<String, ()>,
    },
}

fn mark_of(span: &Span) -> Mark {
    Mark {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Reads a tag: `Ok(None)` for no tag or `!` (non-specific), a core tag, or `Err(shown)`.
fn read_tag(tag: Option<&Tag>) -> Result<Option<CoreTag>, String> {
    let Some(t) = tag else { return Ok(None) };
    if t.handle == "!" && t.suffix.is_empty() {
        return Ok(None);
    }
    if t.is_yaml_core_schema() {
        return match t.suffix.as_str() {
            "str" => Ok(Some(CoreTag::Str)),
            "int" => Ok(Some(CoreTag::Int)),
            "float" => Ok(Some(CoreTag::Float)),
            "bool" => Ok(Some(CoreTag::Bool)),
            "null" => Ok(Some(CoreTag::Null)),
            "map" | "seq" => Ok(None),
            other => Err(format!("!!{other}")),
        };
    }
    Err(t.to_string())
}

impl Tree {
    /// Parses `text` (a leading byte order mark is skipped). Only the first document is
    /// read; a second one is an issue.
    pub fn parse(text: &str) -> Result<Tree, SyntaxError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut tree = Tree {
            root: None,
            issues: Vec::new(),
            next_id: 0,
        };
        let mut stack: Vec<Open> = Vec::new();
        // Each anchor's node and its size.
        let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
        // Anchors of collections still open, set when they close.
        let mut open_anchors: Vec<usize> = Vec::new();
        let mut documents = 0;
        let mut parser = Parser::new_from_str(text);
        // The last place an event started: a syntax error at the end of the text is about
        // the construct left open there.
        let mut last_mark = Mark { line: 1, column: 1 };
        while let Some(next) = parser.next_event() {
            let (event, span) = match next {
                Ok(e) => e,
                Err(e) => {
                    let at = Mark {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    };
                    return Err(syntax_error(text, &stack, last_mark, at, e.info()));
                }
            };
            let mark = mark_of(&span);
            let mut finished: Option<(Node, usize)> = None;
            match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents == 2 {
                        tree.issues.push(TreeIssue {
                            path: String::new(),
                            at: mark,
                            message: "a system file holds one YAML document; this second one (after `---`) is not read".into(),
                        });
                    }
                    continue;
                }
                _ if documents > 1 => continue,
                Event::Scalar(value, style, anchor, tag) => {
                    last_mark = mark;
                    let path = tree.child_path(&stack);
                    let tag = match read_tag(tag.as_deref()) {
                        Ok(t) => t,
                        Err(shown) => {
                            tree.issues.push(TreeIssue {
                                path: path.clone(),
                                at: mark,
                                message: format!(
                                    "unsupported YAML tag `{shown}`; remove it (tags are not used in a system file)"
                                ),
                            });
                            tree.skip_value(&mut stack);
                            continue;
                        }
                    };
                    let node = tree.node(
                        path,
                        mark,
                        Kind::Scalar {
                            text: value.to_string(),
                            plain: style == ScalarStyle::Plain,
                            tag,
                        },
                    );
                    finished = Some((node, anchor));
                }
                Event::Alias(id) => {
                    last_mark = mark;
                    let path = tree.child_path(&stack);
                    match anchors.get(&id) {
                        // Aliases of aliases grow exponentially ("billion laughs"): a
                        // document stops at MAX_NODES nodes, far above any system file.
                        Some((_, len)) if tree.next_id + len > MAX_NODES => {
                            tree.issues.push(TreeIssue {
                                path,
                                at: mark,
                                message: format!(
                                    "aliases expand the document past {MAX_NODES} nodes; this one is not expanded"
                                ),
                            });
                            tree.skip_value(&mut stack);
                            continue;
                        }
                        Some((n, _)) => {
                            let mut n = n.clone();
                            tree.renumber(&mut n);
                            finished = Some((n, 0));
                        }
                        None => {
                            tree.issues.push(TreeIssue {
                                path,
                                at: mark,
                                message: "alias to an anchor that is not defined before it".into(),
                            });
                            tree.skip_value(&mut stack);
                            continue;
                        }
                    }
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    last_mark = mark;
                    let is_map = matches!(event, Event::MappingStart(..));
                    let path = tree.child_path(&stack);
                    if let Err(shown) = read_tag(tag.as_deref()) {
                        tree.issues.push(TreeIssue {
                            path: path.clone(),
                            at: mark,
                            message: format!(
                                "unsupported YAML tag `{shown}`; remove it (tags are not used in a system file)"
                            ),
                        });
                    }
                    let node = tree.node(
                        path,
                        mark,
                        if is_map {
                            Kind::Map(Vec::new())
                        } else {
                            Kind::Seq(Vec::new())
                        },
                    );
                    open_anchors.push(anchor);
                    stack.push(if is_map {
                        Open::Map {
                            node,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Open::Seq(node)
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let anchor = open_anchors.pop().unwrap_or(0);
                    let node = match stack.pop() {
                        Some(Open::Seq(n)) | Some(Open::Map { node: n, .. }) => n,
                        None => continue,
                    };
                    finished = Some((node, anchor));
                }
                _ => continue,
            }
            let Some((node, anchor)) = finished else {
                continue;
            };
            if anchor != 0 {
                anchors.insert(anchor, (node.clone(), size(&node)));
            }
            tree.attach(&mut stack, node);
        }
        Ok(tree)
    }

    fn node(&mut self, path: String, mark: Mark, kind: Kind) -> Node {
        self.next_id += 1;
        Node {
            id: self.next_id,
            path,
            mark,
            kind,
            placeholder: None,
        }
    }

    /// A fresh scalar node (for stand-ins).
    pub fn new_scalar(&mut self, path: String, mark: Mark, text: &str) -> Node {
        self.node(
            path,
            mark,
            Kind::Scalar {
                text: text.to_string(),
                plain: false,
                tag: None,
            },
        )
    }

    /// A fresh empty mapping or sequence (for stand-ins).
    pub fn new_collection(&mut self, path: String, mark: Mark, map: bool) -> Node {
        self.node(
            path,
            mark,
            if map {
                Kind::Map(Vec::new())
            } else {
                Kind::Seq(Vec::new())
            },
        )
    }

    fn renumber(&mut self, n: &mut Node) {
        self.next_id += 1;
        n.id = self.next_id;
        match &mut n.kind {
            Kind::Scalar { .. } => {}
            Kind::Seq(items) => items.iter_mut().for_each(|i| self.renumber(i)),
            Kind::Map(entries) => {
                for e in entries {
                    self.renumber(&mut e.key);
                    self.renumber(&mut e.value);
                }
            }
        }
    }

    /// The path of the node that starts now (without advancing anything).
    fn child_path(&self, stack: &[Open]) -> String {
        match stack.last() {
            None => String::new(),
            Some(Open::Seq(n)) => match &n.kind {
                Kind::Seq(items) => join_index(&n.path, items.len()),
                _ => n.path.clone(),
            },
            Some(Open::Map { node, key, .. }) => match key {
                None => format!("{}?key", node.path),
                Some(k) => k.path.clone(),
            },
        }
    }

    /// A value was left out: keep the parent's bookkeeping straight.
    fn skip_value(&mut self, stack: &mut [Open]) {
        if let Some(Open::Map { key, node, .. }) = stack.last_mut() {
            if key.take().is_none() {
                // The key itself was left out: its value follows and is dropped too.
                *key = Some(Node {
                    id: 0,
                    path: format!("{}?skipped", node.path),
                    mark: node.mark,
                    kind: Kind::Scalar {
                        text: String::new(),
                        plain: true,
                        tag: None,
                    },
                    placeholder: Some(usize::MAX),
                });
            }
        } else if let Some(Open::Seq(n)) = stack.last_mut() {
            // Keep the indices of the following items as written.
            let path = match &n.kind {
                Kind::Seq(items) => join_index(&n.path, items.len()),
                _ => return,
            };
            let mark = n.mark;
            let stand_in = Node {
                id: 0,
                path,
                mark,
                kind: Kind::Scalar {
                    text: String::new(),
                    plain: true,
                    tag: None,
                },
                placeholder: Some(usize::MAX),
            };
            if let Kind::Seq(items) = &mut n.kind {
                items.push(stand_in);
            }
        }
    }

    fn attach(&mut self, stack: &mut [Open], mut node: Node) {
        match stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq(parent)) => {
                if let Kind::Seq(items) = &mut parent.kind {
                    items.push(node);
                }
            }
            Some(Open::Map {
                node: parent,
                key,
                seen,
            }) => match key.take() {
                None => {
                    // This node is a key.
                    let Kind::Scalar { text, .. } = &node.kind else {
                        self.issues.push(TreeIssue {
                            path: parent.path.clone(),
                            at: node.mark,
                            message: "a mapping key must be a plain name, not a list or a mapping"
                                .into(),
                        });
                        node.placeholder = Some(usize::MAX);
                        *key = Some(node);
                        return;
                    };
                    node.path = join_key(&parent.path, text);
                    *key = Some(node);
                }
                Some(k) => {
                    if k.placeholder == Some(usize::MAX) {
                        // The key or this value was reported; drop the entry.
                        return;
                    }
                    let Kind::Scalar { text, .. } = &k.kind else {
                        return;
                    };
                    let duplicate = seen.insert(text.clone(), ()).is_some();
                    if let Kind::Map(entries) = &mut parent.kind {
                        entries.push(Entry {
                            key: k,
                            value: node,
                            removed: duplicate,
                        });
                    }
                }
            },
        }
    }

    /// The node with `id`, for changing it.
    pub fn find_mut(&mut self, id: usize) -> Option<&mut Node> {
        fn walk(n: &mut Node, id: usize) -> Option<&mut Node> {
            if n.id == id {
                return Some(n);
            }
            match &mut n.kind {
                Kind::Scalar { .. } => None,
                Kind::Seq(items) => items.iter_mut().find_map(|i| walk(i, id)),
                Kind::Map(entries) => entries.iter_mut().find_map(|e| {
                    if e.key.id == id {
                        Some(&mut e.key)
                    } else {
                        walk(&mut e.value, id)
                    }
                }),
            }
        }
        self.root.as_mut().and_then(|r| walk(r, id))
    }

    /// The parent of the node with `id`: (parent id, whether `id` is a key or value of a
    /// mapping entry).
    pub fn parent_of(&self, id: usize) -> Option<(usize, bool)> {
        fn walk(n: &Node, id: usize) -> Option<(usize, bool)> {
            match &n.kind {
                Kind::Scalar { .. } => None,
                Kind::Seq(items) => items.iter().find_map(|i| {
                    if i.id == id {
                        Some((n.id, false))
                    } else {
                        walk(i, id)
                    }
                }),
                Kind::Map(entries) => entries.iter().find_map(|e| {
                    if e.key.id == id || e.value.id == id {
                        Some((n.id, true))
                    } else {
                        walk(&e.value, id)
                    }
                }),
            }
        }
        self.root.as_ref().and_then(|r| walk(r, id))
    }

    /// Takes the mapping entry whose key or value is `id` out; false if there is none.
    pub fn remove_entry(&mut self, id: usize) -> bool {
        let Some((parent, true)) = self.parent_of(id) else {
            return false;
        };
        let Some(Node {
            kind: Kind::Map(entries),
            ..
        }) = self.find_mut(parent)
        else {
            return false;
        };
        for e in entries.iter_mut() {
            if e.key.id == id || e.value.id == id {
                e.removed = true;
                return true;
            }
        }
        false
    }
}

/// A syntax error placed where the problem is: an unclosed bracket or quote is shown where
/// it was opened, not at the end of the file.
fn syntax_error(text: &str, stack: &[Open], last: Mark, at: Mark, info: &str) -> SyntaxError {
    let at_end = text[line_start(text, at.line)..].trim().is_empty();
    let mut message = info.to_string();
    if info.contains("quoted scalar") {
        if let Some(q) = find_quote(text, last) {
            return SyntaxError {
                at: q,
                message: "unclosed quote: this string has no closing quote".into(),
            };
        }
    }
    // An error on a later line inside a `[` or `{` still open: most likely it was never
    // closed.
    let open_flow = stack.iter().rev().find_map(|o| {
        let n = match o {
            Open::Seq(n) | Open::Map { node: n, .. } => n,
        };
        let c = char_at(text, n.mark)?;
        (c == '[' || c == '{').then_some((n.mark, c))
    });
    if let Some((m, c)) = open_flow {
        if m.line < at.line && !at_end {
            let closer = if c == '[' { ']' } else { '}' };
            return SyntaxError {
                at: m,
                message: format!(
                    "unclosed `{c}`: no matching `{closer}` before line {} ({info} at {at})",
                    at.line
                ),
            };
        }
    }
    if at_end || info.contains("did not find expected ',' or") {
        // The innermost flow collection still open.
        for o in stack.iter().rev() {
            let n = match o {
                Open::Seq(n) | Open::Map { node: n, .. } => n,
            };
            let opener = char_at(text, n.mark);
            if opener == Some('[') || opener == Some('{') {
                let closer = if opener == Some('[') { ']' } else { '}' };
                return SyntaxError {
                    at: n.mark,
                    message: format!(
                        "unclosed `{}`: no matching `{closer}` ({info})",
                        opener.unwrap_or('[')
                    ),
                };
            }
        }
        if at_end {
            message = format!("{info} (near the end of the file)");
        }
    }
    SyntaxError { at, message }
}

/// Byte offset of the start of 1-based `line`.
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}

fn char_at(text: &str, m: Mark) -> Option<char> {
    let start = line_start(text, m.line);
    text[start..].chars().nth(m.column.saturating_sub(1))
}

/// The first quote at or after `from`.
fn find_quote(text: &str, from: Mark) -> Option<Mark> {
    let start = line_start(text, from.line);
    let mut line = from.line;
    let mut col = 1;
    for c in text[start..].chars() {
        if line == from.line && col < from.column {
            col += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            return Some(Mark { line, column: col });
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    None
}
