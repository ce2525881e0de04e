//! Field paths and their positions in the YAML text.
//!
//! serde_yaml reports positions only for syntax errors. Type errors, unknown fields and
//! validation findings are found on typed values, by field path; this index maps each path back
//! to the line and column where it is written.

use std::collections::{HashMap, HashSet};

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

    /// `self` followed by `rest` (a List item's path, then a field within the item).
    pub fn join(&self, rest: &FieldPath) -> Self {
        Self(self.0.iter().chain(&rest.0).cloned().collect())
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
#[derive(Debug)]
pub struct Positions {
    map: HashMap<FieldPath, (usize, usize)>,
    start: (usize, usize),
}

/// For a document the locator could not read (yaml-rust2 refuses a few things libyaml accepts,
/// such as a tab after `key:`): its findings are reported at the file's start.
impl Default for Positions {
    fn default() -> Self {
        Self { map: HashMap::new(), start: (1, 1) }
    }
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

/// Locates, in each document of `text`, the paths `wanted` for it (and their ancestors, which
/// stand in for a path that is not written). Documents come in the order serde_yaml yields them.
///
/// Only wanted subtrees are followed: indexing every node would cost nodes × depth in path
/// copies and memory (a 1 MiB file of nested lists took a minute and gigabytes).
/// Only called on text the depth pre-scan and serde_yaml accepted, so nesting is bounded.
pub fn index(text: &str, wanted: &[Vec<FieldPath>]) -> Vec<Positions> {
    let wanted = wanted
        .iter()
        .map(|paths| {
            let mut set = HashSet::from([FieldPath::root()]);
            for p in paths {
                let mut cur = Some(p.clone());
                while let Some(c) = cur {
                    cur = c.parent();
                    if !set.insert(c) {
                        break; // its ancestors are in already
                    }
                }
            }
            set
        })
        .collect();
    let mut builder = Builder { wanted, ..Builder::default() };
    // yaml-rust2 refuses a tab after `key:`, which libyaml (serde_yaml) accepts. A tab is
    // whitespace wherever it can appear outside a scalar, and one byte like a space, so the
    // swap keeps every position.
    let text = text.replace('\t', " ");
    // Any other scan error here would have been a serde_yaml error first; keep what was indexed.
    let _ = Parser::new_from_str(&text).load(&mut builder, true);
    builder.docs
}

/// An open collection; its path is `None` when nothing wanted is inside it.
enum Frame {
    /// `key`: `None` while a key is expected, then `Some` (the value's path when wanted).
    Map {
        path: Option<FieldPath>,
        key: Option<Option<FieldPath>>,
    },
    Seq {
        path: Option<FieldPath>,
        next: usize,
    },
}

enum Placed {
    /// A mapping key, recorded already.
    Key,
    /// A node, and its path when wanted.
    Node(Option<FieldPath>),
}

#[derive(Default)]
struct Builder {
    docs: Vec<Positions>,
    stack: Vec<Frame>,
    wanted: Vec<HashSet<FieldPath>>,
}

impl Builder {
    fn wants(&self, path: FieldPath) -> Option<FieldPath> {
        let doc = self.docs.len().checked_sub(1)?;
        let wanted = self.wanted.get(doc)?;
        wanted.contains(&path).then_some(path)
    }

    fn record(&mut self, path: &FieldPath, mark: Marker) {
        if let Some(doc) = self.docs.last_mut() {
            // yaml-rust2 columns are 0-based.
            doc.map.entry(path.clone()).or_insert((mark.line(), mark.col() + 1));
        }
    }

    /// Where the next node goes.
    fn place_node(&mut self, ev: &Event, mark: Marker) -> Placed {
        match self.stack.last_mut() {
            None => Placed::Node(Some(FieldPath::root())),
            Some(Frame::Seq { path, next }) => {
                let index = *next;
                *next += 1;
                let Some(p) = path.as_ref().map(|p| p.index(index)) else {
                    return Placed::Node(None);
                };
                let p = self.wants(p);
                // A block mapping's start is marked after its first key: that key places it.
                if let Some(p) = &p {
                    if !matches!(ev, Event::MappingStart(..)) {
                        self.record(p, mark);
                    }
                }
                Placed::Node(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(value_path) => Placed::Node(value_path),
                None => {
                    let map_path = path.clone();
                    let p = map_path.as_ref().and_then(|m| {
                        // Only scalar keys name fields; complex keys get a placeholder.
                        let name = match ev {
                            Event::Scalar(s, ..) => s.as_str(),
                            _ => "?",
                        };
                        self.wants(m.key(name))
                    });
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(p.clone());
                    }
                    if let Some(m) = &map_path {
                        self.record(m, mark);
                    }
                    if let Some(p) = &p {
                        self.record(p, mark);
                    }
                    match ev {
                        Event::Scalar(..) | Event::Alias(..) => Placed::Key,
                        // A complex key's own contents are indexed under the placeholder.
                        _ => Placed::Node(p),
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
                if let Placed::Node(path) = self.place_node(&ev, mark) {
                    self.stack.push(Frame::Map { path, key: None });
                }
            }
            Event::SequenceStart(..) => {
                if let Placed::Node(path) = self.place_node(&ev, mark) {
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

    fn path(path: &str) -> FieldPath {
        let mut p = FieldPath::root();
        for part in path.split('.').filter(|s| !s.is_empty()) {
            p = match part.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(part),
            };
        }
        p
    }

    fn pos(text: &str, doc: usize, path_text: &str) -> (usize, usize) {
        let p = path(path_text);
        let mut wanted = vec![Vec::new(); doc + 1];
        wanted[doc].push(p.clone());
        index(text, &wanted)[doc].of(&p)
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
        assert_eq!(index(text, &[]).len(), 2);
    }

    #[test]
    fn flow_style_and_nested_sequences() {
        let text = "a: {b: [1, {c: 2}]}\n";
        assert_eq!(pos(text, 0, "a.b.1.c"), (1, 13));
    }

    #[test]
    fn only_wanted_paths_and_their_ancestors_are_indexed() {
        let text = "a:\n  b: [1, 2]\n  c: 3\nd: 4\n";
        let docs = index(text, &[vec![path("a.b.1")]]);
        let mut found: Vec<_> = docs[0].map.keys().map(ToString::to_string).collect();
        found.sort();
        assert_eq!(found, ["", "a", "a.b", "a.b[1]"]);
        assert_eq!(docs[0].of(&path("a.b.1")), (2, 10));
        // Not wanted: reported where its nearest wanted ancestor is.
        assert_eq!(docs[0].of(&path("a.c")), (1, 1));
    }

    #[test]
    fn text_the_locator_cannot_read_is_placed_at_the_start() {
        // libyaml (serde_yaml) accepts the tab; yaml-rust2 stops there.
        let text = "apiVersion:\tv1\nkind: Pod\n";
        let p = path("kind");
        let docs = index(text, &[vec![p.clone()]]);
        let pos = docs.first().map_or_else(|| Positions::default().of(&p), |d| d.of(&p));
        assert!(pos.0 >= 1 && pos.1 >= 1, "{pos:?}");
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
