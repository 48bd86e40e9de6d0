//! The architecture test: imports point down the layers, and no two modules import each other.
//!
//! It reads the `crate::…` and `super::…` paths of every file under `src/` (imports and paths
//! written inline, outside comments and strings) and fails on one that points to a layer the
//! importing layer may not use, or that closes a cycle between two units (a top-level module,
//! or a module one level down in a folder layer such as `engine`), naming the file, the path
//! and the rule. [`LAYERS`] is the one table of what may use what; `ARCHITECTURE.md` points
//! here. Test code inside `src/` obeys the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: each names its top-level modules and the layers it may import
/// (besides itself). A module of a folder layer (`engine`, `infra`, `service`, `edge`, `tools`)
/// is one unit per child: `engine::rules` and `engine::decision` are two units, which may use
/// each other in one direction only.
const LAYERS: &[Layer] = &[
    Layer {
        name: "domain",
        modules: &["domain"],
        uses: &[],
        why: "the vocabulary is a leaf",
    },
    Layer {
        name: "base",
        modules: &["config", "guard", "fault", "corpus", "telemetry"],
        uses: &["domain"],
        why: "settings and cross-cutting helpers know only the vocabulary",
    },
    Layer {
        name: "engine",
        modules: &["engine"],
        uses: &["domain", "base"],
        why: "the engines are pure: no state, storage, model or network",
    },
    Layer {
        name: "infra",
        modules: &["infra"],
        uses: &["domain", "base"],
        why: "state and infrastructure store and compute; they never decide",
    },
    Layer {
        name: "service",
        modules: &["service"],
        uses: &["domain", "base", "engine", "infra"],
        why: "the services know no wire format",
    },
    Layer {
        name: "wire",
        modules: &["proto"],
        uses: &[],
        why: "generated code",
    },
    Layer {
        name: "edge",
        modules: &["edge"],
        uses: &["domain", "base", "engine", "infra", "service", "wire"],
        why: "edges convert and call the services",
    },
    Layer {
        name: "client",
        modules: &["bridge"],
        uses: &["domain", "base", "wire"],
        why: "the chat bridge is a client of the API",
    },
    Layer {
        name: "tools",
        modules: &["tools"],
        uses: &["domain", "base", "engine", "infra", "service", "client"],
        why: "tools are built on the layers (not on the server's edges); nothing is built on tools",
    },
    Layer {
        name: "app",
        modules: &["app"],
        uses: &[
            "domain", "base", "engine", "infra", "service", "wire", "edge",
        ],
        why: "wiring",
    },
    Layer {
        name: "cli",
        modules: &["cli"],
        uses: &[
            "domain", "base", "engine", "infra", "service", "wire", "edge", "client", "tools",
            "app",
        ],
        why: "the command line starts everything",
    },
];

/// Layers whose top-level module is a folder of units.
const FOLDER_LAYERS: &[&str] = &["engine", "infra", "service", "edge", "tools"];

/// External crates a layer must not use (I/O, async runtimes, wire formats), with why.
const FORBIDDEN_CRATES: &[(&str, &[&str], &str)] = &[
    (
        "domain",
        &["tokio", "metrics", "tracing"],
        "the vocabulary does no I/O",
    ),
    ("engine", &["tokio", "hyper"], "the engines do no I/O"),
];

/// External crates only some units may use, with why: each part of the outside world has one
/// owner.
const OWNED_CRATES: &[(&str, &[&str], &str)] = &[
    ("sqlx", &["infra::store"], "only the store writes SQL"),
    ("redis", &["infra::users"], "only user state talks to Redis"),
    (
        "candle_core",
        &["infra::model"],
        "only the model knows candle and tokenizers",
    ),
    (
        "candle_nn",
        &["infra::model"],
        "only the model knows candle",
    ),
    (
        "candle_transformers",
        &["infra::model"],
        "only the model knows candle",
    ),
    (
        "tokenizers",
        &["infra::model"],
        "only the model knows tokenizers",
    ),
    (
        "tonic",
        &["edge", "proto", "app", "bridge"],
        "only the edges, their wiring and the bridge know gRPC",
    ),
    (
        "prost",
        &["edge", "proto", "app", "bridge"],
        "only the edges, their wiring and the bridge know protobuf",
    ),
    ("axum", &["edge::http"], "only the HTTP edge serves HTTP"),
    (
        "prost_reflect",
        &["edge::http"],
        "only the HTTP edge turns JSON into protobuf",
    ),
    (
        "tokio_tungstenite",
        &["bridge"],
        "only the bridge speaks WebSocket",
    ),
];

