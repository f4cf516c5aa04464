//! The dependency rule of docs/architecture.md, checked on the source: no
//! module's code reaches a module above it (`crate::X` in a lower module
//! for an upper X). Unit-test code (`#[cfg(test)]` modules at the end of a
//! file, `tests.rs` files, the `testing` helpers) may set up fixtures with
//! any module and is not checked.

use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use the modules of the layers
/// before its own, never one of its own layer (peers: the two pool
/// backends, the mount and the control socket) or one above. The doors
/// come last; `cli` composes them.
const LAYERS: &[&[&str]] = &[
    &["crypto"],
    &["util"],
    &["audit"],
    &["kms"],
    &["kmip"],
    &["catalog"],
    &["pipeline"],
    &["tape", "msdp"],
    &["store"],
    &["import"],
    &["engine"],
    &["fs", "control"],
    &["cli", "fuzzing"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The production code of a file: comments and the trailing test module cut.
fn production_code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        // An inline test module (`mod tests {`) ends the production code;
        // `mod tests;` does not (its file is checked as tests.rs).
        if t.starts_with("#[cfg(test)]")
            && lines.get(i + 1).is_some_and(|n| {
                let n = n.trim_start();
                n.starts_with("mod ") && n.contains('{')
            })
        {
            break;
        }
        let code = strip_comment(line);
        out.push((i + 1, code.to_string()));
    }
    out
}

/// A line without its `//` comment (a `//` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let b = line.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b'"' if i == 0 || b[i - 1] != b'\\' => quoted = !quoted,
            b'/' if !quoted && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Ways around the check it refuses outright: an alias of `crate`, a
/// `super::super` path (which could climb out of a module), a path cut
/// across lines.
fn evasions(line: &str) -> Option<&'static str> {
    let l = line.trim_end();
    if l.contains("crate as ") {
        Some("an alias of crate")
    } else if l.contains("super::super") {
        Some("super::super")
    } else if l.ends_with("crate::") {
        Some("a crate:: path cut across lines")
    } else {
        None
    }
}

/// Every `crate::NAME` a line refers to.
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.push(name);
        }
        rest = after;
    }
    refs
}

/// Upward references in the tree at `src`: "file:line: A uses B".
fn upward(src: &Path) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files {
        let module = module_of(src, &f);
        if module == "testing" || f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(me) = rank(&module) else { continue };
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in production_code(&text) {
            if line.contains("crate::{") {
                // The check reads one module per path: keep it readable.
                found.push(format!("{}:{n}: grouped crate::{{…}} use", f.display()));
            }
            if let Some(what) = evasions(&line) {
                found.push(format!("{}:{n}: {what}", f.display()));
            }
            for r in crate_refs(&line) {
                if let Some(them) = rank(&r)
                    && (them > me || (them == me && r != module))
                {
                    found.push(format!("{}:{n}: {module} uses {r}", f.display()));
                }
            }
        }
    }
    found
}

/// The tree checked: `src/`, or another (an old checkout) named by
/// `ARCHITECTURE_SRC`.
fn source_tree() -> PathBuf {
    std::env::var_os("ARCHITECTURE_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_module_uses_one_above_it() {
    let src = source_tree();
    let found = upward(&src);
    assert!(
        found.is_empty(),
        "upward dependencies:\n{}",
        found.join("\n")
    );
}

/// lib.rs only declares modules: a re-export there (`pub use cli::x`)
/// would let a low module reach a high one as `crate::x`.
#[test]
fn the_crate_root_re_exports_nothing() {
    let lib = std::fs::read_to_string(source_tree().join("lib.rs")).unwrap();
    for l in lib.lines().map(str::trim) {
        assert!(
            !l.starts_with("pub use") && !l.starts_with("use "),
            "lib.rs: {l}"
        );
    }
}

#[test]
fn every_module_is_placed_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let m = module_of(&src, &p);
        if matches!(m.as_str(), "lib" | "main" | "testing") {
            continue;
        }
        assert!(
            LAYERS.iter().any(|l| l.contains(&m.as_str())),
            "module {m} is in no layer"
        );
    }
}

#[test]
fn the_check_sees_an_upward_use() {
    // The checker itself can fail: a planted upward use is reported.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("kms")).unwrap();
    std::fs::write(
        d.path().join("kms/x.rs"),
        "use crate::crypto::x;\n// crate::cli in a comment\nfn f() { crate::store::open(); }\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    )
    .unwrap();
    std::fs::create_dir(d.path().join("tape")).unwrap();
    std::fs::write(
        d.path().join("tape/y.rs"),
        "use crate::msdp::Peer;\nuse crate::tape::Me;\nconst S: &str = \"a // b\"; use crate::cli::Y;\n#[cfg(test)]\nmod tests;\nuse crate as c;\nuse super::super::x;\n",
    )
    .unwrap();
    let found = upward(d.path());
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(found[0].ends_with("x.rs:3: kms uses store"), "{found:?}");
    assert!(
        found[1].ends_with("y.rs:1: tape uses msdp"),
        "a peer: {found:?}"
    );
    assert!(
        found[2].ends_with("y.rs:3: tape uses cli"),
        "after a // in a string: {found:?}"
    );
    assert!(found[3].ends_with("y.rs:6: an alias of crate"), "{found:?}");
    assert!(found[4].ends_with("y.rs:7: super::super"), "{found:?}");
}

/// Sibling files a file names as `super::NAME` (mod.rs, the parent, left
/// out: its siblings use its types and it declares them).
fn sibling_uses(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            files.push(p.file_stem().unwrap().to_string_lossy().to_string());
        }
    }
    let mut edges = Vec::new();
    for f in files.iter().filter(|f| *f != "mod" && *f != "tests") {
        let text = std::fs::read_to_string(dir.join(format!("{f}.rs"))).unwrap();
        for (_, line) in production_code(&text) {
            let mut rest = line.as_str();
            while let Some(at) = rest.find("super::") {
                let after = &rest[at + "super::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != *f && name != "mod" && files.contains(&name) {
                    edges.push((f.clone(), name));
                }
                rest = after;
            }
        }
    }
    edges.sort();
    edges.dedup();
    edges
}

/// A cycle among `edges`, if there is one, as the files on it.
fn cycle(edges: &[(String, String)]) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &[(String, String)],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            return Some(path[i..].to_vec());
        }
        if done.iter().any(|d| d == n) {
            return None;
        }
        path.push(n.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == n) {
            if let Some(c) = visit(to, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(n.to_string());
        None
    }
    let mut done = Vec::new();
    edges
        .iter()
        .find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
}

/// Inside a module its files form layers too: no two files reach each
/// other, directly or round a loop (the catalog's image commit and its LSU
/// persistence once did).
#[test]
fn the_files_of_a_module_use_each_other_in_one_direction() {
    let src = source_tree();
    let mut found = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() || dir.ends_with("testing") {
            continue;
        }
        if let Some(c) = cycle(&sibling_uses(&dir)) {
            found.push(format!("{}: {}", dir.display(), c.join(" -> ")));
        }
    }
    assert!(
        found.is_empty(),
        "cycles between files:\n{}",
        found.join("\n")
    );
}
