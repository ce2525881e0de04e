//! Worst-case parse time of hostile 1 MiB manifests (deep nesting in every style, wide
//! documents just under the depth limit, aliases, many keys, documents and containers).
//! Each shape also comes cut to just under the node and document limits (`... at limit`), the
//! worst a file that passes the pre-scan can be. Prints each input's slowest of 3 runs, flags
//! any over the 100 ms bound per file, and the maximum.
//!
//! cargo bench --bench manifest_hostile

use std::path::Path;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const BOUND: Duration = Duration::from_millis(100);

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

/// `prefix`, then as many `unit`s as the pre-scan's node and document limits let through.
fn at_limit(prefix: &str, unit: &str, suffix: &str) -> String {
    let text = |n: usize| format!("{prefix}{}{suffix}", unit.repeat(n));
    let refused = |n: usize| {
        let t = text(n);
        t.len() > MIB
            || outpost::manifest::parse_str(Path::new("x"), &t).is_err_and(|e| {
                e[0].message.starts_with("more than") && e[0].message.contains("in one file")
            })
    };
    let (mut ok, mut bad) = (0, 1);
    while !refused(bad) {
        (ok, bad) = (bad, bad * 2);
    }
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        if refused(mid) {
            bad = mid;
        } else {
            ok = mid;
        }
    }
    text(ok)
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
        ("wide [ at limit", at_limit("a: [", &format!("{}1{},", "[".repeat(98), "]".repeat(98)), "]\n")),
        ("wide json at limit", at_limit("a: [", &format!("{}1{},", r#"{"a":"#.repeat(98), "}".repeat(98)), "]\n")),
        ("wide - - - at limit", at_limit("", &format!("{}x\n", "- ".repeat(98)), "")),
        ("flow list at limit", at_limit("a: [", "1,", "]\n")),
        ("keys at limit", at_limit("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n", "  k: v\n", "")),
        ("documents at limit", at_limit("", "---\na: 1\n", "")),
        ("pods at limit", at_limit("", "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n", "")),
        ("containers at limit", at_limit(pod, "  - {name: a, image: b}\n", "")),
        ("env at limit", at_limit(&format!("{pod}  - name: a\n    image: b\n    env:\n"), "    - {name: A, value: b}\n", "")),
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
        let flag = if slowest > BOUND { "OVER" } else { "" };
        println!("{name:<22} {:>7} KiB {:>9.1?} {flag:>4}  {outcome}", text.len() / 1024, slowest);
        if slowest > worst.0 {
            worst = (slowest, name);
        }
    }
    let verdict = if worst.0 > BOUND { "OVER the 100 ms bound" } else { "within 100 ms" };
    println!("max: {:.1?} ({}): {verdict}", worst.0, worst.1);
}
