//! `spec/`: the JSON Schemas of every REST and WebSocket body, their
//! canonical examples, and the OpenAPI document. The examples must match
//! their schemas (and a changed example must not: the schemas are not
//! vacuous); live answers are checked against the same schemas by the
//! bridge and pipeline tests through [`check`].

use std::path::{Path, PathBuf};

use super::bridge::run;

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The validator of `spec/<name>.schema.json` (`name` like `bridge/time`).
fn validator(name: &str) -> jsonschema::Validator {
    let schema = read_json(&spec_dir().join(format!("{name}.schema.json")));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}.schema.json is not a valid schema: {e}"))
}

fn errors(name: &str, v: &serde_json::Value) -> Vec<String> {
    validator(name).iter_errors(v).map(|e| e.to_string()).collect()
}

/// Asserts that a body matches `spec/<name>.schema.json`.
pub(crate) fn check(name: &str, v: &serde_json::Value) {
    let e = errors(name, v);
    assert!(e.is_empty(), "{name}: {e:?} in {v:#}");
}

/// The schema an example file is for: `time-synchronized.json` is a
/// `time` body, `stream-checkpoint.json` a `stream` message.
fn schema_of(example: &Path) -> String {
    let dir = example.parent().and_then(Path::parent).and_then(Path::file_name).unwrap().to_str().unwrap();
    let stem = example.file_stem().unwrap().to_str().unwrap();
    let kind = stem.split('-').next().unwrap();
    format!("{dir}/{kind}")
}

#[test]
fn every_example_matches_its_schema_and_a_changed_one_does_not() {
    let mut seen = 0;
    for dir in ["bridge", "ingest"] {
        let examples = spec_dir().join(dir).join("examples");
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            let name = schema_of(&path);
            let example = read_json(&path);
            check(&name, &example);
            // An unknown field, and a required field removed, are refused.
            let mut extra = example.clone();
            extra["unexpected"] = serde_json::json!(1);
            assert!(!errors(&name, &extra).is_empty(), "{name} accepts an unknown field");
            let mut missing = example.clone();
            let first = missing
                .as_object()
                .unwrap()
                .keys()
                .find(|k| *k != "reason" && *k != "note" && *k != "event_index")
                .cloned();
            missing.as_object_mut().unwrap().remove(&first.unwrap());
            assert!(!errors(&name, &missing).is_empty(), "{name} accepts {} without a required field", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} examples");
    // Each schema has at least one example.
    for dir in ["bridge", "ingest"] {
        for entry in std::fs::read_dir(spec_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let Some(stem) = path.file_name().unwrap().to_str().unwrap().strip_suffix(".schema.json") else { continue };
            let has = std::fs::read_dir(spec_dir().join(dir).join("examples"))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_str().unwrap().split(['-', '.']).next() == Some(stem));
            assert!(has, "spec/{dir}/{stem}.schema.json has no example");
        }
    }
}

#[test]
fn the_openapi_document_is_valid_and_names_every_route_of_the_bridge_and_ingest() {
    let doc = spec_dir().join("openapi.json");
    // An OpenAPI 3.1 validator nobody here wrote (PyPI openapi-spec-validator),
    // which also resolves the $refs to the schema files.
    let script = "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\n\
                  d, u = read_from_filename(sys.argv[1])\nvalidate(d, base_uri=u)\nprint('valid')";
    let (ok, text) = run(std::process::Command::new("python3").args(["-c", script, doc.to_str().unwrap()]));
    assert!(
        ok && text.contains("valid"),
        "openapi-spec-validator (pip install openapi-spec-validator; .ci/run does): {text}"
    );
    let v = read_json(&doc);
    let paths: Vec<&String> = v["paths"].as_object().unwrap().keys().collect();
    // The routes as the servers declare them, read from their source.
    let sources = ["../bridge/src/http/mod.rs", "../ingest/src/server/mod.rs"];
    for src in sources {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(src)).unwrap();
        for route in text.split(".route(\"").skip(1).filter_map(|r| r.split('"').next()) {
            if route == "/metrics" {
                continue; // not part of the public API (its own port when asked)
            }
            let prefix = route.split("{*").next().unwrap();
            let documented =
                paths.iter().any(|p| if route.contains("{*") { p.starts_with(prefix) } else { *p == route });
            assert!(documented, "{src}: route {route} is not in spec/openapi.json");
        }
    }
}
