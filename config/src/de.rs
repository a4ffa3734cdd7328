//! A serde `Deserializer` over [`crate::tree::Node`] that reads scalars the way
//! `serde_yaml_ng` does and names the node every error is about.

use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use crate::tree::{CoreTag, Entry, Kind, Node};

/// A deserialization error with the node it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub message: String,
    /// The node being read when the error happened (innermost first).
    pub node: Option<usize>,
    /// For "missing field": the field's name.
    pub missing: Option<String>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            node: None,
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            message: format!("missing field `{field}`"),
            node: None,
            missing: Some(field.to_string()),
        }
    }
}

impl DeError {
    fn at(mut self, n: &Node) -> DeError {
        if self.node.is_none() {
            self.node = Some(n.id);
        }
        self
    }
}

type Result<T> = std::result::Result<T, DeError>;

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Whole-number syntax that fits no 64-bit integer.
fn too_large_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && parse_unsigned(s).is_none()
        && parse_negative(s).is_none()
}

fn digits_but_not_number(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

fn radix(s: &str) -> (&str, u32) {
    if let Some(r) = s.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = s.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = s.strip_prefix("0b") {
        (r, 2)
    } else {
        (s, 10)
    }
}

fn parse_unsigned(s: &str) -> Option<u64> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with(['+', '-']) {
        return None;
    }
    let (digits, r) = radix(body);
    if digits.starts_with(['+', '-']) || (r == 10 && digits_but_not_number(s)) {
        return None;
    }
    u64::from_str_radix(digits, r).ok()
}

fn parse_negative(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-')?;
    if body.starts_with(['+', '-']) {
        return None;
    }
    let (digits, r) = radix(body);
    if r == 10 && digits_but_not_number(s) {
        return None;
    }
    i64::from_str_radix(&format!("-{digits}"), r).ok()
}

fn parse_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with(['+', '-']) && s.starts_with('+') {
        return None;
    }
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    if digits_but_not_number(s) {
        return None;
    }
    body.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A resolved scalar.
enum Scalar<'a> {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(&'a str),
}

fn resolve(text: &str, plain: bool, tag: Option<CoreTag>) -> Scalar<'_> {
    match tag {
        Some(CoreTag::Str) => Scalar::Str(text),
        Some(CoreTag::Null) if is_null(text) => Scalar::Null,
        Some(CoreTag::Bool) => parse_bool(text).map_or(Scalar::Str(text), Scalar::Bool),
        Some(CoreTag::Int) => parse_unsigned(text)
            .map(Scalar::U)
            .or_else(|| parse_negative(text).map(Scalar::I))
            .unwrap_or(Scalar::Str(text)),
        Some(CoreTag::Float) => parse_float(text).map_or(Scalar::Str(text), Scalar::F),
        _ if !plain => Scalar::Str(text),
        _ => {
            if is_null(text) {
                Scalar::Null
            } else if let Some(b) = parse_bool(text) {
                Scalar::Bool(b)
            } else if let Some(u) = parse_unsigned(text) {
                Scalar::U(u)
            } else if let Some(i) = parse_negative(text) {
                Scalar::I(i)
            } else if too_large_integer(text) {
                // Read as a float it would be echoed as 1e26 or 100…000.0: keep the text.
                Scalar::Str(text)
            } else if let Some(f) = parse_float(text) {
                Scalar::F(f)
            } else {
                Scalar::Str(text)
            }
        }
    }
}

fn unexpected(n: &Node) -> Unexpected<'_> {
    match &n.kind {
        Kind::Seq(_) => Unexpected::Seq,
        Kind::Map(_) => Unexpected::Map,
        Kind::Scalar { text, plain, tag } => match resolve(text, *plain, *tag) {
            Scalar::Null => Unexpected::Unit,
            Scalar::Bool(b) => Unexpected::Bool(b),
            Scalar::U(u) => Unexpected::Unsigned(u),
            Scalar::I(i) => Unexpected::Signed(i),
            Scalar::F(f) => Unexpected::Float(f),
            Scalar::Str(s) => Unexpected::Str(s),
        },
    }
}

impl<'a> Node {
    fn invalid<V: Visitor<'a>>(&'a self, v: &V) -> DeError {
        <DeError as de::Error>::invalid_type(unexpected(self), v)
    }

    fn plain_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar {
                text,
                plain: true,
                tag: None,
            } => Some(text),
            _ => None,
        }
    }

    /// Empty, `~` or `null`: a mapping or list with nothing in it.
    fn is_empty_plain(&self) -> bool {
        self.plain_text().is_some_and(is_null)
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        for item in self.items.by_ref() {
            if item.placeholder == Some(usize::MAX) {
                continue;
            }
            return seed.deserialize(item).map(Some);
        }
        Ok(None)
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, Entry>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        for e in self.entries.by_ref() {
            if e.removed {
                continue;
            }
            self.value = Some(&e.value);
            return seed.deserialize(&e.key).map(Some);
        }
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::custom("value without a key")),
        }
    }
}

