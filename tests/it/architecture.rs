//! The crate's module graph stays layered and acyclic: a top-level module imports only modules of
//! its own layer or a lower one, and neither the top-level modules nor the submodules of any
//! module import each other in a cycle. The sources are scanned as text, comments, string
//! literals and `#[cfg(test)]` items left out, so the test needs no parser and no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import modules of its own layer or of a lower one.
const LAYERS: &[&[&str]] = &[
    // Text helpers, networking modes and allow-list, the cloud call's error, retry and identity.
    &["text", "network", "cloud", "tls"],
    // The configuration file and the maintenance window it declares.
    &["config"],
    // What the configuration selects: the release and the stacks; the answers that write one.
    &["release", "stacks", "init"],
    // The CloudFormation templates rendered from the configuration and the release.
    &["render"],
    // The installation record and the lock that guards it.
    &["state"],
    // Creating, updating and deleting the stacks.
    &["provision"],
    // What runs over provisioning: upgrades, image mirroring, preflight checks, the control plane.
    &["upgrade", "mirror", "preflight", "control_plane"],
    // The AWS SDK adapters, which implement the traits of the layers below, and the exit statuses.
    &["aws", "error"],
    // One operation as the commands run it.
    &["operation"],
    // The command line, what it prints, its settings, and the commands that tie it all together.
    &["cli", "output", "settings", "commands"],
];

/// Modules whose submodules are not checked for cycles among themselves.
const SUBMODULES_UNCHECKED: &[&str] = &[];

const SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// One path in the source, resolved to the module it was written in and the absolute path it names.
#[derive(Debug, Clone)]
struct Reference {
    file: String,
    line: usize,
    /// The module the path is written in, from the crate root.
    from: Vec<String>,
    /// The path as written, for the failure messages.
    written: String,
    /// The path from the crate root.
    target: Vec<String>,
}

impl Reference {
    fn location(&self) -> String {
        format!("{}:{} `{}`", self.file, self.line, self.written)
    }
}

/// A path as the scanner found it, before it is resolved against the module tree.
struct RawPath {
    line: usize,
    module: Vec<String>,
    segments: Vec<String>,
    /// The name the path is imported as, when it comes from a `use` statement.
    imported_as: Option<String>,
}

struct SourceFile {
    /// Relative to the repository, for the failure messages.
    name: String,
    paths: Vec<RawPath>,
}

// ---------------------------------------------------------------------------------------------
// Reading the sources

