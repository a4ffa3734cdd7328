//! YAML text written by hand, so the output keeps the Compose file's order and comments.

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A key: plain when it is a simple name, quoted otherwise.
pub fn key(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        q(s)
    }
}

/// A comment line's text: one line of characters YAML can print (no control characters,
/// no U+FFFE or U+FFFF: a parser refuses them even in a comment).
pub fn comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}' | '\u{feff}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Lines of text with indentation.
#[derive(Default)]
pub struct Out {
    pub text: String,
}

impl Out {
    /// Writes `line` at `indent` levels of two spaces.
    pub fn line(&mut self, indent: usize, line: &str) {
        for _ in 0..indent {
            self.text.push_str("  ");
        }
        self.text.push_str(line);
        self.text.push('\n');
    }
}
