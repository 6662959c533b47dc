//! TLS on every TCP surface (ingest, the bridge's HTTP and gRPC ports),
//! with client certificates required, and bearer tokens per surface,
//! reached by clients nobody here wrote: curl, openssl s_client and
//! Python's grpcio. The certificates come from the openssl command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::bridge::run;
use super::pipeline::{Stack, http, wait_for};

fn openssl(dir: &Path, args: &[&str]) {
    let (ok, text) = run(Command::new("openssl").current_dir(dir).args(args));
    assert!(ok, "openssl {args:?}: {text}");
}

/// A CA, a server certificate for 127.0.0.1, a client certificate it
/// signed, and a client certificate of another CA.
fn pki(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for ca in ["ca", "rogue-ca"] {
        let subj = format!("/CN={ca}");
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &a);
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ca, ext) in
        [("server", "ca", "server.ext"), ("client", "ca", "client.ext"), ("rogue", "rogue-ca", "client.ext")]
    {
        let (key, csr, pem, subj) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("/CN={name}"));
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
}

/// curl's exit code, the HTTP status it saw (`000` for none) and its stderr.
fn curl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const MTLS: [&str; 6] = ["--cacert", "ca.pem", "--cert", "client.pem", "--key", "client.key"];

#[test]
fn every_tcp_surface_speaks_tls_with_client_certificates_and_tokens_guard_what_is_not_public() {
    let mut s = Stack::prepare();
    let data = s.data();
    pki(&data);
    std::fs::write(data.join("ingest.tokens"), "ingest-token-1\n").unwrap();
    std::fs::write(data.join("bridge.tokens"), "# readers\nreader-token-1\n").unwrap();
    let cfg = data.join("chronos.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    table.insert(
        "tls".into(),
        toml::Value::Table(toml::toml! { cert_file = "server.pem" key_file = "server.key" client_ca_file = "ca.pem" }),
    );
    set(&mut table, "ingest", "token_file", "ingest.tokens".into());
    set(&mut table, "ingest", "metrics_on_ingest_port", false.into());
    set(&mut table, "bridge", "token_file", "bridge.tokens".into());
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
    s.spawn_up(&[("CHRONOS_PIPELINE_CHECKPOINT_INTERVAL_MS", "200")]);
    let ingest = format!("https://{}", s.addr);
    wait_for(
        Duration::from_secs(60),
        "the banner, with https",
        || s.log(),
        || s.log().contains(&format!("Send logs to {ingest}/ingest")).then_some(()),
    );
    let web = wait_for(
        Duration::from_secs(30),
        "the bridge's address",
        || s.log(),
        || std::fs::read_to_string(data.join("run").join("bridge.http")).ok(),
    );
    let web = format!("https://{}", web.trim());

    // Ingest: client certificate and token.
    let post = |extra: &[&str]| {
        let mut a =
            vec!["-X", "POST", "-H", "content-type: application/x-ndjson", "--data-binary", "{\"m\":\"over tls\"}\n"];
        a.extend(extra);
        let url = format!("{ingest}/ingest");
        a.push(&url);
        curl(&data, &a)
    };
    let mut ok = MTLS.to_vec();
    ok.extend(["-H", "Authorization: Bearer ingest-token-1"]);
    let (code, status, err) = post(&ok);
    assert_eq!((code, status.as_str()), (0, "200"), "{err}: {}", s.log());
    let (code, status, err) = post(&MTLS);
    assert_eq!((code, status.as_str()), (0, "401"), "no token: {err}");
    let (code, status, _) = post(&["--cacert", "ca.pem", "-H", "Authorization: Bearer ingest-token-1"]);
    assert!(code != 0 && status == "000", "no client certificate: the handshake fails ({code}, {status})");
    let (code, status, _) = post(&[
        "--cacert",
        "ca.pem",
        "--cert",
        "rogue.pem",
        "--key",
        "rogue.key",
        "-H",
        "Authorization: Bearer ingest-token-1",
    ]);
    assert!(code != 0 && status == "000", "another CA's client: refused ({code}, {status})");
    let plain = curl(&data, &["-X", "POST", "--data-binary", "{}\n", &format!("http://{}/ingest", s.addr)]);
    assert!(plain.0 != 0 || plain.1 != "200", "plain HTTP on the TLS port is not served: {plain:?}");
    // /metrics is not on the public port; it has its own plain address.
    let (_, status, _) = curl(&data, &[&MTLS[..], &[&format!("{ingest}/metrics")]].concat());
    assert_eq!(status, "404");
    let m_addr = std::fs::read_to_string(data.join("run").join("ingest-0.metrics")).unwrap();
    let m = http(m_addr.trim(), "GET", "/metrics", &[], b"").unwrap().body;
    let failures: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chronos_ingest_tls_handshake_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{m}"));
    assert!(failures >= 2, "the refused handshakes are counted: {m}");

    // The bridge: checkpoint and tiles public, proofs need a token.
    wait_for(
        Duration::from_secs(30),
        "a checkpoint over TLS",
        || s.log(),
        || (curl(&data, &[&MTLS[..], &[&format!("{web}/checkpoint")]].concat()).1 == "200").then_some(()),
    );
    let proof = format!("{web}/v1/proof/inclusion?leaf=0");
    wait_for(
        Duration::from_secs(30),
        "a checkpoint covering the event, proved with the token",
        || s.log(),
        || {
            let with = [&MTLS[..], &["-H", "Authorization: Bearer reader-token-1", &proof]].concat();
            (curl(&data, &with).1 == "200").then_some(())
        },
    );
    assert_eq!(curl(&data, &[&MTLS[..], &[&proof]].concat()).1, "401", "a proof without a token");
    assert_eq!(curl(&data, &[&MTLS[..], &["-H", "Authorization: Bearer wrong", &proof]].concat()).1, "401");
    let (code, status, _) = curl(&data, &["--cacert", "ca.pem", &format!("{web}/checkpoint")]);
    assert!(code != 0 && status == "000", "the bridge asks for a client certificate too ({code}, {status})");
    // openssl s_client: the chain verifies, and the server asks for a
    // client certificate of the configured CA.
    let host = web.trim_start_matches("https://");
    let (_, text) = run(Command::new("openssl")
        .current_dir(&data)
        .args([
            "s_client",
            "-connect",
            host,
            "-CAfile",
            "ca.pem",
            "-cert",
            "client.pem",
            "-key",
            "client.key",
            "-verify_return_error",
        ])
        .stdin(std::process::Stdio::null()));
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("Acceptable client certificate CA names") && text.contains("CN = ca"), "{text}");

    // gRPC over TLS with a client certificate (grpcio): the checkpoint is
    // public, a proof needs the token.
    let grpc = std::fs::read_to_string(data.join("run").join("bridge.grpc")).unwrap();
    let py = tempfile::tempdir().unwrap();
    super::bridge_grpc::stubs(py.path());
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from chronos.ledger.v1 import ledger_pb2, ledger_pb2_grpc
d = sys.argv[3]
creds = grpc.ssl_channel_credentials(open(d + "/ca.pem", "rb").read(), open(d + "/client.key", "rb").read(), open(d + "/client.pem", "rb").read())
ledger = ledger_pb2_grpc.LedgerStub(grpc.secure_channel(sys.argv[2], creds))
out = {"checkpoint": ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=5).tree_size}
req = ledger_pb2.GetInclusionProofRequest(leaf_index=0)
try:
    ledger.GetInclusionProof(req, timeout=5)
    out["no_token"] = "OK"
