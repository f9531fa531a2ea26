//! Maps a field path such as `nodes[2].controllers[0].user` to its line and column, so problems
//! found after parsing (duplicate names, bad references) still point into the file.

use std::fmt;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A YAML document reduced to its shape and the position of every key and value.
#[derive(Debug)]
pub struct Index(Spanned<Node>);

#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl Index {
    /// Indexes a document; `None` if it does not parse (the parse error is reported instead).
    pub fn build(text: &str) -> Option<Self> {
        serde_saphyr::from_str::<Spanned<Node>>(text).ok().map(Index)
    }

    /// The (line, column) of the deepest part of `path` that exists: the key for a mapping
    /// entry, the item for a sequence element.
    pub fn locate(&self, path: &str) -> Option<(u64, u64)> {
        let mut cur = &self.0;
        let mut best = None;
        for seg in segments(path) {
            match (&cur.value, seg) {
                (Node::Map(entries), Segment::Key(k)) => {
                    let Some((key, val)) = entries.iter().find(|(key, _)| key.value == k) else {
                        break;
                    };
                    best = Some((key.referenced.line(), key.referenced.column()));
                    cur = val;
                }
                (Node::Seq(items), Segment::Index(i)) => {
                    let Some(item) = items.get(i) else { break };
                    best = Some((item.referenced.line(), item.referenced.column()));
                    cur = item;
                }
                _ => break,
            }
        }
        best
    }
}

pub(crate) enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

pub(crate) fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any yaml value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = a.next_key::<Spanned<String>>()? {
                    v.push((k, a.next_value()?));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}
