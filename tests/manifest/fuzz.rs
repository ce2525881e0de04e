//! The parser never panics, whatever it is fed: random bytes, and valid manifests mutated.

use std::path::Path;

use outpost::manifest::parse_bytes;
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir("static-manifests")
        .expect("static-manifests")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    files
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // YAML's structural characters make the interesting mutations.
    let yamlish =
        prop::sample::select(b"-:[]{}&*!|>'\"#%@` \n\t,?0123456789abcdeyYnN~.\\".to_vec());
    prop_oneof![
        (any::<usize>(), 1..40usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), prop::collection::vec(yamlish.clone(), 1..8))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), yamlish).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), 1..200usize).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match m {
        Mutation::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Replace(at, b) => {
            if !bytes.is_empty() {
                bytes[at % len] = *b;
            }
        }
        Mutation::Duplicate(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            let chunk = bytes[at.min(end)..end].to_vec();
            bytes.splice(at..at, chunk);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes(Path::new("fuzz.yaml"), &bytes);
    }

    #[test]
    fn mutated_manifests_never_panic(seed in 0..64usize, mutations in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let mut bytes = seeds[seed % seeds.len()].clone();
        for m in &mutations {
            bytes = apply(bytes, m);
        }
        // Errors must carry a position inside the file.
        if let Err(errors) = parse_bytes(Path::new("fuzz.yaml"), &bytes) {
            prop_assert!(!errors.is_empty());
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            for e in &errors {
                prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e} outside {lines} lines");
                prop_assert!(e.column >= 1, "{e}");
            }
        }
    }
}
