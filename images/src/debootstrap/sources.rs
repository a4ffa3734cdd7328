//! The host's defaults for the `debootstrap` base: the Debian suite from `/etc/os-release` and
//! the mirror from apt's sources (`sources.list` one-line entries and deb822 `.sources` files).

use std::path::Path;

/// `VERSION_CODENAME` of an os-release file.
pub fn host_codename(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .find(|v| !v.is_empty())
}

/// One `deb` source: its URI and suites.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deb {
    uri: String,
    suites: Vec<String>,
}

/// The mirror for `suite`: the first `deb` URI (in apt's order: `sources.list`, then the files
/// of `sources.list.d` by name) that serves `suite`, else the first `deb` URI at all.
pub fn host_mirror(apt_dir: &Path, suite: &str) -> Option<String> {
    let mut debs = Vec::new();
    if let Ok(t) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        debs.extend(one_line(&t));
    }
    let mut files: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => debs.extend(one_line(&t)),
            Some("sources") => debs.extend(deb822(&t)),
            _ => {}
        }
    }
    let usable = |d: &&Deb| {
        d.uri.starts_with("http://") || d.uri.starts_with("https://") || d.uri.starts_with("file:/")
    };
    debs.iter()
        .filter(usable)
        .find(|d| d.suites.iter().any(|s| s == suite))
        .or_else(|| debs.iter().find(usable))
        .map(|d| d.uri.clone())
}

/// `deb [options] URI SUITE [COMPONENT...]` lines.
fn one_line(text: &str) -> Vec<Deb> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']').map_or("", |(_, after)| after),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Deb {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`).
fn deb822(text: &str) -> Vec<Deb> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        let is_deb = get("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if enabled && is_deb {
            let suites: Vec<String> = get("Suites")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for uri in get("URIs").unwrap_or("").split_whitespace() {
                out.push(Deb {
                    uri: uri.to_string(),
                    suites: suites.clone(),
                });
            }
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_from_both_formats_in_apt_order() {
        let dir = std::env::temp_dir().join(format!("apt-sources-test-{}", std::process::id()));
        let d = dir.join("sources.list.d");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("debian.sources"),
            "Types: deb\n# comment\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb-src deb\nURIs: http://ftp.example.org/debian\n  http://second.example.org/debian\nSuites: bookworm\n\n\
             Types: deb\nEnabled: no\nURIs: http://off.example.org/debian\nSuites: trixie\n",
        )
        .expect("write");
        std::fs::write(
            d.join("other.list.disabled"),
            "deb http://never.example.org/ trixie main\n",
        )
        .expect("write");
        assert_eq!(
            host_mirror(&dir, "bookworm").as_deref(),
            Some("http://ftp.example.org/debian")
        );
        // No source for the suite: the first deb URI.
        assert_eq!(
            host_mirror(&dir, "trixie").as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
        std::fs::write(
            dir.join("sources.list"),
            "# x\ndeb-src http://src.example.org/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://m.example.org/debian bookworm main\n",
        )
        .expect("write");
        assert_eq!(
            host_mirror(&dir, "bookworm").as_deref(),
            Some("https://m.example.org/debian")
        );
        let osr = dir.join("os-release");
        std::fs::write(&osr, "NAME=\"Debian\"\nVERSION_CODENAME=\"bookworm\"\n").expect("write");
        assert_eq!(host_codename(&osr).as_deref(), Some("bookworm"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
