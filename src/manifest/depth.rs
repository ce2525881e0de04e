//! A linear pre-scan that refuses deeply nested YAML or JSON before any parser runs.
//!
//! libyaml (under serde_yaml) and yaml-rust2 revisit every open level on each token, so parsing
//! costs depth × size: a 1 MiB file 520k levels deep held the watcher for 18 minutes, and
//! serde_yaml's recursion limit only applies after the whole document has been parsed. This scan
//! reads each byte once and stops at the first level past [`MAX_DEPTH`].
//!
//! It errs on the side of counting: text it cannot tell from structure (odd plain scalars, a
//! block scalar indented less than its parent) counts as nesting, never the reverse, so no input
//! reaches a parser deeper than the limit.

/// Block collections, flow collections and compact entries (`- - x`) counted together. Pod
/// manifests use about ten; the API server's JSON decoder stops at 10000, far too late here.
pub const MAX_DEPTH: usize = 100;

/// `Err(byte offset)` of the start of the first collection past [`MAX_DEPTH`].
pub fn check(text: &str) -> Result<(), usize> {
    let mut s = Scan { b: text.as_bytes(), i: 0, line_start: 0, indents: Vec::new(), flow: 0 };
    let mut block_scalar: Option<Option<usize>> = None;
    while s.i < s.b.len() {
        s.line_start = s.i;
        let indent = s.b[s.i..].iter().take_while(|&&c| c == b' ').count();
        let rest = &s.b[s.i + indent..];
        let blank = rest.iter().take_while(|&&c| c == b' ' || c == b'\t' || c == b'\r').count();
        if matches!(rest.get(blank), None | Some(b'\n')) {
            s.skip_line();
            continue;
        }
        // A block scalar's text is any line indented past the collection that holds it.
        if let Some(parent) = block_scalar {
            if parent.is_none_or(|p| indent > p) && !s.document_marker() {
                s.skip_line();
                continue;
            }
            block_scalar = None;
        }
        if s.document_marker() {
            s.indents.clear();
            s.i += 3;
        } else if indent == 0 && rest[0] == b'%' {
            s.skip_line(); // a directive
            continue;
        } else if rest[0] == b'#' {
            s.skip_line();
            continue;
        } else {
            while s.indents.last().is_some_and(|&top| top > indent) {
                s.indents.pop();
            }
            s.i += indent;
            if s.indents.last() != Some(&indent) {
                s.push(indent)?;
            }
        }
        if s.node()? {
            block_scalar = Some(s.indents.last().copied());
        }
    }
    Ok(())
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line_start: usize,
    /// Columns of the open block collections.
    indents: Vec<usize>,
    flow: usize,
}

fn blank(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn flow_indicator(c: Option<&u8>) -> bool {
    matches!(c, Some(b',' | b'[' | b']' | b'{' | b'}'))
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn depth_ok(&self) -> Result<(), usize> {
        if self.indents.len() + self.flow > MAX_DEPTH {
            Err(self.i)
        } else {
            Ok(())
        }
    }

    fn push(&mut self, column: usize) -> Result<(), usize> {
        self.indents.push(column);
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
    fn node(&mut self) -> Result<bool, usize> {
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
                        self.push(self.i - self.line_start)?;
                    }
                }
                b'[' | b'{' => {
                    self.flow_collection()?;
                    if !self.plain() {
                        return Ok(false);
                    }
                }
                b'\'' | b'"' => {
                    self.quoted();
                    if !self.plain() {
                        return Ok(false);
                    }
                }
                b'|' | b'>' => {
                    self.skip_line();
                    return Ok(true);
                }
                b'&' | b'!' => self.token(),
                _ => {
                    if !self.plain() {
                        return Ok(false);
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
    fn flow_collection(&mut self) -> Result<(), usize> {
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
                    self.quoted();
                    (node_start, after_node) = (false, true);
                }
                b':' | b'?' if node_start || after_node || blank(next) || flow_indicator(next) => {
                    self.i += 1;
                    (node_start, after_node) = (true, false);
                }
                b'&' | b'!' | b'*' if node_start => {
                    self.token();
                    node_start = c != b'*';
                    after_node = c == b'*';
                }
                _ => {
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
        assert_eq!(check(&format!("{}x\n", "- ".repeat(MAX_DEPTH))), Err(2 * MAX_DEPTH));
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

    #[test]
    fn documents_reset_block_nesting() {
        let doc = (0..MAX_DEPTH).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>();
        assert_eq!(check(&format!("{doc}---\n{doc}")), Ok(()));
    }
}
