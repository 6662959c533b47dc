//! Checks of Chronos's deployment files, run by `cargo nextest`: the
//! top-level `docker-compose.yml` and the Kubernetes manifests in
//! `deploy/kubernetes`. This crate reads those files and answers questions
//! about them (what shared memory a pod gets, what the rings of the
//! topology it runs need); the tests in `tests/` hold the checks.
//!
//! It runs nothing: the compose file is run in real containers by
//! `deploy/test-compose.sh`, and the manifests' built-in kinds are checked
//! against Kubernetes' schemas by `kubernetes-validate` (called from the
//! tests). It is not part of any binary.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chronos_wire::Topology;
use serde_json::Value;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every document of a YAML file, as JSON values.
pub fn yaml_documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The one document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    let mut found = docs.iter().filter(|d| d["kind"] == kind && d["metadata"]["name"] == name);
    match (found.next(), found.next()) {
        (Some(d), None) => Ok(d),
        (None, _) => bail!("no {kind} named {name}"),
        (Some(_), Some(_)) => bail!("two {kind}s named {name}"),
    }
}

/// A Kubernetes quantity of bytes ("640Mi", "2Gi", "512M", "1000").
pub fn k8s_bytes(q: &str) -> Option<u64> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(mult);
        }
    }
    q.parse().ok()
}

/// A Compose byte size ("2gb", "600mb", "256m", "1024k"): binary units,
/// as Docker reads them.
pub fn compose_bytes(s: &str) -> Option<u64> {
    let s = s.to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (n, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().ok()?.checked_mul(mult)
}

/// The default of a Compose interpolation `${NAME:-default}`, or the value
/// itself when it is not one.
pub fn compose_default(v: &str) -> &str {
    v.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .and_then(|r| r.split_once(":-"))
        .map_or(v, |(_, default)| default)
}

/// Bytes the rings of `hashers` hashers and `ingests` ingest processes take
/// in /dev/shm once full, at the default body limits (as `chronos up`
/// counts them before it starts).
pub fn shm_needed(hashers: u16, ingests: u16) -> u64 {
    let l = chronos_ingest::body::Limits::default();
    let t = Topology { ingests, hashers, max_decoded: l.max_decoded as u64, max_events: l.max_events as u64 };
    t.rings().iter().map(|(n, g)| n * chronos_ipc::ring::segment_len(g.capacity)).sum()
}

/// The value of environment variable `name` in a container spec.
pub fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_kubernetes_and_docker_read_them() {
        assert_eq!(k8s_bytes("640Mi"), Some(640 << 20));
        assert_eq!(k8s_bytes("3Gi"), Some(3 << 30));
        assert_eq!(k8s_bytes("512M"), Some(512_000_000));
        assert_eq!(k8s_bytes("12x"), None);
        assert_eq!(compose_bytes("2gb"), Some(2 << 30));
        assert_eq!(compose_bytes("600mb"), Some(600 << 20));
        assert_eq!(compose_bytes("256m"), Some(256 << 20));
        assert_eq!(compose_bytes("lots"), None);
        assert_eq!(compose_default("${CHRONOS_SHM_SIZE:-2gb}"), "2gb");
        assert_eq!(compose_default("1gb"), "1gb");
    }
}
