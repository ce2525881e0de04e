//! A server-side Table printed the way kubectl prints it.

use serde_json::Value;

use super::TabWriter;

/// Headers are the column names upper-cased; priority > 0 columns only when `wide`;
/// `namespaces` adds kubectl's NAMESPACE column from each row's object metadata.
pub fn print_table(table: &Value, wide: bool, namespaces: bool) -> String {
    let columns = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
    let shown: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut w = TabWriter::new(6, 3);
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(
        shown.iter().map(|&i| columns[i]["name"].as_str().unwrap_or_default().to_uppercase()),
    );
    w.write(&header.join("\t"));
    w.write("\n");
    for row in table["rows"].as_array().into_iter().flatten() {
        let mut cells: Vec<String> = Vec::new();
        if namespaces {
            cells.push(
                row["object"]["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
            );
        }
        cells.extend(shown.iter().map(|&i| match &row["cells"][i] {
            Value::String(s) => s.clone(),
            Value::Null => "<none>".into(),
            other => other.to_string(),
        }));
        w.write(&cells.join("\t"));
        w.write("\n");
    }
    w.finish()
}