struct Layer {
    name: &'static str,
    modules: &'static [&'static str],
    uses: &'static [&'static str],
    why: &'static str,
}

fn layer_of(top: &str) -> Option<&'static Layer> {
    LAYERS.iter().find(|l| l.modules.contains(&top))
}

/// One path to another part of the crate, as written in a file.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    line: usize,
    /// The module path it resolves to (`["engine", "rules", "RuleSet"]`).
    target: Vec<String>,
    written: String,
}

/// The module path of a file under `src/`: `src/engine/rules/mod.rs` → `engine::rules`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The unit a module path belongs to: its top-level module, or the first two segments in a
/// folder layer.
fn unit_of(path: &[String]) -> Option<String> {
    let top = path.first()?;
    let layer = layer_of(top)?;
    if FOLDER_LAYERS.contains(&layer.name) {
        let child = path.get(1)?;
        Some(format!("{top}::{child}"))
    } else {
        Some(top.clone())
    }
}

/// `text` with comments, string and character literals blanked (lines kept), so that only
/// code is searched.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &str| {
        for c in s.chars() {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(rest.len(), |e| e);
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += rest[j..].chars().next().map_or(1, char::len_utf8);
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(raw) = raw_string_len(rest) {
            blank(&mut out, &rest[..raw]);
            i += raw;
        } else if rest.starts_with('"') || rest.starts_with("b\"") {
            let start = if rest.starts_with('"') { 1 } else { 2 };
            let mut j = start;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            let j = j.min(rest.len());
            let j = (0..=j)
                .rev()
                .find(|&k| rest.is_char_boundary(k))
                .unwrap_or(0);
            blank(&mut out, &rest[..j]);
            i += j.max(1);
        } else if let Some(len) = char_literal_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let after_prefix = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let prefix = s.len() - after_prefix.len();
    let hashes = after_prefix.bytes().take_while(|&b| b == b'#').count();
    if after_prefix.as_bytes().get(hashes) != Some(&b'"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let body = prefix + hashes + 1;
    let end = s[body..].find(&close)?;
    Some(body + end + close.len())
}

/// The length of a character literal (`'a'`, `'\n'`, `'\u{1F600}'`) at the start of `s`; not
/// a lifetime.
fn char_literal_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('\'')?;
    if let Some(escaped) = rest.strip_prefix('\\') {
        let end = escaped.find('\'')?;
        return (end <= 10).then_some(1 + 1 + end + 1);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..]
        .starts_with('\'')
        .then_some(1 + c.len_utf8() + 1)
}

/// Every `crate::…` and `super::…` path in `code`, resolved from module `here`, expanding
/// `{…}` groups one level deep per segment.
fn paths_in(code: &str, file_module: &[String]) -> Vec<(usize, Vec<String>, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let inline = inline_modules(code);
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        // The module the path is written in: the file's, and any `mod name { … }` around it.
        let mut here = file_module.to_vec();
        here.extend(
            inline
                .iter()
                .filter(|(from, to, _)| (*from..*to).contains(&start))
                .map(|(_, _, name)| name.clone()),
        );
        let mut base: Vec<String> = Vec::new();
        let mut rest = &code[start..];
        if let Some(r) = rest.strip_prefix("crate::") {
            rest = r;
        } else {
            base = here.clone();
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
        }
        for (path, written) in expand(rest, &base) {
            found.push((line, path, written));
        }
    }
    found
}

/// The inline modules (`mod name { … }`) of `code`: where each body starts and ends, and its
/// name, outermost first.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        let before = at.checked_sub(1).map(|i| code.as_bytes()[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        let mut end = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((open, end, name));
    }
    found
}

