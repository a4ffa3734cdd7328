//! Compose value syntaxes: durations, byte sizes, ports, and `${VAR}` interpolation.

/// A Compose duration (`1m30s`, `10s`, `500ms`, `1h`, `2.5s`, a bare number of seconds) in
/// milliseconds.
pub fn duration_ms(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(n) = t.parse::<f64>() {
        return (n >= 0.0 && n.is_finite()).then_some((n * 1000.0) as u64);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let n: f64 = num.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let mult = match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total += n * mult;
        rest = next;
    }
    (total.is_finite() && total < 1e15).then_some(total as u64)
}

/// Milliseconds as a system-file duration.
pub fn dur_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A Compose byte size (`512m`, `1g`, `2gb`, `1024k`, `100b`, a bare number of bytes).
pub fn bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (0.0..1.8e19).contains(&v).then_some(v as u64)
}

/// One published or exposed port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The container's port (the agent's).
    pub container: u16,
    pub host: Option<u16>,
    pub host_ip: Option<String>,
}

fn port_num(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port 1-65535")),
    }
}

fn range(s: &str) -> Result<Vec<u16>, String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_num(a)?, port_num(b)?);
            if b < a || b - a > 100 {
                return Err(format!(
                    "port range {s:?} is backwards or longer than 100 ports"
                ));
            }
            Ok((a..=b).collect())
        }
        None => Ok(vec![port_num(s)?]),
    }
}

/// Parses the short port syntax `[IP:][HOST[-R]:]CONTAINER[-R][/PROTO]`.
pub fn short_port(s: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, p)) => (b, p),
        None => (s, "tcp"),
    };
    if proto != "tcp" {
        return Err(format!(
            "{proto} ports are not carried (agents' ports are TCP)"
        ));
    }
    let (ip, rest) = if let Some(r) = body.strip_prefix('[') {
        match r.split_once("]:") {
            Some((ip, rest)) => (Some(ip.to_string()), rest),
            None => return Err(format!("{s:?}: an IPv6 address needs `]:`")),
        }
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => (Some(parts[0].to_string()), &body[parts[0].len() + 1..]),
            _ => return Err(format!("{s:?} is not [IP:][HOST:]CONTAINER")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, rest),
    };
    let cs = range(container)?;
    let hs = match host {
        Some("") | None => None,
        Some(h) => Some(range(h)?),
    };
    if let Some(h) = &hs {
        if h.len() != cs.len() {
            return Err(format!("{s:?}: host and container ranges differ in length"));
        }
    }
    Ok(cs
        .iter()
        .enumerate()
        .map(|(i, c)| PortSpec {
            container: *c,
            host: hs.as_ref().map(|h| h[i]),
            host_ip: ip.clone().filter(|i| !i.is_empty()),
        })
        .collect())
}

/// What interpolation found wrong: `(variable, message)`.
pub type InterpIssue = String;

/// Compose interpolation: `$$` is `$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
/// `${VAR:+a}`, `${VAR+a}`, `${VAR:?err}`, `${VAR?err}`. Unset variables without a default
/// become empty and are reported.
pub fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> (String, Vec<InterpIssue>) {
    let mut out = String::new();
    let mut issues = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // Find the matching brace (defaults may nest ${...}).
                let mut depth = 0;
                let mut end = None;
                for (j, ch) in chars.iter().enumerate().skip(i + 1) {
                    if *ch == '{' {
                        depth += 1;
                    } else if *ch == '}' {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                }
                let Some(end) = end else {
                    issues.push(format!("unclosed ${{ in {s:?}"));
                    out.extend(&chars[i..]);
                    break;
                };
                let inner: String = chars[i + 2..end].iter().collect();
                i = end + 1;
                let name_len = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, op) = inner.split_at(name_len);
                if name.is_empty() {
                    issues.push(format!("${{{inner}}}: no variable name"));
                    continue;
                }
                let v = vars(name);
                let (ops, word) = if let Some(w) = op.strip_prefix(":-") {
                    (":-", w)
                } else if let Some(w) = op.strip_prefix(":+") {
                    (":+", w)
                } else if let Some(w) = op.strip_prefix(":?") {
                    (":?", w)
                } else if op.is_empty() {
                    ("", "")
                } else {
                    op.split_at(1)
                };
                let (word, mut sub) = interpolate(word, vars);
                issues.append(&mut sub);
                let set_nonempty = v.as_deref().is_some_and(|x| !x.is_empty());
                match ops {
                    "" => match v {
                        Some(v) => out.push_str(&v),
                        None => issues.push(format!("variable {name} is not set; it became empty")),
                    },
                    ":-" => out.push_str(&if set_nonempty {
                        v.unwrap_or_default()
                    } else {
                        word
                    }),
                    "-" => out.push_str(&v.unwrap_or(word)),
                    ":+" => out.push_str(if set_nonempty { &word } else { "" }),
                    "+" => out.push_str(if v.is_some() { &word } else { "" }),
                    ":?" | "?" => {
                        let ok = if ops == ":?" {
                            set_nonempty
                        } else {
                            v.is_some()
                        };
                        if ok {
                            out.push_str(&v.unwrap_or_default());
                        } else {
                            issues.push(format!("variable {name} is required: {word}"));
                        }
                    }
                    _ => issues.push(format!("${{{inner}}}: unknown operator {ops:?}")),
                }
            }
            Some(ch) if ch.is_ascii_alphabetic() || *ch == '_' => {
                let name: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                i += 1 + name.len();
                match vars(&name) {
                    Some(v) => out.push_str(&v),
                    None => issues.push(format!("variable {name} is not set; it became empty")),
                }
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    (out, issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("10"), Some(10_000));
        assert_eq!(duration_ms("1h2m"), Some(3_720_000));
        assert_eq!(duration_ms("3 days"), None);
        assert_eq!(dur_text(90_000), "90s");
        assert_eq!(dur_text(1500), "1500ms");
        assert_eq!(bytes("512m"), Some(512 << 20));
        assert_eq!(bytes("2GB"), Some(2 << 30));
        assert_eq!(bytes("100"), Some(100));
        assert_eq!(bytes("1x"), None);
    }

    #[test]
    fn ports() {
        assert_eq!(
            short_port("127.0.0.1:8080:80").expect("valid"),
            [PortSpec {
                container: 80,
                host: Some(8080),
                host_ip: Some("127.0.0.1".into())
            }]
        );
        assert_eq!(short_port("5572").expect("valid")[0].host, None);
        assert_eq!(short_port("9000-9002:9000-9002").expect("valid").len(), 3);
        assert!(short_port("53:53/udp").is_err());
        assert!(short_port("70000").is_err());
        assert_eq!(
            short_port("[::1]:80:8080").expect("valid")[0]
                .host_ip
                .as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn interpolation() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        let (s, i) = interpolate(
            "$A ${A} ${B:-d} ${E:-e} ${E-f} ${A:+p} $$A ${B:-${A}}",
            &vars,
        );
        assert_eq!(s, "x x d e  p $A x");
        assert!(i.is_empty(), "{i:?}");
        let (s, i) = interpolate("${B} ${B:?needed} ${", &vars);
        assert_eq!(s, "  ${");
        assert_eq!(i.len(), 3, "{i:?}");
    }
}
