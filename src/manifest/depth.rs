//! A linear pre-scan that refuses deeply nested or oversized YAML or JSON before any parser
//! runs.
//!
//! libyaml (under serde_yaml) and yaml-rust2 revisit every open level on each token, so parsing
//! costs depth × size: a 1 MiB file 520k levels deep held the watcher for 18 minutes, and
//! serde_yaml's recursion limit only applies after the whole document has been parsed. This scan
//! reads each byte once and stops at the first level past [`MAX_DEPTH`].
//!
//! It errs on the side of counting: text it cannot tell from structure (odd plain scalars, a
//! block scalar indented less than its parent) counts as nesting, never the reverse, so no input
//! reaches a parser deeper than the limit.
//!
//! It also counts documents and nodes: past the depth limit the parsers, serde and validation
//! still cost a few µs per node, so a 1 MiB file of 500k tiny nodes took over a second (opt-level
//! "z"). [`MAX_NODES`] and [`MAX_DOCUMENTS`] keep any accepted file under 100 ms.

/// Block collections, flow collections and compact entries (`- - x`) counted together. Pod
/// manifests use about ten; the API server's JSON decoder stops at 10000, far too late here.
pub const MAX_DEPTH: usize = 100;

/// Mappings, lists and scalars (keys included) in one file. A pod with 100 containers, each
/// with 30 env vars, ports, mounts and a probe, has about 22000; a ConfigMap has two per key.
/// At the limit the slowest shapes (lists 98 deep, 8000 clashing containers) took 60-80 ms
/// at 40000 (release, loaded 2-core host): this leaves headroom under the 100 ms bound.
pub const MAX_NODES: usize = 30_000;

/// `---`-separated documents in one file.
pub const MAX_DOCUMENTS: usize = 1000;

/// Which limit a file exceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Depth,
    Nodes,
    Documents,
}

/// `Err((limit, byte offset))`: where the first collection past [`MAX_DEPTH`], the first node
/// past [`MAX_NODES`] or the first document past [`MAX_DOCUMENTS`] starts.
pub fn check(text: &str) -> Result<(), (Limit, usize)> {
    Scan { b: text.as_bytes(), ..Scan::default() }.run()
}

#[derive(Default)]
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line_start: usize,
    /// Columns of the open block collections.
    indents: Vec<usize>,
    flow: usize,
    nodes: usize,
    documents: usize,
    in_document: bool,
}

