//! Worst-case parse time of hostile 1 MiB manifests (deep nesting in every style, wide
//! documents just under the depth limit, aliases, many keys, documents and containers).
//! Prints each input's slowest of 3 runs and the maximum; the bound is 100 ms per file.
//!
//! cargo bench --bench manifest_hostile

use std::path::Path;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// `prefix`, then `unit` repeated to fill 1 MiB, then `suffix`.
fn fill(prefix: &str, unit: &str, suffix: &str) -> String {
    let n = (MIB - prefix.len() - suffix.len()) / unit.len();
    format!("{prefix}{}{suffix}", unit.repeat(n))
}

/// Nesting `depth` deep, repeated side by side in one flow sequence to fill 1 MiB.
fn wide(open: &str, leaf: &str, close: &str, depth: usize) -> String {
    let one = format!("{}{leaf}{},", open.repeat(depth), close.repeat(depth));
    fill("a: [", &one, "]\n")
}

fn inputs() -> Vec<(&'static str, String)> {
    let stairs: String = (0..1400).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let mut chain = String::from("a0: &a0 [1]\n");
    for i in 1..60 {
        chain += &format!("a{i}: &a{i} [{}*a{}{}]\n", "[".repeat(40), i - 1, "]".repeat(40));
    }
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n";
    vec![
        ("deep [", fill("", "[", "")),
        ("deep {a:", fill("", "{a:", "")),
        ("deep json {\"\":", fill("", r#"{"":"#, "")),
        ("deep - - -", fill("", "- ", "")),
        ("deep ? ? ?", fill("", "? ", "")),
        ("deep &a !t [", fill("", "&a !t [", "")),
        ("deep block stairs", stairs),
        ("wide [ x98", wide("[", "1", "]", 98)),
        ("wide {a: x98", wide("{a: ", "1", "}", 98)),
        ("wide json x98", wide(r#"{"a":"#, "1", "}", 98)),
        ("wide - - - x98", fill("", &format!("{}x\n", "- ".repeat(98)), "")),
        ("wide &a [ x98", wide("&a [", "*a", "]", 98)),
        ("alias chain", chain),
        (
            "alias bomb",
            "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n".to_string(),
        ),
        ("many keys", fill("apiVersion: v1\nkind: Pod\nspec:\n", "  k: 1\n", "")),
        ("many documents", fill("", "---\na: 1\n", "")),
        ("many containers", fill(pod, "  - {name: a, image: b}\n", "")),
        ("many env", fill(&format!("{pod}  - name: a\n    image: b\n    env:\n"), "    - {name: A, value: b}\n", "")),
        ("long plain scalar", fill("a: ", "x", "\n")),
        ("long quoted scalar", fill("a: \"", "\\\"", "\"\n")),
        ("unclosed quote", fill("a: \"", "x", "")),
        ("many flow keys", fill("a: {", "k: 1, ", "}\n")),
    ]
}

fn main() {
    let mut worst = (Duration::ZERO, "");
    for (name, text) in inputs() {
        assert!(text.len() <= MIB, "{name}: {} bytes", text.len());
        let mut slowest = Duration::ZERO;
        let mut outcome = String::new();
        for _ in 0..3 {
            let t = Instant::now();
            let r = outpost::manifest::parse_bytes(Path::new("hostile.yaml"), text.as_bytes());
            slowest = slowest.max(t.elapsed());
            outcome = match r {
                Ok(docs) => format!("accepted, {} objects", docs.len()),
                Err(e) => format!("{} errors, first: {}", e.len(), e[0]),
            };
        }
        outcome.truncate(110);
        println!("{name:<22} {:>7} KiB {:>9.1?}  {outcome}", text.len() / 1024, slowest);
        if slowest > worst.0 {
            worst = (slowest, name);
        }
    }
    println!("max: {:.1?} ({})", worst.0, worst.1);
}