/// Every `.rs` file and every directory below `directory`: a directory is a module too.
fn source_entries(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.push(path.clone());
            source_entries(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
    found.sort();
}

/// The module a file holds: `src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

fn is_identifier_char(character: u8) -> bool {
    character.is_ascii_alphanumeric() || character == b'_'
}

/// The source with comments and the contents of string and character literals replaced by
/// spaces, line breaks kept so that line numbers stay right.
fn blank_comments_and_literals(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(bytes.len())] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let mut index = 0;
    while index < bytes.len() {
        let rest = &bytes[index..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&byte| byte == b'\n')
                .map_or(bytes.len(), |offset| index + offset);
            blank(&mut out, index, end);
            index = end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut end = index;
            while end < bytes.len() {
                if bytes[end..].starts_with(b"/*") {
                    depth += 1;
                    end += 2;
                } else if bytes[end..].starts_with(b"*/") {
                    depth -= 1;
                    end += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    end += 1;
                }
            }
            blank(&mut out, index, end);
            index = end;
        } else if let Some(hashes) = raw_string_start(bytes, index) {
            let opening = index + 1 + hashes + 1;
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            let end = bytes[opening..]
                .windows(closing.len())
                .position(|window| window == closing.as_slice())
                .map_or(bytes.len(), |offset| opening + offset + closing.len());
            blank(&mut out, index, end);
            index = end;
        } else if bytes[index] == b'"' {
            let mut end = index + 1;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, index, end + 1);
            index = end + 1;
        } else if bytes[index] == b'\'' {
            // A character literal ('a', '\n', '\u{..}') rather than a lifetime ('a).
            let end = if rest.get(1) == Some(&b'\\') {
                rest.iter()
                    .skip(2)
                    .position(|&byte| byte == b'\'')
                    .map(|offset| index + 2 + offset + 1)
            } else {
                let width = std::str::from_utf8(&rest[1..])
                    .ok()
                    .and_then(|text| text.chars().next())
                    .map_or(1, char::len_utf8);
                (rest.get(1 + width) == Some(&b'\'')).then_some(index + 2 + width)
            };
            match end {
                Some(end) => {
                    blank(&mut out, index, end);
                    index = end;
                }
                None => index += 1,
            }
        } else {
            index += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The number of `#` of a raw string (`r"`, `r#"`, `br"`) that starts at `index`.
fn raw_string_start(bytes: &[u8], index: usize) -> Option<usize> {
    let starts_token = |at: usize| at == 0 || !is_identifier_char(bytes[at - 1]);
    let prefixed = bytes[index] == b'r'
        && (starts_token(index) || (bytes[index - 1] == b'b' && starts_token(index - 1)));
    if !prefixed {
        return None;
    }
    let hashes = bytes[index + 1..]
        .iter()
        .take_while(|&&byte| byte == b'#')
        .count();
    (bytes.get(index + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    PathSeparator,
    Punctuation(u8),
}

/// Identifiers, `::` and single punctuation characters, each with its line.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'\n' {
            line += 1;
            index += 1;
        } else if byte.is_ascii_whitespace() {
            index += 1;
        } else if is_identifier_char(byte) || byte >= 0x80 {
            let start = index;
            while index < bytes.len() && (is_identifier_char(bytes[index]) || bytes[index] >= 0x80)
            {
                index += 1;
            }
            tokens.push((Token::Identifier(text[start..index].to_string()), line));
        } else if bytes[index..].starts_with(b"::") {
            tokens.push((Token::PathSeparator, line));
            index += 2;
        } else {
            tokens.push((Token::Punctuation(byte), line));
            index += 1;
        }
    }
    tokens
}

/// The tokens without the items marked `#[cfg(test)]`: test modules may import anything.
fn without_test_items(tokens: Vec<(Token, usize)>) -> Vec<(Token, usize)> {
    let is = |token: &Token, punctuation: u8| *token == Token::Punctuation(punctuation);
    let identifier = |token: &Token, word: &str| *token == Token::Identifier(word.to_string());
    let mut kept = Vec::with_capacity(tokens.len());
    let mut index = 0;
    while index < tokens.len() {
        let window: Vec<&Token> = tokens[index..].iter().take(7).map(|(t, _)| t).collect();
        let test_attribute = window.len() == 7
            && is(window[0], b'#')
            && is(window[1], b'[')
            && identifier(window[2], "cfg")
            && is(window[3], b'(')
            && identifier(window[4], "test")
            && is(window[5], b')')
            && is(window[6], b']');
        if !test_attribute {
            kept.push(tokens[index].clone());
            index += 1;
            continue;
        }
        // Skip the item: up to a `;` outside brackets, or through the first braced block.
        index += 7;
        let mut depth = 0usize;
        while index < tokens.len() {
            let token = &tokens[index].0;
            if is(token, b'(') || is(token, b'[') {
                depth += 1;
            } else if is(token, b')') || is(token, b']') {
                depth = depth.saturating_sub(1);
            } else if is(token, b';') && depth == 0 {
                index += 1;
                break;
            } else if is(token, b'{') && depth == 0 {
                let mut braces = 0usize;
                while index < tokens.len() {
                    if is(&tokens[index].0, b'{') {
                        braces += 1;
                    } else if is(&tokens[index].0, b'}') {
                        braces -= 1;
                        if braces == 0 {
                            break;
                        }
                    }
                    index += 1;
                }
                index += 1;
                break;
            }
            index += 1;
        }
    }
    kept
}

