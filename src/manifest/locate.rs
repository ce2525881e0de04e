//! Field paths and their positions in the YAML text.
//!
//! serde_yaml reports positions only for syntax errors. Type errors, unknown fields and
//! validation findings are found on typed values, by field path; this index maps each path back
//! to the line and column where it is written.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A field path in kubectl's notation: `spec.containers[0].ports[1].name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut s = self.0.clone();
        s.push(Segment::Key(key.to_string()));
        Self(s)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut s = self.0.clone();
        s.push(Segment::Index(index));
        Self(s)
    }

    /// The first segment, when it is a map key.
    pub fn first_key(&self) -> Option<&str> {
        match self.0.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The last segment, when it is a map key.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The path one level up, or `None` at the root.
    fn parent(&self) -> Option<Self> {
        let (_, up) = self.0.split_last()?;
        Some(Self(up.to_vec()))
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Index(n) => write!(f, "[{n}]")?,
                // Keys that are not plain identifiers (annotations, data keys) are quoted.
                Segment::Key(k)
                    if k.is_empty()
                        || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    write!(f, "[{k:?}]")?
                }
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// Positions (1-based line, column) of every key and sequence item of one document.
#[derive(Debug, Default)]
pub struct Positions {
    map: HashMap<FieldPath, (usize, usize)>,
    start: (usize, usize),
}

impl Positions {
    /// The position of `path`, or of its nearest ancestor that is written in the file (a
    /// missing field is reported where its parent is).
    pub fn of(&self, path: &FieldPath) -> (usize, usize) {
        let mut cur = Some(path.clone());
        while let Some(p) = cur {
            if let Some(pos) = self.map.get(&p) {
                return *pos;
            }
            cur = p.parent();
        }
        self.start
    }
}

/// Indexes every document of `text`. Documents come in the order serde_yaml yields them.
/// Only called on text serde_yaml already parsed, so nesting depth is bounded.
pub fn index(text: &str) -> Vec<Positions> {
    let mut builder = Builder::default();
    // A scan error here would have been a serde_yaml error first; keep what was indexed.
    let _ = Parser::new_from_str(text).load(&mut builder, true);
    builder.docs
}

enum Frame {
    Map { path: FieldPath, key: Option<FieldPath> },
    Seq { path: FieldPath, next: usize },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Positions>,
    stack: Vec<Frame>,
}

impl Builder {
    fn record(&mut self, path: FieldPath, mark: Marker) {
        if let Some(doc) = self.docs.last_mut() {
            // yaml-rust2 columns are 0-based.
            doc.map.entry(path).or_insert((mark.line(), mark.col() + 1));
        }
    }

    /// Where the next node goes; `None` when the node is a mapping key (recorded here).
    fn place_node(&mut self, ev: &Event, mark: Marker) -> Option<FieldPath> {
        match self.stack.last_mut() {
            None => Some(FieldPath::root()),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                // A block mapping's start is marked after its first key: that key places it.
                if !matches!(ev, Event::MappingStart(..)) {
                    self.record(p.clone(), mark);
                }
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(value_path) => Some(value_path),
                None => {
                    // A key. Only scalar keys name fields; complex keys get a placeholder.
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_string(),
                    };
                    let p = path.key(&name);
                    let map_path = path.clone();
                    *key = Some(p.clone());
                    self.record(map_path, mark);
                    self.record(p.clone(), mark);
                    match ev {
                        Event::Scalar(..) | Event::Alias(..) => None,
                        // A complex key's own contents are indexed under the placeholder.
                        _ => Some(p),
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.stack.clear();
                self.docs
                    .push(Positions { map: HashMap::new(), start: (mark.line(), mark.col() + 1) });
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.place_node(&ev, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.place_node(&ev, mark) {
                    self.stack.push(Frame::Map { path, key: None });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.place_node(&ev, mark) {
                    self.stack.push(Frame::Seq { path, next: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str, doc: usize, path: &str) -> (usize, usize) {
        let docs = index(text);
        let mut p = FieldPath::root();
        for part in path.split('.').filter(|s| !s.is_empty()) {
            p = match part.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(part),
            };
        }
        docs[doc].of(&p)
    }

    #[test]
    fn keys_and_items_are_located() {
        let text = "a: 1\nspec:\n  containers:\n  - name: x\n    image: busybox\n  - name: y\n";
        assert_eq!(pos(text, 0, "a"), (1, 1));
        assert_eq!(pos(text, 0, "spec.containers"), (3, 3));
        assert_eq!(pos(text, 0, "spec.containers.0"), (4, 5));
        assert_eq!(pos(text, 0, "spec.containers.0.image"), (5, 5));
        assert_eq!(pos(text, 0, "spec.containers.1.name"), (6, 5));
    }

    #[test]
    fn missing_field_falls_back_to_its_parent() {
        let text = "spec:\n  containers:\n  - name: x\n";
        assert_eq!(pos(text, 0, "spec.containers.0.image"), (3, 5));
    }

    #[test]
    fn documents_are_indexed_separately() {
        let text = "kind: A\n---\nkind: B\nname: n\n";
        assert_eq!(pos(text, 1, "name"), (4, 1));
        assert_eq!(index(text).len(), 2);
    }

    #[test]
    fn flow_style_and_nested_sequences() {
        let text = "a: {b: [1, {c: 2}]}\n";
        assert_eq!(pos(text, 0, "a.b.1.c"), (1, 13));
    }

    #[test]
    fn odd_keys_are_quoted() {
        let p = FieldPath::root().key("metadata").key("annotations").key("example.com/x");
        assert_eq!(p.to_string(), r#"metadata.annotations["example.com/x"]"#);
        assert_eq!(p.parent().unwrap().to_string(), "metadata.annotations");
        assert_eq!(
            FieldPath::root().key("spec").key("containers").index(0).to_string(),
            "spec.containers[0]"
        );
    }
}
