//! The deployment files say what Chronos needs and what the platform
//! accepts: Kubernetes' own schemas (kubernetes-validate, strict),
//! CloudNativePG's Cluster resource (its Rust types, with nothing dropped),
//! and shared memory that holds the rings of the topology each file starts.

use std::path::PathBuf;
use std::process::Command;

use chronos_deploy_check::{
    compose_bytes, compose_default, env, find, k8s_bytes, repo_root, shm_needed, yaml_documents,
};
use k8s_crds_cloud_native_pg::clusters::Cluster;
use serde_json::Value;

fn manifest(name: &str) -> PathBuf {
    repo_root().join("deploy/kubernetes").join(name)
}

/// The built-in kinds, against the schemas of Kubernetes 1.34 with
/// unknown fields refused. The validator must also refuse a copy with one
/// misspelt field, so that a validator that accepts anything fails here.
#[test]
fn the_manifests_pass_kubernetes_validate_strictly() {
    let files = [manifest("chronos.yaml"), manifest("bridge.yaml")];
    let run = |paths: &[PathBuf]| {
        Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "--kubernetes-version", "1.34"])
            .args(paths)
            .output()
            .expect("kubernetes-validate (PyPI, `pip install kubernetes-validate==1.34.1`; .ci/run installs it)")
    };
    let out = run(&files);
    assert!(
        out.status.success(),
        "kubernetes-validate refused the manifests:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let bad = dir.path().join("chronos.yaml");
    let text = std::fs::read_to_string(&files[0]).expect("chronos.yaml");
    assert!(text.contains("readinessProbe:"));
    std::fs::write(&bad, text.replacen("readinessProbe:", "readynessProbe:", 1)).expect("write");
    let out = run(&[bad]);
    assert!(!out.status.success(), "kubernetes-validate accepted a misspelt field");
    assert!(String::from_utf8_lossy(&out.stdout).contains("readynessProbe"), "{out:?}");
}

/// The Cluster, read into CloudNativePG's own types and written back,
/// is unchanged: every field is one the operator knows, with a value of
/// its type. And it replicates synchronously.
#[test]
fn the_postgres_cluster_is_one_cloudnativepg_knows_and_replicates_synchronously() {
    let docs = yaml_documents(&manifest("postgres.yaml")).expect("postgres.yaml");
    let doc = find(&docs, "Cluster", "chronos-db").expect("the Cluster");
    assert_eq!(doc["apiVersion"], "postgresql.cnpg.io/v1");
    let cluster: Cluster = serde_json::from_value(doc.clone()).expect("a CloudNativePG Cluster");
    let back = serde_json::to_value(&cluster).expect("serialize");
    assert_eq!(strip_type_meta(back), strip_type_meta(doc.clone()), "fields CloudNativePG does not know were dropped");

    let sync = cluster.spec.postgresql.as_ref().and_then(|p| p.synchronous.as_ref()).expect("synchronous replication");
    assert!(sync.number >= 1, "at least one standby confirms each commit");
    assert_eq!(serde_json::to_value(&sync.data_durability).expect("durability"), "required");
    let instances = cluster.spec.instances;
    assert!(instances > sync.number, "{instances} instances cannot have {} synchronous standbys", sync.number);

    // The check is not blind: a misspelt field does not survive the round trip.
    let mut bad = doc.clone();
    bad["spec"]["postgresql"]["synchronus"] = bad["spec"]["postgresql"]["synchronous"].take();
    let back =
        serde_json::to_value(serde_json::from_value::<Cluster>(bad.clone()).expect("still parses")).expect("serialize");
    assert_ne!(strip_type_meta(back), strip_type_meta(bad));
}

/// apiVersion and kind are written by kube from the type, not read back.
fn strip_type_meta(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
        o.remove("status");
    }
    v
}

/// One sequencer per log, and a /dev/shm that holds its rings within the
/// pod's memory limit; probes on the ingest port's /readyz and /healthz.
#[test]
fn the_statefulset_runs_one_sequencer_with_room_for_its_rings() {
    let docs = yaml_documents(&manifest("chronos.yaml")).expect("chronos.yaml");
    let sts = find(&docs, "StatefulSet", "chronos").expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1, "one sequencer per log");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let hashers: u16 = env(c, "CHRONOS_PIPELINE_HASHERS").expect("hashers").parse().expect("a number");
    assert!(hashers >= 1, "the manifest names its hasher count, so that /dev/shm can be sized for it");
    let dshm = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "dshm").expect("dshm");
    assert_eq!(dshm["emptyDir"]["medium"], "Memory");
    let size = k8s_bytes(dshm["emptyDir"]["sizeLimit"].as_str().expect("sizeLimit")).expect("a size");
    let need = shm_needed(hashers, 1);
    assert!(size >= need, "/dev/shm {size} B < {need} B the rings of {hashers} hashers need");
    assert!(size < need + need / 4, "/dev/shm {size} B is far above the {need} B needed: size it from the formula");
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.iter().any(|m| m["name"] == "dshm" && m["mountPath"] == "/dev/shm"));
    let limit = k8s_bytes(c["resources"]["limits"]["memory"].as_str().expect("memory limit")).expect("a size");
    assert!(limit >= size + (1 << 30), "the memory limit {limit} B must hold /dev/shm ({size} B) and the processes");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let pdb = find(&docs, "PodDisruptionBudget", "chronos").expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"], sts["spec"]["selector"]);
}