/// Every path that starts with an identifier followed by `::`, with `use` groups
/// (`use crate::{a, b::{c, d}}`) expanded, and the inline modules (`mod name { .. }`) it is
/// written in.
fn scan(
    file_module: &[String],
    tokens: &[(Token, usize)],
    inline: &mut Vec<Vec<String>>,
) -> Vec<RawPath> {
    let mut paths = Vec::new();
    let mut modules: Vec<(String, usize)> = Vec::new();
    let mut braces = 0usize;
    let mut in_use = false;
    let mut index = 0;
    let current = |modules: &[(String, usize)]| -> Vec<String> {
        let mut module = file_module.to_vec();
        module.extend(modules.iter().map(|(name, _)| name.clone()));
        module
    };
    while index < tokens.len() {
        let (token, _) = &tokens[index];
        match token {
            Token::Punctuation(b'{') => braces += 1,
            Token::Punctuation(b'}') => {
                braces -= 1;
                if modules.last().is_some_and(|(_, depth)| *depth == braces) {
                    modules.pop();
                }
            }
            Token::Punctuation(b';') => in_use = false,
            Token::Identifier(word) if word == "use" => in_use = true,
            Token::Identifier(word) if word == "mod" => {
                if let (Some((Token::Identifier(name), _)), Some((Token::Punctuation(b'{'), _))) =
                    (tokens.get(index + 1), tokens.get(index + 2))
                {
                    modules.push((name.clone(), braces));
                    inline.push(current(&modules));
                    braces += 1;
                    index += 3;
                    continue;
                }
            }
            Token::Identifier(_) => {
                let starts_path = index == 0 || tokens[index - 1].0 != Token::PathSeparator;
                let continues =
                    tokens.get(index + 1).map(|(t, _)| t) == Some(&Token::PathSeparator);
                if starts_path && continues {
                    let module = current(&modules);
                    let mut found = Vec::new();
                    index = path_tree(tokens, index, Vec::new(), in_use, &mut found);
                    for (line, segments, imported_as) in found {
                        paths.push(RawPath {
                            line,
                            module: module.clone(),
                            segments,
                            imported_as,
                        });
                    }
                    continue;
                }
            }
            _ => {}
        }
        index += 1;
    }
    paths
}

/// Reads one path (or `use` tree) from `index`, pushing every leaf path; returns the index
/// after it.
fn path_tree(
    tokens: &[(Token, usize)],
    mut index: usize,
    mut prefix: Vec<String>,
    in_use: bool,
    found: &mut Vec<(usize, Vec<String>, Option<String>)>,
) -> usize {
    let line = tokens[index].1;
    loop {
        match tokens.get(index).map(|(t, _)| t) {
            Some(Token::Identifier(word)) => {
                prefix.push(word.clone());
                index += 1;
            }
            Some(Token::Punctuation(b'*')) => {
                prefix.push("*".to_string());
                index += 1;
            }
            Some(Token::Punctuation(b'{')) if in_use => {
                index += 1;
                loop {
                    match tokens.get(index).map(|(t, _)| t) {
                        Some(Token::Punctuation(b'}')) => return index + 1,
                        Some(Token::Punctuation(b',')) => index += 1,
                        Some(_) => index = path_tree(tokens, index, prefix.clone(), in_use, found),
                        None => return index,
                    }
                }
            }
            _ => break,
        }
        if tokens.get(index).map(|(t, _)| t) == Some(&Token::PathSeparator) {
            index += 1;
        } else {
            break;
        }
    }
    let mut imported_as = None;
    if in_use
        && tokens.get(index).map(|(t, _)| t) == Some(&Token::Identifier("as".to_string()))
        && let Some((Token::Identifier(alias), _)) = tokens.get(index + 1)
    {
        imported_as = Some(alias.clone());
        index += 2;
    }
    if in_use && imported_as.is_none() {
        imported_as = prefix
            .last()
            .filter(|last| *last != "self" && *last != "*")
            .cloned();
        if prefix.last().is_some_and(|last| last == "self") {
            prefix.pop();
            imported_as = prefix.last().cloned();
        }
    }
    found.push((line, prefix, imported_as));
    index
}

// ---------------------------------------------------------------------------------------------
// The graph

struct Crate {
    /// Every module: the files' modules and the inline ones.
    modules: BTreeSet<Vec<String>>,
    /// `(module, name)` to the absolute path the name is imported from in that module.
    imports: BTreeMap<(Vec<String>, String), Vec<String>>,
    references: Vec<Reference>,
}

