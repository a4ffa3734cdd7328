//! CDI names: `vendor.com/class` kinds, device names and qualified names
//! `vendor.com/class=device`, checked by the rules of the reference parser.

use crate::CdiError;

/// Splits `vendor.com/class=device` into its three parts, each checked.
pub fn parse_qualified(name: &str) -> Result<(String, String, String), CdiError> {
    let err = |reason: String| CdiError::Qualified {
        name: name.to_owned(),
        reason,
    };
    let Some((kind, device)) = name.split_once('=') else {
        return Err(err("missing '=': expected vendor.com/class=device".into()));
    };
    let (vendor, class) = split_kind(kind).map_err(err)?;
    check_device_name(device).map_err(err)?;
    Ok((vendor.to_owned(), class.to_owned(), device.to_owned()))
}

/// Splits a kind `vendor.com/class` into vendor and class, each checked.
pub(crate) fn split_kind(kind: &str) -> Result<(&str, &str), String> {
    let Some((vendor, class)) = kind.split_once('/') else {
        return Err(format!(
            "kind {kind:?}: missing '/': expected vendor.com/class"
        ));
    };
    check_vendor_or_class("vendor", vendor, 253)?;
    check_vendor_or_class("class", class, 63)?;
    Ok((vendor, class))
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A vendor or class: starts with a letter, ends with a letter or digit, and has only
/// letters, digits, `_`, `-` and `.` between.
fn check_vendor_or_class(what: &str, name: &str, max: usize) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err(format!("empty {what}"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("{what} {name:?} must start with a letter"));
    }
    if name.len() > max {
        return Err(format!("{what} {name:?} is longer than {max} characters"));
    }
    check_middle_and_end(what, name, &['_', '-', '.'])
}

/// A device name: starts and ends with a letter or digit, with letters, digits, `_`, `-`,
/// `.` and `:` between.
pub(crate) fn check_device_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("empty device name".into());
    };
    if !is_alnum(first) {
        return Err(format!(
            "device name {name:?} must start with a letter or digit"
        ));
    }
    check_middle_and_end("device name", name, &['_', '-', '.', ':'])
}

fn check_middle_and_end(what: &str, name: &str, extra: &[char]) -> Result<(), String> {
    if let Some(c) = name.chars().find(|c| !is_alnum(*c) && !extra.contains(c)) {
        return Err(format!("invalid character {c:?} in {what} {name:?}"));
    }
    if name.chars().last().is_some_and(|c| !is_alnum(c)) {
        return Err(format!("{what} {name:?} must end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        assert_eq!(
            parse_qualified("nvidia.com/gpu=0").unwrap(),
            ("nvidia.com".into(), "gpu".into(), "0".into())
        );
        assert_eq!(
            parse_qualified("nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c")
                .unwrap()
                .2,
            "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
        );
        assert_eq!(
            parse_qualified("nvidia.com/mig.gpu=0:1").unwrap().1,
            "mig.gpu"
        );
        for bad in [
            "",
            "nvidia.com/gpu",
            "gpu=0",
            "nvidia.com/gpu=",
            "nvidia.com/gpu=-0",
            "nvidia.com/gpu=0-",
            "nvidia.com/gpu/x=0",
            "/gpu=0",
            "1nvidia.com/gpu=0",
            "nvidia.com/gpu=a b",
        ] {
            let err = parse_qualified(bad).unwrap_err();
            assert!(
                matches!(&err, CdiError::Qualified { name, .. } if name == bad),
                "{bad}: {err}"
            );
        }
        let msg = parse_qualified("nvidia.com/gpu=0/1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "CDI device name \"nvidia.com/gpu=0/1\": invalid character '/' in device name \"0/1\""
        );
    }
}