/// The bridge reads the standbys, scales, and keeps the log's signing key
/// out of its pods.
#[test]
fn the_bridge_reads_standbys_and_never_sees_the_signing_key() {
    let docs = yaml_documents(&manifest("bridge.yaml")).expect("bridge.yaml");
    let d = find(&docs, "Deployment", "chronos-bridge").expect("the bridge's Deployment");
    assert!(d["spec"]["replicas"].as_u64().expect("replicas") >= 2);
    let pod = &d["spec"]["template"]["spec"];
    let url = env(&pod["containers"][0], "CHRONOS_DATABASE_URL").expect("database URL");
    assert!(url.contains("host=chronos-db-ro "), "{url}");
    assert!(url.contains("sslmode=verify-full"), "{url}");
    let seed = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "seed").expect("seed");
    let keys: Vec<&str> =
        seed["secret"]["items"].as_array().expect("items").iter().filter_map(|i| i["key"].as_str()).collect();
    assert!(!keys.contains(&"log.key") && !keys.contains(&"operator.key"), "{keys:?}");
    // The events themselves (tiles' entry bundles, /v1/events, the stream) need a token.
    let c = &pod["containers"][0];
    assert!(env(c, "CHRONOS_BRIDGE_TOKEN_FILE").is_some_and(|f| !f.is_empty()));
    let public: Vec<String> =
        serde_json::from_str(env(c, "CHRONOS_BRIDGE_PUBLIC").expect("public groups")).expect("a list");
    for private in ["tiles", "events", "stream"] {
        assert!(!public.iter().any(|g| g == private), "{private} is public: {public:?}");
    }
    find(&docs, "HorizontalPodAutoscaler", "chronos-bridge").expect("an autoscaler");
    find(&docs, "PodDisruptionBudget", "chronos-bridge").expect("a PodDisruptionBudget");
}

/// docker-compose.yml: its default shared memory holds the rings of the
/// hasher count its comment promises, and not one more.
#[test]
fn the_compose_default_shared_memory_holds_what_its_comment_says() {
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml");
    let docs = yaml_documents(&path).expect("docker-compose.yml");
    let chronos = &docs[0]["services"]["chronos"];
    let shm = compose_bytes(compose_default(chronos["shm_size"].as_str().expect("shm_size"))).expect("a size");
    let promised: u16 = text
        .split_once(" GiB holds ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the comment \"N GiB holds H hashers\"");
    assert!(shm_needed(promised, 1) <= shm, "{promised} hashers do not fit in {shm} B");
    assert!(shm_needed(promised + 1, 1) > shm, "{} hashers fit too: the comment undersells", promised + 1);
    assert_eq!(chronos["environment"]["CHRONOS_PIPELINE_HASHERS"], "${CHRONOS_HASHERS:-0}");
    for image in ["postgres", "vector"].map(|s| docs[0]["services"][s]["image"].as_str().expect("image")) {
        let tag = image.rsplit_once(':').map(|(_, t)| t).expect("a tag");
        assert!(tag.starts_with(|c: char| c.is_ascii_digit()), "{image}: pin a version, not {tag}");
    }
}

/// Kubernetes adds variables for every Service to a pod (CHRONOS_INGEST_PORT,
/// CHRONOS_TIME_SERVICE_HOST ...) unless told not to; Chronos reads
/// `CHRONOS_<SECTION>_<KEY>` as settings and refuses unknown keys, so such
/// a pod would never start.
#[test]
fn no_pod_gets_service_variables_that_chronos_would_read_as_settings() {
    for (file, kind, name) in
        [("chronos.yaml", "StatefulSet", "chronos"), ("bridge.yaml", "Deployment", "chronos-bridge")]
    {
        let docs = yaml_documents(&manifest(file)).expect(file);
        let w = find(&docs, kind, name).expect("the workload");
        assert_eq!(w["spec"]["template"]["spec"]["enableServiceLinks"], false, "{file}: {kind} {name}");
    }
}

/// The compose file's own variables (ports, sizes) must not look like
/// settings: a `CHRONOS_<SECTION>_<KEY>` left in a shell would be read by
/// any `chronos` started there. Those it uses are settings passed through
/// under their own name.
#[test]
fn compose_variables_are_settings_passed_through_or_outside_the_settings_names() {
    const SECTIONS: [&str; 8] = ["INGEST", "PIPELINE", "VAULT", "DATABASE", "METRICS", "TIME", "BRIDGE", "TLS"];
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml");
    let docs = yaml_documents(&path).expect("docker-compose.yml");
    let env = docs[0]["services"]["chronos"]["environment"].as_object().expect("environment");
    let mut seen = 0;
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for part in line.split("${").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            seen += 1;
            let looks_like_a_setting =
                SECTIONS.iter().any(|s| name.strip_prefix("CHRONOS_").is_some_and(|r| r.starts_with(&format!("{s}_"))));
            if looks_like_a_setting {
                assert!(env.contains_key(&name), "${{{name}}} looks like a setting but is not passed through as one");
            }
        }
    }
    assert!(seen > 10, "found only {seen} variables");
}