except grpc.RpcError as e:
    out["no_token"] = e.code().name
out["with_token"] = ledger.GetInclusionProof(req, timeout=5, metadata=[("authorization", "Bearer reader-token-1")]).tree_size
print(json.dumps(out))
"#;
    let (ok, text) = run(Command::new("python3").args([
        "-c",
        script,
        py.path().to_str().unwrap(),
        grpc.trim(),
        data.to_str().unwrap(),
    ]));
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(v["checkpoint"].as_u64() >= Some(1), "{v}");
    assert_eq!(v["no_token"], "UNAUTHENTICATED", "{v}");
    assert!(v["with_token"].as_u64() >= Some(1), "{v}");

    s.stop();
    assert_eq!(s.verify()["status"], "intact");
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let t = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    t.as_table_mut().unwrap().insert(key.into(), value);
}

/// The connection's `sslmode` and `sslrootcert` added to `url`.
fn with_tls(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

#[test]
fn postgresql_is_reached_over_tls_as_sslmode_says_and_an_unknown_ca_or_plain_connection_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let pg = chronos_pg_harness::PgCluster::start().unwrap();
    let dir = tempfile::Builder::new().prefix("chronos-pgtls-").tempdir_in("/tmp").unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    pki(&pki_dir);
    // The server's certificate and key in its data directory, owned by
    // the server's user, the key 0600 as PostgreSQL demands.
    let data_dir = pg.data_dir();
    let owner = std::fs::metadata(&data_dir).unwrap();
    for (f, mode) in [("server.pem", 0o644), ("server.key", 0o600)] {
        let to = data_dir.join(f);
        std::fs::copy(pki_dir.join(f), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&to, Some(std::os::unix::fs::MetadataExt::uid(&owner)), None).unwrap();
    }
    let url = pg.create_database("tlslog").unwrap();
    // TLS on, and plain TCP connections refused (psql, run as the server's
    // user, is not used after this: it could not read root's ~/.postgresql).
    let hba = data_dir.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("hostnossl all all 127.0.0.1/32 reject\n{rules}")).unwrap();
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", data_dir.join("server.pem").display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", data_dir.join("server.key").display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        pg.psql("postgres", &sql).unwrap();
    }
    let ca = pki_dir.join("ca.pem");
    let good = with_tls(&url, &format!("sslmode=verify-full&sslrootcert={}", ca.display()));

    // Chronos up, all of it (vault writer, orchestrator, time, bridge)
    // through verify-full: a body is committed.
    let data = dir.path().join("data");
    assert!(
        super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/pgtls"], &[])
            .status
            .success()
    );
    let addr = format!("127.0.0.1:{}", super::pipeline::free_port());
    let log = dir.path().join("up.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut up = super::pipeline::Up(super::pipeline::up_command(&data, &good, &addr, &log, &[]).spawn().unwrap());
    wait_for(Duration::from_secs(60), "ready over TLS", read, || {
        (http(&addr, "GET", "/readyz", &[], b"").ok()?.status == 200).then_some(())
    });
    let r = http(
        &addr,
        "POST",
        "/ingest",
        &[("content-type", "application/x-ndjson")],
        b"{\"m\":\"over tls to postgres\"}\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}: {}", r.body, read());
    // Every TCP connection PostgreSQL holds is encrypted (plain ones are
    // refused by pg_hba.conf), and Chronos's services hold some.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls: String = rt.block_on(async {
        let (client, conn) = chronos_tls::pg::connect(&good).await.unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*)::text || '|' || bool_and(s.ssl)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = 'tlslog' AND a.pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    });
    let (n, all) = tls.split_once('|').unwrap();
    assert!(n.parse::<u32>().unwrap() >= 2 && all == "true", "connections to the log's database: {tls}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(up.0.wait().unwrap().success(), "{}", read());
    let verify = |u: &str| super::chronos(&["verify", "--database-url", u, "--json"], &[]);
    let out = verify(&good);
    assert!(out.status.success(), "verify over TLS: {}", String::from_utf8_lossy(&out.stderr));

    // A CA that did not sign the server's certificate: refused, saying why.
    let rogue = with_tls(&url, &format!("sslmode=verify-full&sslrootcert={}", pki_dir.join("rogue-ca.pem").display()));
    let out = verify(&rogue);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.to_lowercase().contains("certificate"), "an unknown CA: {err}");
    // No TLS at all: the server refuses, and the error names pg_hba.conf.
    let out = verify(&with_tls(&url, "sslmode=disable"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no encryption"), "sslmode=disable: {err}");
    // require (encrypted, not authenticated) and the default prefer work.
    for q in ["sslmode=require", "application_name=chronos-test"] {
        let out = verify(&with_tls(&url, q));
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A root certificate that cannot be read is named.
    let out = verify(&with_tls(&url, "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/ca.pem"), "{err}");
}
