//! A YAML writer for manifests that every YAML reader reads the same way.
//!
//! Kubernetes reads manifests as YAML 1.1 (`sigs.k8s.io/yaml`, like PyYAML), where a plain
//! `no`, `on` or `y` is a boolean; YAML 1.2 writers (`serde_yaml_ng`) leave them plain, so
//! `redis-server --appendonly no` became `[..., false]`. Here every string is written plain
//! only when it cannot be read as anything but a string, and double-quoted (JSON escapes,
//! which YAML's double-quoted style shares) otherwise.

use serde_json::Value;

/// Strings YAML 1.1 reads as booleans or null.
const YAML11_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
];

/// Whether `s` may be written as a plain scalar.
fn plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false; // numbers, `.5`, `-x`, `*alias`, `&anchor`, `!tag`, quotes, ...
    }
    if YAML11_WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    // `:` only inside (`image:tag`): a trailing one would start a mapping.
    !s.ends_with(':')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '@' | '=' | '+' | ':')
        })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain(s) => s.clone(),
        // A JSON string is a YAML double-quoted scalar.
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// `v` as a YAML document body (no `---`).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(&mut out, v, 0);
    out
}

fn emit(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let key = scalar(&Value::String(k.clone()));
                if is_block(val) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    let child = if val.is_array() { indent } else { indent + 2 };
                    emit(out, val, child);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", inline(val)));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                if is_block(item) {
                    // The item's block two spaces in, its first line's indent becoming `- `.
                    let mut block = String::new();
                    emit(&mut block, item, indent + 2);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&block[indent + 2..]);
                } else {
                    out.push_str(&format!("{pad}- {}\n", inline(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", inline(other))),
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml11_words_and_numbers_are_quoted() {
        let v = json!({"command": ["redis-server", "--appendonly", "no", "6379", "on", "Yes"],
                       "memory": "536870912", "name": "redis", "port": 6379, "ok": true});
        let y = to_yaml(&v);
        assert!(y.contains("- \"no\"\n"), "{y}");
        assert!(y.contains("- \"6379\"\n"), "{y}");
        assert!(y.contains("- \"on\"\n") && y.contains("- \"Yes\"\n"), "{y}");
        assert!(
            y.contains("- --appendonly") || y.contains("- \"--appendonly\""),
            "{y}"
        );
        assert!(y.contains("memory: \"536870912\"\n"), "{y}");
        assert!(
            y.contains("port: 6379\n") && y.contains("ok: true\n"),
            "{y}"
        );
        assert!(y.contains("name: redis\n"), "{y}");
        let v = json!({"image": "reg/app@sha256:ab", "key": "a:", "t": "1:20", "u": "a: b"});
        let y = to_yaml(&v);
        assert!(y.contains("image: reg/app@sha256:ab\n"), "{y}");
        assert!(
            y.contains("key: \"a:\"\n") && y.contains("t: \"1:20\"\n"),
            "{y}"
        );
        assert!(y.contains("u: \"a: b\"\n"), "{y}");
    }

    #[test]
    fn nested_blocks_read_back_as_the_same_value() {
        let v = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "a: b # c"}], "ports": []},
            {"name": "b", "args": [["nested"]], "empty": {}}
        ], "s": "multi\nline \"quoted\""}});
        let y = to_yaml(&v);
        let back: Value = serde_yaml_ng::from_str(&y).expect("our YAML reads back");
        assert_eq!(back, v, "{y}");
    }
}
