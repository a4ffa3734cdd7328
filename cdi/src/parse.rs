//! [`parse`]: one spec file's text to a validated [`Spec`], JSON or YAML by its extension.

use std::path::Path;

use crate::{validate, CdiError, Spec};

/// Parses the spec file `path` whose content is `text`, then validates it.
///
/// A name ending in `.json` is read as JSON, any other (`.yaml`, `.yml`) as YAML. Errors
/// name the file and the field path (`devices[0].containerEdits.deviceNodes[1].type`).
pub fn parse(path: &Path, text: &str) -> Result<Spec, CdiError> {
    let syntax = |field: String, reason: String| CdiError::Syntax {
        file: path.to_owned(),
        field,
        reason,
    };
    let is_json = path.extension().is_some_and(|e| e == "json");
    let mut spec: Spec = if is_json {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
        de.end().map_err(|e| syntax(".".into(), e.to_string()))?;
        spec
    } else {
        // On a type error the closure must fail (not return `Ok(Err)`), or the parser goes
        // on and reports the rest of the document as a second one; the path is kept aside.
        let mut field = None;
        serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Spec>(de).map_err(|e| {
                field = Some(e.path().to_string());
                e.into_inner()
            })
        })
        .map_err(|e| {
            let field = field.unwrap_or_else(|| ".".into());
            syntax(field, first_line(&e.to_string()))
        })?
    };
    spec.source = path.to_owned();
    validate::validate(&spec)?;
    Ok(spec)
}

/// The parser's message without the source snippet it draws below: one line for logs.
fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(message);
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}