/// The crate's modules and references, read once for all the tests.
fn crate_graph() -> &'static Crate {
    static CRATE: std::sync::OnceLock<Crate> = std::sync::OnceLock::new();
    CRATE.get_or_init(read_crate)
}

fn read_crate() -> Crate {
    let root = Path::new(SOURCES);
    let mut entries = Vec::new();
    source_entries(root, &mut entries);
    let mut modules = BTreeSet::new();
    let mut files = Vec::new();
    let mut inline = Vec::new();
    for path in entries {
        let relative = path.strip_prefix(root).unwrap();
        // The binaries and the crate root sit above every module.
        if relative.starts_with("bin")
            || relative == Path::new("lib.rs")
            || relative == Path::new("main.rs")
        {
            continue;
        }
        let module = module_of(relative);
        modules.insert(module.clone());
        if path.is_dir() {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let tokens = without_test_items(tokens(&blank_comments_and_literals(&source)));
        let paths = scan(&module, &tokens, &mut inline);
        files.push(SourceFile {
            name: format!("src/{}", relative.display()),
            paths,
        });
    }
    modules.extend(inline);
    let references = files
        .iter()
        .flat_map(|file| {
            file.paths.iter().filter_map(|path| {
                resolve(&modules, &path.module, &path.segments).map(|target| Reference {
                    file: file.name.clone(),
                    line: path.line,
                    from: path.module.clone(),
                    written: path.segments.join("::"),
                    target,
                })
            })
        })
        .filter(|reference| !reference.target.is_empty())
        .collect::<Vec<_>>();
    // The names each module imports, to resolve `super::Name` to the submodule it comes from.
    let imports = files
        .iter()
        .flat_map(|file| file.paths.iter())
        .filter_map(|path| {
            let name = path.imported_as.clone()?;
            let target = resolve(&modules, &path.module, &path.segments)?;
            Some(((path.module.clone(), name), target))
        })
        .collect();
    Crate {
        modules,
        imports,
        references,
    }
}

/// The absolute path a path written in `module` names, or `None` when it names something
/// outside the crate (`std::..`, another crate, an enum's variant).
fn resolve(
    modules: &BTreeSet<Vec<String>>,
    module: &[String],
    segments: &[String],
) -> Option<Vec<String>> {
    let mut base = module.to_vec();
    let mut rest = segments;
    match segments.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &segments[1..];
        }
        "self" => rest = &segments[1..],
        "super" => {
            while rest.first().is_some_and(|first| first == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        first => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
        }
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The submodule of its top-level module a path names, if any. A name the module imports
/// from one of its submodules (`pub use plan::Plan` in `provision`, used as `super::Plan`)
/// counts as that submodule.
fn submodule_of(crate_: &Crate, target: &[String]) -> Option<String> {
    let top = target.first()?;
    let second = target.get(1)?;
    if crate_.modules.contains(&vec![top.clone(), second.clone()]) {
        return Some(second.clone());
    }
    let imported = crate_.imports.get(&(vec![top.clone()], second.clone()))?;
    let from_a_submodule =
        imported.len() > 2 && imported[0] == *top && crate_.modules.contains(&imported[..2]);
    from_a_submodule.then(|| imported[1].clone())
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Edges `from -> to`, each with the first reference that makes it.
type Graph = BTreeMap<String, BTreeMap<String, Reference>>;

fn add_edge(graph: &mut Graph, from: &str, to: &str, reference: &Reference) {
    graph
        .entry(from.to_string())
        .or_default()
        .entry(to.to_string())
        .or_insert_with(|| reference.clone());
}

/// One cycle through each strongly connected component (Tarjan's algorithm) of more than one
/// node, or of a node that imports itself.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(search: &mut Search<'a>, node: &'a str) {
        let next = search.index.len();
        search.index.insert(node, next);
        search.low.insert(node, next);
        search.stack.push(node);
        search.on_stack.insert(node);
        if let Some(edges) = search.graph.get(node) {
            for target in edges.keys() {
                let target = target.as_str();
                if !search.index.contains_key(target) {
                    visit(search, target);
                    let low = search.low[node].min(search.low[target]);
                    search.low.insert(node, low);
                } else if search.on_stack.contains(target) {
                    let low = search.low[node].min(search.index[target]);
                    search.low.insert(node, low);
                }
            }
        }
        if search.low[node] == search.index[node] {
            let mut component = Vec::new();
            while let Some(member) = search.stack.pop() {
                search.on_stack.remove(member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            search.components.push(component);
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node.as_str()) {
            visit(&mut search, node);
        }
    }
    let mut found = Vec::new();
    for component in &search.components {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let start = *members.iter().next().unwrap();
        let self_loop = graph
            .get(start)
            .is_some_and(|edges| edges.contains_key(start));
        if members.len() < 2 && !self_loop {
            continue;
        }
        found.push(cycle_through(graph, &members, start));
    }
    found
}

/// A shortest cycle from `start` back to itself inside one component, by breadth-first search.
fn cycle_through(graph: &Graph, members: &BTreeSet<&str>, start: &str) -> Vec<String> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for target in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            let target = target.as_str();
            if target == start {
                let mut cycle = vec![node.to_string()];
                let mut at = node;
                while at != start {
                    at = previous[at];
                    cycle.push(at.to_string());
                }
                cycle.reverse();
                cycle.push(start.to_string());
                return cycle;
            }
            if members.contains(target) && !previous.contains_key(target) {
                previous.insert(target, node);
                queue.push_back(target);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each member")
}

fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let mut text = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        let reference = &graph[&pair[0]][&pair[1]];
        write!(
            text,
            "\n    {} -> {}: {}",
            pair[0],
            pair[1],
            reference.location()
        )
        .unwrap();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn every_top_level_module_has_a_layer() {
    let crate_ = crate_graph();
    let mut unknown: BTreeSet<String> = crate_
        .modules
        .iter()
        .map(|module| module[0].clone())
        .filter(|module| layer_of(module).is_none())
        .collect();
    for reference in &crate_.references {
        if layer_of(&reference.target[0]).is_none() {
            unknown.insert(format!(
                "{} (named at {})",
                reference.target[0],
                reference.location()
            ));
        }
    }
    assert!(
        unknown.is_empty(),
        "modules in no layer of LAYERS in tests/it/architecture.rs, place each in one:\n  {}",
        unknown.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn no_module_imports_a_higher_layer() {
    let crate_ = crate_graph();
    let mut upward = Vec::new();
    for reference in &crate_.references {
        let (from, to) = (&reference.from[0], &reference.target[0]);
        if let (Some(from_layer), Some(to_layer)) = (layer_of(from), layer_of(to))
            && to_layer > from_layer
        {
            upward.push(format!(
                "{}: {from} (layer {from_layer}) imports {to} (layer {to_layer})",
                reference.location()
            ));
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a higher layer ({}):\n  {}",
        upward.len(),
        upward.join("\n  ")
    );
}

#[test]
fn no_cycle_among_top_level_modules() {
    let crate_ = crate_graph();
    let mut graph = Graph::new();
    for reference in &crate_.references {
        let (from, to) = (&reference.from[0], &reference.target[0]);
        if from != to {
            add_edge(&mut graph, from, to, reference);
        }
    }
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|cycle| describe_cycle(&graph, cycle))
        .collect();
    assert!(
        found.is_empty(),
        "cycles among the top-level modules:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn no_cycle_among_the_submodules_of_any_module() {
    let crate_ = crate_graph();
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for reference in &crate_.references {
        let top = &reference.from[0];
        if reference.target[0] != *top || SUBMODULES_UNCHECKED.contains(&top.as_str()) {
            continue;
        }
        // The module's own file declares and re-exports its submodules: it is not a node, and a
        // name it imports from a submodule counts as that submodule.
        let (Some(from), Some(to)) = (
            reference.from.get(1),
            submodule_of(crate_, &reference.target),
        ) else {
            continue;
        };
        if *from != to {
            add_edge(graphs.entry(top.clone()).or_default(), from, &to, reference);
        }
    }
    let mut found = Vec::new();
    for (module, graph) in &graphs {
        for cycle in cycles(graph) {
            found.push(format!("in {module}: {}", describe_cycle(graph, &cycle)));
        }
    }
    assert!(
        found.is_empty(),
        "cycles among submodules:\n  {}",
        found.join("\n  ")
    );
}
