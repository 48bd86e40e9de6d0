//! The head sets a replica can serve: the shipped heads (`model.heads_dir`) and every
//! directory under `model.registry_dir` (each a heads directory `modbot train --out` wrote),
//! known by their manifest's version.
//!
//! Listing reads manifests only (a few kB each); a set's weights are read when it is tried
//! or promoted. A directory whose manifest cannot be read is listed with why, never skipped
//! silently and never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;
use super::heads::MANIFEST;

/// One head of a listed set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadSummary {
    /// Task name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Independent labels (sigmoid) rather than one-of (softmax).
    pub multi_label: bool,
    /// Thresholds chosen on validation data.
    pub thresholds: BTreeMap<String, f64>,
    /// The head's own version.
    pub version: String,
    /// Quality on held-out data.
    pub metrics: BTreeMap<String, f64>,
    /// The sha256 of the training split each label was taught by (one entry, keyed by the
    /// head's name, for a head with one network for all labels).
    pub data_sha256: BTreeMap<String, String>,
}

impl HeadSummary {
    /// A loaded head, summarised (its training data's hashes are not kept once loaded).
    pub fn of(head: &super::heads::Head) -> Self {
        Self {
            name: head.name.clone(),
            labels: head.labels.clone(),
            multi_label: head.multi_label,
            thresholds: head.thresholds.clone(),
            version: head.version.clone(),
            metrics: head.metrics.clone(),
            data_sha256: BTreeMap::new(),
        }
    }
}

/// A listed head set.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryEntry {
    /// The manifest's version ("" when it could not be read).
    pub version: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Whether it is the shipped set (`model.heads_dir`).
    pub shipped: bool,
    /// The encoder it was trained on.
    pub encoder: String,
    /// Its embeddings' size.
    pub embedding_dim: usize,
    /// Its heads.
    pub heads: Vec<HeadSummary>,
    /// Why it cannot be served, when it cannot ("" when its manifest reads).
    pub problem: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    version: String,
    #[serde(default)]
    encoder: String,
    embedding_dim: usize,
    heads: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    multi_label: bool,
    labels: Vec<String>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
    #[serde(default)]
    per_label: bool,
    #[serde(default)]
    training: serde_json::Value,
}

/// Reads the manifest of the set in `dir`.
pub fn summarize(dir: &Path, shipped: bool) -> RegistryEntry {
    let mut entry = RegistryEntry {
        version: String::new(),
        dir: dir.to_owned(),
        shipped,
        encoder: String::new(),
        embedding_dim: 0,
        heads: Vec::new(),
        problem: String::new(),
    };
    let manifest: Manifest = match super::read_json(&dir.join(MANIFEST)) {
        Ok(manifest) => manifest,
        Err(error) => {
            entry.problem = error.to_string();
            return entry;
        }
    };
    entry.version = manifest.version;
    entry.encoder = manifest.encoder;
    entry.embedding_dim = manifest.embedding_dim;
    entry.heads = manifest
        .heads
        .into_iter()
        .map(|h| {
            let sha = |t: &serde_json::Value| {
                t.get("train_file_sha256")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let data_sha256 = if h.per_label {
                h.labels
                    .iter()
                    .filter_map(|l| Some((l.clone(), sha(h.training.get(l)?)?)))
                    .collect()
            } else {
                sha(&h.training)
                    .map(|s| (h.name.clone(), s))
                    .into_iter()
                    .collect()
            };
            HeadSummary {
                name: h.name,
                labels: h.labels,
                multi_label: h.multi_label,
                thresholds: h.thresholds,
                version: h.version,
                metrics: h.metrics,
                data_sha256,
            }
        })
        .collect();
    entry
}

/// The shipped set (when `shipped` holds a manifest) and every set under `registry`, by
/// directory name. A registry that does not exist is empty.
pub fn list(shipped: &Path, registry: &Path) -> Result<Vec<RegistryEntry>, ModelError> {
    let mut entries = Vec::new();
    if shipped.join(MANIFEST).is_file() {
        entries.push(summarize(shipped, true));
    }
    if registry.as_os_str().is_empty() || !registry.is_dir() {
        return Ok(entries);
    }
    let read = std::fs::read_dir(registry).map_err(|e| ModelError::Config {
        path: registry.to_owned(),
        message: format!("cannot list it: {e}"),
    })?;
    let mut dirs: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut entry = summarize(&dir, false);
        if !entry.version.is_empty()
            && let Some(first) = entries.iter().find(|e| e.version == entry.version)
        {
            entry.problem = format!(
                "version {} is also {}; versions must be unique",
                entry.version,
                first.dir.display()
            );
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, version: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(MANIFEST),
            format!(
                r#"{{"version": "{version}", "encoder": "e", "embedding_dim": 4, "heads": [
                {{"name": "toxicity", "file": "t.safetensors", "multi_label": true,
                  "labels": ["insult", "threat"], "per_label": true,
                  "thresholds": {{"insult": 0.5}},
                  "training": {{"insult": {{"train_file_sha256": "aa"}},
                                "threat": {{"train_file_sha256": "bb"}}}}}},
                {{"name": "sentiment", "file": "s.safetensors", "multi_label": false,
                  "labels": ["neg", "pos"], "training": {{"train_file_sha256": "cc"}}}}]}}"#
            ),
        )
        .unwrap();
    }

    #[test]
    fn lists_the_shipped_set_and_the_registry_with_their_data_hashes() {
        let root = tempfile::tempdir().unwrap();
        let shipped = root.path().join("heads");
        let registry = root.path().join("registry");
        manifest(&shipped, "v1");
        manifest(&registry.join("b-second"), "v2");
        manifest(&registry.join("c-copy"), "v1");
        std::fs::create_dir_all(registry.join("a-broken")).unwrap();
        let entries = list(&shipped, &registry).unwrap();
        let summary: Vec<(&str, bool, bool)> = entries
            .iter()
            .map(|e| (e.version.as_str(), e.shipped, e.problem.is_empty()))
            .collect();
        assert_eq!(
            summary,
            [
                ("v1", true, true),
                ("", false, false),
                ("v2", false, true),
                ("v1", false, false)
            ]
        );
        assert!(
            entries[1].problem.contains("heads.json"),
            "{}",
            entries[1].problem
        );
        assert!(
            entries[3].problem.contains("unique"),
            "{}",
            entries[3].problem
        );
        let heads = &entries[2].heads;
        assert_eq!(heads[0].data_sha256["insult"], "aa");
        assert_eq!(heads[0].data_sha256["threat"], "bb");
        assert_eq!(heads[1].data_sha256["sentiment"], "cc");
        assert!(
            list(&root.path().join("none"), &root.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }
}
