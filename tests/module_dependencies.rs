//! The library's top-level modules depend on each other one way only: a test reads every
//! `crate::<module>` path in `src/` (comments and unit-test modules left out) and fails on
//! any cycle, naming the files that close it. `error` and `stats` depend on nothing above
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> (module it uses -> files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|x| x == "rs") {
            into.push(path);
        }
    }
}

fn dependency_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_of = |path: &Path| -> String {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| top_of(f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let from = top_of(file);
        if matches!(from.as_str(), "main" | "lib" | "cli") {
            continue; // the binary and the crate root sit above everything
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let to: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    let rel = file.strip_prefix(&src).unwrap().display().to_string();
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(rel);
                }
            }
        }
    }
    graph
}

/// A cycle reachable from `start`, as the modules along it, if there is one.
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = walk(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    walk(graph, start, &mut Vec::new(), &mut BTreeSet::new())
}

#[test]
fn module_dependencies_have_no_cycles() {
    let graph = dependency_graph();
    assert!(
        graph.len() > 20,
        "too few modules found: {:?}",
        graph.keys()
    );
    for start in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, start) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({:?})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("module cycle: {}", edges.join("; "));
        }
    }
}

#[test]
fn error_and_stats_depend_on_no_other_module() {
    let graph = dependency_graph();
    for ground in ["error", "stats"] {
        assert!(
            graph.get(ground).is_none_or(|m| m.is_empty()),
            "{ground} uses {:?}",
            graph.get(ground)
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = Graph::new();
    for (a, b) in [
        ("report", "probe"),
        ("probe", "results"),
        ("results", "report"),
    ] {
        graph
            .entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert("x.rs".into());
    }
    assert_eq!(
        cycle_from(&graph, "report").unwrap(),
        ["report", "probe", "results", "report"]
    );
    graph.get_mut("results").unwrap().clear();
    assert!(cycle_from(&graph, "report").is_none());
}