fn visit_seq<'de, V: Visitor<'de>>(items: &'de [Node], v: V) -> Result<V::Value> {
    v.visit_seq(SeqAccess {
        items: items.iter(),
    })
}

fn visit_map<'de, V: Visitor<'de>>(entries: &'de [Entry], v: V) -> Result<V::Value> {
    v.visit_map(MapAccess {
        entries: entries.iter(),
        value: None,
    })
}

macro_rules! forward {
    ($($m:ident => $to:ident),*) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value> { self.$to(v) })*
    };
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Scalar { text, plain, tag } => match resolve(text, *plain, *tag) {
                Scalar::Null => v.visit_unit(),
                Scalar::Bool(b) => v.visit_bool(b),
                Scalar::U(u) => v.visit_u64(u),
                Scalar::I(i) => v.visit_i64(i),
                Scalar::F(f) => v.visit_f64(f),
                Scalar::Str(s) => v.visit_borrowed_str(s),
            },
            Kind::Seq(items) => visit_seq(items, v),
            Kind::Map(entries) => visit_map(entries, v),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Scalar { text, plain, tag } if *plain || *tag == Some(CoreTag::Bool) => {
                match parse_bool(text) {
                    Some(b) => v.visit_bool(b),
                    None => Err(self.invalid(&v)),
                }
            }
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        let text = match &self.kind {
            Kind::Scalar { text, plain, tag } if *plain || *tag == Some(CoreTag::Int) => {
                Some(text.as_str())
            }
            _ => None,
        };
        match text {
            Some(t) => {
                if let Some(u) = parse_unsigned(t) {
                    match i64::try_from(u) {
                        Ok(i) => v.visit_i64(i),
                        Err(_) => v.visit_u64(u),
                    }
                } else if let Some(i) = parse_negative(t) {
                    v.visit_i64(i)
                } else {
                    Err(self.invalid(&v))
                }
            }
            None => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        let text = match &self.kind {
            Kind::Scalar { text, plain, tag } if *plain || *tag == Some(CoreTag::Int) => {
                Some(text.as_str())
            }
            _ => None,
        };
        match text {
            Some(t) => match (parse_unsigned(t), parse_negative(t)) {
                (Some(u), _) => v.visit_u64(u),
                (None, Some(i)) => v.visit_i64(i),
                _ => Err(self.invalid(&v)),
            },
            None => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Scalar { text, plain, tag }
                if *plain || matches!(tag, Some(CoreTag::Float | CoreTag::Int)) =>
            {
                match parse_float(text).or_else(|| parse_unsigned(text).map(|u| u as f64)) {
                    Some(f) => v.visit_f64(f),
                    None => Err(self.invalid(&v)),
                }
            }
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            // `null` and `~` are YAML's null, not text (an empty value stays "": the field's
            // own check names it).
            Kind::Scalar {
                text,
                plain: true,
                tag: None,
            } if is_null(text) && !text.is_empty() => Err(<DeError as de::Error>::invalid_type(
                Unexpected::Other("null (quote it for the text \"null\")"),
                &v,
            )),
            Kind::Scalar { text, .. } => v.visit_borrowed_str(text),
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(<DeError as de::Error>::custom("bytes are not supported").at(self))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        let none = match &self.kind {
            Kind::Scalar { text, plain, tag } => {
                (*plain && tag.is_none() || *tag == Some(CoreTag::Null)) && is_null(text)
            }
            _ => false,
        };
        if none {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Scalar {
                text, plain: true, ..
            } if is_null(text) => v.visit_unit(),
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _n: &'static str, v: V) -> Result<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        v: V,
    ) -> Result<V::Value> {
        v.visit_newtype_struct(self).map_err(|e| e.at(self))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Seq(items) => visit_seq(items, v),
            _ if self.is_empty_plain() => visit_seq(&[], v),
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match &self.kind {
            Kind::Map(entries) => visit_map(entries, v),
            _ if self.is_empty_plain() => visit_map(&[], v),
            _ => Err(self.invalid(&v)),
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match &self.kind {
            Kind::Scalar { text, .. } if !text.is_empty() => {
                let d: StrDeserializer<'_, DeError> = text.as_str().into_deserializer();
                v.visit_enum(d)
            }
            _ => {
                let got = match unexpected(self) {
                    Unexpected::Unit => "nothing".to_string(),
                    u => u.to_string(),
                };
                Err(de::Error::custom(format!(
                    "expected one of {}, got {got}",
                    variants
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
        .map_err(|e| e.at(self))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        v.visit_unit()
    }

    forward!(
        deserialize_i8 => deserialize_i64,
        deserialize_i16 => deserialize_i64,
        deserialize_i32 => deserialize_i64,
        deserialize_u8 => deserialize_u64,
        deserialize_u16 => deserialize_u64,
        deserialize_u32 => deserialize_u64,
        deserialize_f32 => deserialize_f64,
        deserialize_char => deserialize_str,
        deserialize_string => deserialize_str,
        deserialize_identifier => deserialize_str,
        deserialize_byte_buf => deserialize_bytes
    );
}
