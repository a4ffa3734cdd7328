//! Source map of a YAML file: the line and column of every key and value, by field path.
//!
//! Paths use the same spelling as error messages: `groups.audio-interface.agents[3].port`.
//! Built from `saphyr-parser` events, so it also finds duplicate keys, which serde would
//! silently collapse.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column; column 0 means "the whole line".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            // Line-only places (a script's SyntaxError) print as `path:line`.
            write!(f, "{}", self.line)
        } else {
            write!(f, "{}:{}", self.line, self.column)
        }
    }
}

impl Mark {
    fn from_span(span: &Span) -> Mark {
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: String,
    pub at: Mark,
    pub first: Mark,
}

/// Where every key and value of a document is.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    values: HashMap<String, Mark>,
    keys: HashMap<String, Mark>,
    pub duplicates: Vec<DuplicateKey>,
}

/// A YAML syntax error with its place.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub at: Mark,
    pub message: String,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: HashMap<String, Mark>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// Appends a map key to a path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a sequence index to a path.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

impl SourceMap {
    /// Indexes `text`; fails on YAML syntax errors.
    pub fn build(text: &str) -> Result<SourceMap, SyntaxError> {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| SyntaxError {
                at: Mark {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: e.info().to_string(),
            })?;
            let mark = Mark::from_span(&span);
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key, seen }) = stack.last_mut() {
                        if key.is_none() {
                            let full = join_key(path, &value);
                            if let Some(first) = seen.get(value.as_ref()) {
                                map.duplicates.push(DuplicateKey {
                                    path: full.clone(),
                                    at: mark,
                                    first: *first,
                                });
                            } else {
                                seen.insert(value.to_string(), mark);
                            }
                            map.keys.entry(full).or_insert(mark);
                            *key = Some(value.to_string());
                            continue;
                        }
                    }
                    let path = map.value_path(&mut stack);
                    map.values.entry(path).or_insert(mark);
                }
                Event::Alias(_) => {
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        if key.is_none() {
                            *key = Some("*alias".to_string());
                            continue;
                        }
                    }
                    let path = map.value_path(&mut stack);
                    map.values.entry(path).or_insert(mark);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let path = if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        // A complex key: index it under a placeholder name.
                        *key = Some("?complex".to_string());
                        "?complex".to_string()
                    } else {
                        map.value_path(&mut stack)
                    };
                    map.values.entry(path.clone()).or_insert(mark);
                    stack.push(if is_map {
                        Frame::Map {
                            path,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Frame::Seq { path, index: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Ok(map)
    }

    /// Path of the value that starts now, advancing the parent frame past it.
    fn value_path(&mut self, stack: &mut [Frame]) -> String {
        match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => {
                let k = key.take().unwrap_or_default();
                join_key(path, &k)
            }
            Some(Frame::Seq { path, index }) => {
                let p = join_index(path, *index);
                *index += 1;
                p
            }
        }
    }

    /// Where the value at `path` starts, else the nearest enclosing value that exists.
    pub fn locate(&self, path: &str) -> Option<Mark> {
        let mut p = path;
        loop {
            if let Some(m) = self.values.get(p) {
                return Some(*m);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Whether the file has a value at exactly `path`.
    pub fn has(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    /// Where the key that ends `path` is written (for "unknown field" errors).
    pub fn locate_key(&self, path: &str) -> Option<Mark> {
        self.keys.get(path).copied().or_else(|| self.locate(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_marks_follow_the_document() {
        let text = "hosts:\n  a:\n    address: 1.2.3.4\ngroups:\n  g:\n    agents:\n      - name: x\n        port: 66000\n";
        let m = SourceMap::build(text).unwrap();
        assert_eq!(
            m.locate("groups.g.agents[0].port"),
            Some(Mark {
                line: 8,
                column: 15
            })
        );
        assert_eq!(
            m.locate_key("groups.g.agents[0].port"),
            Some(Mark { line: 8, column: 9 })
        );
        assert_eq!(
            m.locate("hosts.a.address"),
            Some(Mark {
                line: 3,
                column: 14
            })
        );
        // A path that does not exist falls back to its parent.
        assert_eq!(
            m.locate("groups.g.agents[0].missing"),
            Some(Mark { line: 7, column: 9 })
        );
    }

    #[test]
    fn duplicate_keys_are_found() {
        let m = SourceMap::build("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(m.duplicates.len(), 1);
        assert_eq!(m.duplicates[0].path, "a");
        assert_eq!(m.duplicates[0].at, Mark { line: 3, column: 1 });
    }
}
