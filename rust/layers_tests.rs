//! The crate's modules form a one-way stack: each imports only modules that
//! `lib.rs` declares before it. Read from the sources: every `crate::` path
//! outside a module's tests, a re-exported item counted as an import of the
//! module that defines it.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

const TEST_MODULES: [&str; 6] = [
    "kernel_tests",
    "storage_tests",
    "layers_tests",
    "q8_tests",
    "stack_tests",
    "candle_tests",
];

/// The modules in `lib.rs`'s order, and the module each re-exported item comes from.
fn stack(lib: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut order = Vec::new();
    let mut items = HashMap::new();
    for line in lib.lines().map(str::trim) {
        let line = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
            if !TEST_MODULES.contains(&name) {
                order.push(name.to_string());
            }
        }
    }
    // `pub use module::{a, b};`, possibly over several lines.
    for statement in lib.split(';') {
        let statement = statement.trim();
        let Some(body) = statement
            .rsplit("pub use ")
            .next()
            .filter(|_| statement.contains("pub use "))
        else {
            continue;
        };
        let Some((module, names)) = body.split_once("::") else {
            continue;
        };
        let names = names.trim_matches(|c: char| c == '{' || c == '}' || c.is_whitespace());
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            items.insert(name.to_string(), module.trim().to_string());
        }
    }
    (order, items)
}

/// A module's code: its files (`module.rs` or `module/mod.rs`, and the files
/// under `module/`) without their `#[cfg(test)]` modules (which come last, or
/// are files of their own, named `*_tests.rs`) and without comments (a doc
/// link is no import).
fn source_of(root: &Path, module: &str) -> String {
    let mut files: Vec<_> = [root.join(format!("{module}.rs"))]
        .into_iter()
        .filter(|f| f.exists())
        .collect();
    if let Ok(dir) = fs::read_dir(root.join(module)) {
        let mut nested: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        nested.retain(|f| !f.to_string_lossy().ends_with("_tests.rs"));
        nested.sort();
        files.extend(nested);
    }
    assert!(!files.is_empty(), "no source of module {module}");
    let mut text = String::new();
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        let body = match source.find("#[cfg(test)]\nmod tests") {
            Some(end) => &source[..end],
            None => &source[..],
        };
        for line in body.lines().filter(|l| !l.trim_start().starts_with("//")) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The crate modules `source` refers to through `crate::` paths.
fn imports(source: &str, modules: &[String], items: &HashMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group[..group.find('}').unwrap()].split(',').collect()
        } else {
            vec![rest]
        };
        for name in names {
            let name = name.trim();
            let word: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let module = if modules.contains(&word) {
                Some(word)
            } else {
                items.get(&word).cloned()
            };
            found.extend(module);
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_module_imports_only_modules_declared_before_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rust");
    let lib = fs::read_to_string(root.join("lib.rs")).unwrap();
    let (order, items) = stack(&lib);
    assert!(
        order.len() > 10 && order.iter().any(|m| m == "python"),
        "{order:?}"
    );
    let mut checked = 0;
    for (position, module) in order.iter().enumerate() {
        for import in imports(&source_of(&root, module), &order, &items) {
            let at = order.iter().position(|m| *m == import).unwrap();
            assert!(
                at <= position,
                "{module} imports {import}, which lib.rs declares after it"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} imports found: is the parsing right?"
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let order: Vec<String> = ["element", "kernel"].map(String::from).to_vec();
    let items = HashMap::from([("Coeffs".to_string(), "kernel".to_string())]);
    let source = "use crate::{Coeffs, element::Float};\nfn f() { crate::kernel::update(); }";
    assert_eq!(imports(source, &order, &items), ["element", "kernel"]);
    let lib = "mod element;\npub mod kernel;\npub use kernel::{\n    Coeffs, flags,\n};\n";
    let (stacked, exported) = stack(lib);
    assert_eq!(stacked, order);
    assert_eq!(exported.get("flags").map(String::as_str), Some("kernel"));
}