/// The paths a path tail names: `a::b::C` or `a::{b::C, d}` (the first segments of each).
fn expand(tail: &str, base: &[String]) -> Vec<(Vec<String>, String)> {
    let mut path = base.to_vec();
    let mut rest = tail.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &group[..end];
            let mut out = Vec::new();
            let mut depth = 0;
            let mut item_start = 0;
            for (i, c) in inner
                .char_indices()
                .chain(std::iter::once((inner.len(), ',')))
            {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = inner[item_start..i.min(inner.len())].trim();
                        if !item.is_empty() && item != "self" {
                            out.extend(expand(item, &path));
                        } else if item == "self" {
                            out.push((path.clone(), path.join("::")));
                        }
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            return out;
        }
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            return vec![(path.clone(), path.join("::"))];
        }
        path.push(ident.clone());
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r.trim_start(),
            None => return vec![(path.clone(), path.join("::"))],
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn imports(src: &Path) -> Vec<(Vec<String>, Import)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut all = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src/").to_owned();
        let here = module_of(&relative);
        let code = code_only(&std::fs::read_to_string(&file).expect("read a source file"));
        for (line, target, written) in paths_in(&code, &here) {
            all.push((
                here.clone(),
                Import {
                    file: Path::new("src").join(&relative),
                    line,
                    target,
                    written,
                },
            ));
        }
    }
    all
}

/// The problems with the tree under `src`, one line each.
fn problems(src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for (here, import) in imports(src) {
        let (Some(from_top), Some(to_top)) = (here.first(), import.target.first()) else {
            continue;
        };
        let (Some(from), Some(to)) = (unit_of(&here), unit_of(&import.target)) else {
            if layer_of(from_top).is_none() {
                problems.push(format!(
                    "{}: module `{from_top}` is in no layer: add it to LAYERS in src/layers.rs",
                    import.file.display()
                ));
            }
            if layer_of(to_top).is_none() && to_top != "tests" {
                problems.push(format!(
                    "{}:{}: `{}` names module `{to_top}`, which is in no layer of src/layers.rs",
                    import.file.display(),
                    import.line,
                    import.written
                ));
            }
            continue;
        };
        if from == to {
            continue;
        }
        let (from_layer, to_layer) = (
            layer_of(from_top).expect("a layer"),
            layer_of(to_top).expect("a layer"),
        );
        if from_layer.name != to_layer.name && !from_layer.uses.contains(&to_layer.name) {
            problems.push(format!(
                "{}:{}: `crate::{}` points from layer `{}` to layer `{}`, which it may not use \
                 ({}: it may use {:?})",
                import.file.display(),
                import.line,
                import.written,
                from_layer.name,
                to_layer.name,
                from_layer.why,
                from_layer.uses
            ));
        }
        edges.entry(from).or_default().entry(to).or_insert(import);
    }
    // Cycles: a unit that reaches itself through the imports of others.
    let mut reported = BTreeSet::new();
    for (from, targets) in &edges {
        for (to, import) in targets {
            if let Some(back) = path_between(&edges, to, from)
                && reported.insert((from.min(to).clone(), from.max(to).clone()))
            {
                let chain: Vec<String> = back
                    .windows(2)
                    .filter_map(|w| {
                        let i = edges.get(&w[0])?.get(&w[1])?;
                        Some(format!(
                            "{} → {} ({}:{} `{}`)",
                            w[0],
                            w[1],
                            i.file.display(),
                            i.line,
                            i.written
                        ))
                    })
                    .collect();
                problems.push(format!(
                    "{}:{}: `crate::{}` closes a cycle: {from} → {to}, and back: {}",
                    import.file.display(),
                    import.line,
                    import.written,
                    chain.join(", ")
                ));
            }
        }
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for file in files {
        let relative = file.strip_prefix(src).expect("under src/").to_owned();
        let here = module_of(&relative);
        let (Some(top), Some(unit)) = (here.first(), unit_of(&here)) else {
            continue;
        };
        let Some(layer) = layer_of(top) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let code = code_only(&text);
        let shown = Path::new("src").join(&relative);
        let forbidden = FORBIDDEN_CRATES
            .iter()
            .filter(|(name, _, _)| *name == layer.name)
            .flat_map(|(_, crates, why)| crates.iter().map(move |c| (*c, (*why).to_owned())));
        let owned = OWNED_CRATES
            .iter()
            .filter(|(_, owners, _)| !owners.iter().any(|o| *o == unit || o == top))
            .map(|(name, owners, why)| (*name, format!("{why} ({owners:?})")));
        for (name, why) in forbidden.chain(owned) {
            for (at, _) in code.match_indices(&format!("{name}::")) {
                let before = at.checked_sub(1).map(|i| code.as_bytes()[i]);
                if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                    continue;
                }
                let line = code[..at].matches('\n').count() + 1;
                problems.push(format!(
                    "{}:{line}: uses the crate `{name}` in `{unit}` (layer `{}`): {why}",
                    shown.display(),
                    layer.name
                ));
            }
        }
    }
    problems
}