fn blank(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn flow_indicator(c: Option<&u8>) -> bool {
    matches!(c, Some(b',' | b'[' | b']' | b'{' | b'}'))
}

impl Scan<'_> {
    fn run(&mut self) -> Result<(), (Limit, usize)> {
        let mut block_scalar: Option<Option<usize>> = None;
        while self.i < self.b.len() {
            self.line_start = self.i;
            let indent = self.b[self.i..].iter().take_while(|&&c| c == b' ').count();
            let rest = &self.b[self.i + indent..];
            let blank = rest.iter().take_while(|&&c| c == b' ' || c == b'\t' || c == b'\r').count();
            if matches!(rest.get(blank), None | Some(b'\n')) {
                self.skip_line();
                continue;
            }
            // A block scalar's text is any line indented past the collection that holds it.
            if let Some(parent) = block_scalar {
                if parent.is_none_or(|p| indent > p) && !self.document_marker() {
                    self.skip_line();
                    continue;
                }
                block_scalar = None;
            }
            if self.document_marker() {
                self.indents.clear();
                if self.b[self.i] == b'-' {
                    self.start_document()?;
                } else {
                    self.in_document = false; // `...` ends one
                }
                self.i += 3;
            } else if indent == 0 && rest[0] == b'%' {
                self.skip_line(); // a directive
                continue;
            } else if rest[0] == b'#' {
                self.skip_line();
                continue;
            } else {
                if !self.in_document {
                    self.start_document()?;
                }
                while self.indents.last().is_some_and(|&top| top > indent) {
                    self.indents.pop();
                }
                self.i += indent;
                if self.indents.last() != Some(&indent) {
                    self.push(indent)?;
                }
            }
            if self.node()? {
                block_scalar = Some(self.indents.last().copied());
            }
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn depth_ok(&self) -> Result<(), (Limit, usize)> {
        if self.indents.len() + self.flow > MAX_DEPTH {
            Err((Limit::Depth, self.i))
        } else {
            Ok(())
        }
    }

    /// A node starts at the current byte.
    fn count_node(&mut self) -> Result<(), (Limit, usize)> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            Err((Limit::Nodes, self.i))
        } else {
            Ok(())
        }
    }

    /// A document starts on the current line.
    fn start_document(&mut self) -> Result<(), (Limit, usize)> {
        self.in_document = true;
        self.documents += 1;
        if self.documents > MAX_DOCUMENTS {
            Err((Limit::Documents, self.line_start))
        } else {
            Ok(())
        }
    }

    fn push(&mut self, column: usize) -> Result<(), (Limit, usize)> {
        self.indents.push(column);
        self.count_node()?;
        self.depth_ok()
    }

    /// Moves past the end of the current line.
    fn skip_line(&mut self) {
        self.i = match self.b[self.i..].iter().position(|&c| c == b'\n') {
            Some(n) => self.i + n + 1,
            None => self.b.len(),
        };
    }

    /// `---` or `...` at the start of the current line.
    fn document_marker(&self) -> bool {
        let line = &self.b[self.line_start..];
        (line.starts_with(b"---") || line.starts_with(b"...")) && blank(line.get(3))
    }

    /// The rest of a block-context line from a node's start, and any flow collection or quoted
    /// scalar that starts on it (they may span lines). Returns true after a block scalar header.
    fn node(&mut self) -> Result<bool, (Limit, usize)> {
        // After a compact entry (`- `), whether it opened a collection.
        let mut compact = false;
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
                self.i += 1;
            }
            let Some(c) = self.peek() else { return Ok(false) };
            match c {
                b'\n' | b'#' => {
                    self.skip_line();
                    return Ok(false);
                }
                // Compact entries (`- - x`, `? a`, `- key: v`) open a collection each.
                b'-' | b'?' | b':' if blank(self.b.get(self.i + 1)) => {
                    self.i += 1;
                    while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
                        self.i += 1;
                    }
                    if !matches!(self.peek(), None | Some(b'\n' | b'#')) {
                        // Counted once known to be a collection: `- x` holds a scalar.
                        if std::mem::replace(&mut compact, true) {
                            self.count_node()?;
                        }
                        self.indents.push(self.i - self.line_start);
                        self.depth_ok()?;
                    }
                }
                b'[' | b'{' => {
                    self.flow_collection()?;
                    if !self.plain() {
                        return Ok(false);
                    }
                    // A key: the compact entry holds a mapping.
                    if std::mem::take(&mut compact) {
                        self.count_node()?;
                    }
                }
                b'\'' | b'"' => {
                    self.count_node()?;
                    self.quoted();
                    if !self.plain() {
                        return Ok(false);
                    }
                    // A key: the compact entry holds a mapping.
                    if std::mem::take(&mut compact) {
                        self.count_node()?;
                    }
                }
                b'|' | b'>' => {
                    self.count_node()?;
                    self.skip_line();
                    return Ok(true);
                }
                b'&' | b'!' => self.token(),
                _ => {
                    self.count_node()?;
                    if !self.plain() {
                        return Ok(false);
                    }
                    // A key: the compact entry holds a mapping.
                    if std::mem::take(&mut compact) {
                        self.count_node()?;
                    }
                }
            }
        }
    }

    /// A plain scalar (or what follows a node) up to `: ` (true: a value follows) or the end of
    /// the line (false).
    fn plain(&mut self) -> bool {
        while let Some(c) = self.peek() {
            match c {
                b'\n' => {
                    self.i += 1;
                    return false;
                }
                b':' if blank(self.b.get(self.i + 1)) => {
                    self.i += 1;
                    return true;
                }
                b'#' if self.i > 0 && blank(self.b.get(self.i - 1)) => {
                    self.skip_line();
                    return false;
                }
                _ => self.i += 1,
            }
        }
        false
    }

    /// An anchor, tag or alias: up to a blank or a flow indicator.
    fn token(&mut self) {
        self.i += 1;
        while !blank(self.b.get(self.i)) && !flow_indicator(self.b.get(self.i)) {
            self.i += 1;
        }
    }

    /// A single- or double-quoted scalar, from its opening quote.
    fn quoted(&mut self) {
        let q = self.b[self.i];
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == q {
                if q == b'\'' && self.peek() == Some(b'\'') {
                    self.i += 1; // '' is an escaped quote
                } else {
                    return;
                }
            } else if c == b'\\' && q == b'"' {
                self.i += 1;
            }
        }
    }

    /// A flow collection, from its opening bracket to the matching close (or the end).
    fn flow_collection(&mut self) -> Result<(), (Limit, usize)> {
        // Where a node may start, a quote opens a quoted scalar; inside a plain scalar it is
        // text. After a quoted scalar or a collection, `:` is a value indicator even unspaced
        // (JSON's `"a":1`), as libyaml reads it.
        let mut node_start = true;
        let mut after_node = false;
        while let Some(c) = self.peek() {
            let next = self.b.get(self.i + 1);
            match c {
                b'[' | b'{' => {
                    self.flow += 1;
                    self.count_node()?;
                    self.depth_ok()?;
                    self.i += 1;
                    (node_start, after_node) = (true, false);
                }
                b']' | b'}' => {
                    self.i += 1;
                    self.flow = self.flow.saturating_sub(1);
                    if self.flow == 0 {
                        return Ok(());
                    }
                    (node_start, after_node) = (false, true);
                }
                b',' => {
                    self.i += 1;
                    (node_start, after_node) = (true, false);
                }
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'#' if self.i == 0 || blank(self.b.get(self.i - 1)) => self.skip_line(),
                b'\'' | b'"' if node_start => {
                    self.count_node()?;
                    self.quoted();
                    (node_start, after_node) = (false, true);
                }
                b':' | b'?' if node_start || after_node || blank(next) || flow_indicator(next) => {
                    self.i += 1;
                    (node_start, after_node) = (true, false);
                }
                b'&' | b'!' | b'*' if node_start => {
                    if c == b'*' {
                        self.count_node()?;
                    }
                    self.token();
                    node_start = c != b'*';
                    after_node = c == b'*';
                }
                _ => {
                    if node_start {
                        self.count_node()?;
                    }
                    self.i += 1;
                    (node_start, after_node) = (false, false);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deepest `n` for which `text(n)` passes.
    fn limit(text: impl Fn(usize) -> String) -> usize {
        (1..=MAX_DEPTH + 2).find(|&n| check(&text(n)).is_err()).expect("refused at some depth") - 1
    }

    #[test]
    fn flow_block_and_compact_nesting_are_counted() {
        // Under `a:` (one level) the count is exact.
        assert_eq!(limit(|n| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))), MAX_DEPTH - 1);
        assert_eq!(
            limit(|n| format!("a: {}1{}\n", "{a: ".repeat(n), "}".repeat(n))),
            MAX_DEPTH - 1
        );
        let block = |n: usize| (0..n).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>();
        assert_eq!(limit(block), MAX_DEPTH);
        // A root flow collection and the scalar after a compact entry count one level more
        // than they are: the scan does not look ahead.
        assert_eq!(limit(|n| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n))), MAX_DEPTH - 1);
        assert_eq!(limit(|n| format!("{}x\n", "- ".repeat(n))), MAX_DEPTH - 1);
        assert_eq!(limit(|n| format!("{}x\n", "? ".repeat(n))), MAX_DEPTH - 1);
        assert_eq!(limit(|n| format!("- {}x\n", "[".repeat(n))), MAX_DEPTH - 2);
        assert_eq!(
            check(&format!("{}x\n", "- ".repeat(MAX_DEPTH))),
            Err((Limit::Depth, 2 * MAX_DEPTH))
        );
    }

    #[test]
    fn brackets_in_scalars_and_comments_are_text() {
        let many = "[".repeat(MAX_DEPTH * 2);
        for ok in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: 'it''s {many}'\n"),
            format!("a: \"esc \\\" {many}\"\n"),
            format!("a: x{many}\n"),
            format!("a: 1 # {many}\n"),
            format!("# {many}\n"),
            format!("a: |\n  {many}\n  more\nb: 1\n"),
            format!("- >-\n    {many}\n"),
            format!("a: [\"{many}\", '{many}', x] # {many}\n"),
            format!("a: \"multi\n  line {many}\"\n"),
            format!("--- |\n{many}\n"),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn quotes_inside_plain_scalars_do_not_hide_nesting() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        for bad in [
            format!("a: [x'y, {deep}\n"),
            format!("a: [x\"y, {deep}\n"),
            format!("a: [x:\"y, {deep}\n"),
            format!("a: x'y\nb: {deep}\n"),
            format!("a: |\n  x\n# end\n  {deep}\n"),
            format!("a: &x !t {deep}\n"),
            format!("--- |\n x\n---\n{deep}\n"),
        ] {
            assert!(check(&bad).is_err(), "{bad}");
        }
    }

    /// Nodes and documents of `text`.
    fn counts(text: &str) -> (usize, usize) {
        let mut s = Scan { b: text.as_bytes(), ..Scan::default() };
        s.run().expect("within the limits");
        (s.nodes, s.documents)
    }

    #[test]
    fn nodes_are_counted_in_every_style() {
        // Keys and values; the root mapping or list once.
        assert_eq!(counts("k: v\n").0, 3);
        assert_eq!(counts(&"k: v\n".repeat(10)).0, 21);
        assert_eq!(counts("- x\n- 'y'\n- *a\n- \"z\"\n").0, 5);
        assert_eq!(counts("- {a: 1, b: \"2\"}\n- [x, *y]\n").0, 9);
        assert_eq!(counts("- name: a\n  image: b\n- name: c\n").0, 9);
        assert_eq!(counts("- - - x\n").0, 4);
        assert_eq!(counts("a: |\n  text\n  [[[\nb: >\n  t\n").0, 5);
        // A root flow collection counts twice, as for depth: the scan does not look ahead.
        assert_eq!(counts("{\"a\":[1,2],\"b\":{\"c\":null}}").0, 10);
        // The first node past the limit is where the error points.
        let list = |n: usize| "- x\n".repeat(n);
        assert_eq!(check(&list(MAX_NODES - 1)), Ok(()));
        assert_eq!(check(&list(MAX_NODES)), Err((Limit::Nodes, 4 * (MAX_NODES - 1) + 2)));
        let flow = |n: usize| format!("a: [{}]", "1,".repeat(n));
        assert_eq!(check(&flow(MAX_NODES - 3)), Ok(()));
        assert_eq!(check(&flow(MAX_NODES - 2)), Err((Limit::Nodes, 4 + 2 * (MAX_NODES - 3))));
    }

    #[test]
    fn documents_are_counted() {
        // As the parsers see them: a trailing `---` opens an empty one.
        assert_eq!(counts("a: 1\n---\nb: 1\n---\n").1, 3);
        // Markers open documents; `...` closes one; comments and blank lines are none.
        assert_eq!(counts("# c\n\n---\n# c\na: 1\n...\n# c\n--- x\n").1, 2);
        let docs = format!("{}a: 1\n", "a: 1\n---\n".repeat(MAX_DOCUMENTS - 1));
        assert_eq!(check(&docs), Ok(()));
        let over = format!("{docs}---\nb: 1\n");
        assert_eq!(check(&over), Err((Limit::Documents, docs.len())));
    }

    #[test]
    fn documents_reset_block_nesting() {
        let doc = (0..MAX_DEPTH).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>();
        assert_eq!(check(&format!("{doc}---\n{doc}")), Ok(()));
    }
}
