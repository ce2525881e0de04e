//! Go's `text/tabwriter` (elastic tabstops), which kubectl's tables and `describe` use: cells
//! end with `\t`, a column block is a run of lines having that cell, its width is the widest
//! cell plus padding; the last cell of a line is not part of a column.

pub struct TabWriter {
    minwidth: usize,
    padding: usize,
    text: String,
}

impl TabWriter {
    pub fn new(minwidth: usize, padding: usize) -> Self {
        Self { minwidth, padding, text: String::new() }
    }

    pub fn write(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// The aligned text.
    pub fn finish(self) -> String {
        let lines: Vec<Vec<&str>> =
            self.text.split('\n').map(|l| l.split('\t').collect()).collect();
        let mut out = String::with_capacity(self.text.len() * 2);
        let mut widths = Vec::new();
        self.format(&lines, &mut out, &mut widths, 0, lines.len());
        out
    }

    fn format(
        &self,
        lines: &[Vec<&str>],
        out: &mut String,
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(lines, out, widths, line0, this);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, out, widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, out, widths, line0, line1);
    }

    fn write_lines(
        &self,
        lines: &[Vec<&str>],
        out: &mut String,
        widths: &[usize],
        line0: usize,
        line1: usize,
    ) {
        for (i, line) in lines.iter().enumerate().take(line1).skip(line0) {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if let Some(w) = widths.get(j) {
                    let pad = w.saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            if i + 1 < lines.len() {
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_like_go() {
        let mut w = TabWriter::new(6, 3);
        w.write("NAME\tREADY\tSTATUS\n");
        w.write("web\t1/1\tRunning\n");
        w.write("a-longer-name\t0/1\tPending\n");
        assert_eq!(
            w.finish(),
            "NAME            READY   STATUS\nweb             1/1     Running\na-longer-name   0/1     Pending\n"
        );
        // A line without tabs ends the column block: alignment restarts after it.
        let mut w = TabWriter::new(0, 2);
        w.write("Name:\tweb\nNamespace:\tdefault\nContainers:\n  app:\n    Image:\tbusybox\n    Restart Count:\t0\n");
        assert_eq!(
            w.finish(),
            "Name:       web\nNamespace:  default\nContainers:\n  app:\n    Image:          busybox\n    Restart Count:  0\n"
        );
    }
}