/// A path of units from `from` to `to` along the imports, if there is one.
fn path_between(
    edges: &BTreeMap<String, BTreeMap<String, Import>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty").clone();
        if last == to {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in edges.get(&last).into_iter().flat_map(|t| t.keys()) {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

#[test]
fn imports_point_down_the_layers_and_close_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = problems(&src);
    assert!(
        problems.is_empty(),
        "{} architecture problems (the table is LAYERS in src/layers.rs):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_reader_finds_what_is_written() {
    let code = code_only(
        "use crate::{a::B, c::{d, e::F}};\n// crate::comment::X\nlet s = \"crate::string\";\n\
         fn f<'a>(x: &'a str) -> char { 'x' }\nsuper::super::g::h();\nmod tests { use super::i; }\n",
    );
    let here = vec!["m".to_owned(), "n".to_owned(), "o".to_owned()];
    let found: Vec<String> = paths_in(&code, &here)
        .into_iter()
        .map(|(line, path, _)| format!("{line}:{}", path.join("::")))
        .collect();
    assert_eq!(
        found,
        ["1:a::B", "1:c::d", "1:c::e::F", "5:m::g::h", "6:m::n::o::i"]
    );
    assert_eq!(
        module_of(Path::new("engine/rules/mod.rs")),
        ["engine", "rules"]
    );
    assert_eq!(
        module_of(Path::new("engine/rules/checks.rs")),
        ["engine", "rules", "checks"]
    );
    assert_eq!(module_of(Path::new("lib.rs")), Vec::<String>::new());
    assert_eq!(
        unit_of(&["engine".into(), "rules".into(), "X".into()]).as_deref(),
        Some("engine::rules")
    );
    assert_eq!(
        unit_of(&["config".into(), "X".into()]).as_deref(),
        Some("config")
    );
}

#[test]
fn a_cycle_and_an_upward_import_are_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path().join("src");
    for (file, text) in [
        ("domain/mod.rs", "use crate::config::X;\n"),
        ("config.rs", "use crate::domain::Y;\n"),
        ("engine/mod.rs", "pub mod a; pub mod b;\n"),
        ("engine/a.rs", "use crate::engine::b::Z;\n"),
        ("engine/b.rs", "use super::a::W;\nuse tokio::sync::Mutex;\n"),
    ] {
        let path = src.join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let problems = problems(&src);
    let text = problems.join("\n");
    assert!(
        text.contains(
            "src/domain/mod.rs:1: `crate::config::X` points from layer `domain` to layer `base`"
        ),
        "{text}"
    );
    assert!(
        text.contains("closes a cycle: config → domain")
            || text.contains("closes a cycle: domain → config"),
        "{text}"
    );
    assert!(
        text.contains("closes a cycle: engine::a → engine::b")
            || text.contains("closes a cycle: engine::b → engine::a"),
        "{text}"
    );
    assert!(
        text.contains("src/engine/b.rs:2: uses the crate `tokio` in `engine::b` (layer `engine`)"),
        "{text}"
    );
}

/// Where a file under `edge` reaches a field named `store` (`services.store`, `self.store`):
/// the database is the service layer's to read and write, so a second edge cannot copy how.
fn store_reaches(code: &str) -> Vec<usize> {
    let bytes = code.as_bytes();
    code.match_indices(".store")
        .filter(|&(at, m)| {
            let after = bytes.get(at + m.len()).copied().unwrap_or(b' ');
            !(after.is_ascii_alphanumeric() || after == b'_')
        })
        .map(|(at, _)| code[..at].matches('\n').count() + 1)
        .collect()
}

#[test]
fn edges_reach_the_database_only_through_the_services() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("edge"), &mut files);
    assert!(!files.is_empty(), "the edge layer has files");
    let mut found = Vec::new();
    for file in files {
        let code = code_only(&std::fs::read_to_string(&file).expect("read a source file"));
        for line in store_reaches(&code) {
            found.push(format!("{}:{line}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "edges call the store directly (add a `Services` method instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_store_reach_is_found_and_a_lookalike_is_not() {
    let code = code_only("let a = services\n    .store\n    .action(id);\n// self.store.x()\n");
    assert_eq!(store_reaches(&code), vec![2]);
    assert_eq!(
        store_reaches(&code_only("x.stores.y(); x.store_id; \".store\"")),
        Vec::<usize>::new()
    );
}
