//! Request-body decoding: what Vector and other clients send, and every way
//! a body is refused.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use chronos_ingest::body::{self, BodyError, Encoding, Format, Limits};
use proptest::prelude::*;

fn events(format: Option<Format>, body: &[u8]) -> Vec<Vec<u8>> {
    body::split(format, body, &Limits::default()).unwrap().into_iter().map(|e| e.bytes.to_vec()).collect()
}

fn err(format: Option<Format>, body: &[u8]) -> BodyError {
    body::split(format, body, &Limits::default()).unwrap_err()
}

#[test]
fn a_json_array_yields_each_element_byte_for_byte() {
    let body = b" [ {\"b\": 2,  \"a\":1} ,\n{\"message\":\"x \\u00e9 \xc3\xa9\"}\t]\n";
    assert_eq!(
        events(Some(Format::JsonArray), body),
        vec![b"{\"b\": 2,  \"a\":1}".to_vec(), "{\"message\":\"x \\u00e9 é\"}".as_bytes().to_vec()]
    );
}

#[test]
fn ndjson_with_or_without_a_final_newline_and_crlf() {
    let want = vec![b"{\"a\":1}".to_vec(), b"{\"b\": [1, 2]}".to_vec()];
    for body in
        [&b"{\"a\":1}\n{\"b\": [1, 2]}"[..], b"{\"a\":1}\n{\"b\": [1, 2]}\n", b"{\"a\":1}\r\n  {\"b\": [1, 2]}\r\n"]
    {
        assert_eq!(events(Some(Format::Ndjson), body), want, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn the_original_chronos_format_and_claimed_times() {
    let body = br#"[{"timestamp": "2026-03-17T08:04:53.131Z", "message": "User admin logged in from 192.168.1.50"},
                    {"timestamp": "2026-03-17T10:04:54.222+02:00", "message": "Failed SSH attempt for user root"},
                    {"timestamp": "yesterday", "message": "not RFC 3339"},
                    {"timestamp": 1763700000, "message": "not a string"},
                    {"message": "no timestamp"}]"#;
    let ev = body::split(Some(Format::JsonArray), body, &Limits::default()).unwrap();
    let times: Vec<_> = ev.iter().map(|e| e.claimed_time_ns).collect();
    assert_eq!(times, vec![Some(1_773_734_693_131_000_000), Some(1_773_734_694_222_000_000), None, None, None]);
    assert!(ev[0].bytes.starts_with(b"{\"timestamp\": \"2026-03-17T08:04:53.131Z\""));
}

#[test]
fn ndjson_and_arrays_claim_the_same_times_from_one_top_level_member() {
    let events: [&[u8]; 11] = [
        br#"{"timestamp": "2026-03-17T08:04:53.131Z", "message": "first"}"#,
        br#"{"message": "last", "timestamp": "2026-03-17T10:04:54.222+02:00"}"#,
        br#"{"nested": {"timestamp": "2026-03-17T08:04:53Z"}, "message": "only nested"}"#,
        br#"{"timestamp": "2026-03-17T08:04:53Z", "timestamp": "2026-03-17T09:00:00Z"}"#,
        br#"{"time\u0073tamp": "2026-03-17T08:04:53Z"}"#,
        br#"{"timestamp": null, "list": [1, {"timestamp": "2026-03-17T08:04:53Z"}]}"#,
        br#"{"timestamp": {"seconds": 1}}"#,
        br#"{"message": "\u00e9t\u00e9 \"timestamp\""}"#,
        // Valid JSON that holds no string: accepted, with no claimed time.
        br#"{"\ud800": 1, "timestamp": "2026-03-17T08:04:53Z"}"#,
        br#"{"timestamp": "\udc00"}"#,
        br#"{"timestamp": 1e400}"#,
    ];
    let want = [
        Some(1_773_734_693_131_000_000),
        Some(1_773_734_694_222_000_000),
        None,
        None,
        Some(1_773_734_693_000_000_000),
        None,
        None,
        None,
        None,
        None,
        None,
    ];
    let ndjson = events.join(&b'\n');
    let array = [&b"["[..], &events.join(&b','), b"]"].concat();
    for (format, body) in [(Format::Ndjson, ndjson), (Format::JsonArray, array)] {
        let ev = body::split(Some(format), &body, &Limits::default()).unwrap();
        let times: Vec<_> = ev.iter().map(|e| e.claimed_time_ns).collect();
        assert_eq!(times, want, "{format:?}");
        let bytes: Vec<&[u8]> = ev.iter().map(|e| e.bytes).collect();
        assert_eq!(bytes, events, "{format:?}");
    }
}

#[test]
fn without_a_content_type_the_body_decides() {
    assert_eq!(events(None, b"  [{\"a\":1}]").len(), 1);
    assert_eq!(events(None, b"{\"a\":1}\n{\"a\":2}").len(), 2);
    assert_eq!(Format::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Some(Format::JsonArray));
    assert_eq!(Format::from_content_type(Some("application/x-ndjson")).unwrap(), Some(Format::Ndjson));
    assert_eq!(Format::from_content_type(None).unwrap(), None);
    let e = Format::from_content_type(Some("text/plain")).unwrap_err();
    assert_eq!(e.status(), 415);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_content_encoding_decodes() {
    let data = b"[{\"message\":\"compressed\"}]".to_vec();
    let limits = Limits::default();
    let cases = [
        ("gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("deflate", raw_deflate(&data)),
        ("zstd", zstd::encode_all(&data[..], 3).unwrap()),
        ("identity", data.clone()),
    ];
    for (name, compressed) in cases {
        let enc = Encoding::from_header(Some(name)).unwrap();
        assert_eq!(body::decode(enc, &compressed, &limits).unwrap().as_ref(), &data[..], "{name}");
    }
    // Several gzip members, as concatenated by some clients.
    let two = [gzip(b"{\"a\":1}\n"), gzip(b"{\"a\":2}")].concat();
    assert_eq!(body::decode(Encoding::Gzip, &two, &limits).unwrap().as_ref(), b"{\"a\":1}\n{\"a\":2}");
    assert_eq!(Encoding::from_header(Some("GZIP")).unwrap(), Encoding::Gzip);
    assert_eq!(Encoding::from_header(Some("br")).unwrap_err().status(), 415);
}

#[test]
fn a_compression_bomb_stops_at_the_limit() {
    let limits = Limits { max_decoded: 1 << 20, ..Limits::default() };
    let zeros = vec![0u8; 64 << 20];
    for (enc, bomb) in [(Encoding::Gzip, gzip(&zeros)), (Encoding::Zstd, zstd::encode_all(&zeros[..], 3).unwrap())] {
        assert!(bomb.len() < 1 << 20, "the bomb is small: {} bytes", bomb.len());
        let e = body::decode(enc, &bomb, &limits).unwrap_err();
        assert_eq!(e, BodyError::TooLarge { what: "decoded body", limit: 1 << 20 });
        assert_eq!(e.status(), 413);
    }
    // Exactly at the limit is fine.
    let exact = vec![b' '; 1 << 20];
    assert_eq!(body::decode(Encoding::Gzip, &gzip(&exact), &limits).unwrap().len(), 1 << 20);
    let big = Limits { max_body: 10, ..Limits::default() };
    assert_eq!(body::decode(Encoding::Identity, &[b' '; 11], &big).unwrap_err().status(), 413);
}

#[test]
fn damaged_compressed_data_is_a_400() {
    let mut g = gzip(b"[{\"a\":1}]");
    let n = g.len();
    g[n / 2] ^= 0xff;
    let e = body::decode(Encoding::Gzip, &g, &Limits::default()).unwrap_err();
    assert!(matches!(e, BodyError::Compression { encoding: "gzip", .. }), "{e}");
    assert_eq!(e.status(), 400);
    assert!(body::decode(Encoding::Zstd, b"not zstd at all", &Limits::default()).is_err());
}

#[test]
fn every_rejection_names_the_event_and_the_reason() {
    use Format::{JsonArray as A, Ndjson as N};
    let cases: Vec<(Format, &[u8], Option<usize>, &str)> = vec![
        (N, b"{\"a\":1}\n{\"a\":2}\nnot json", Some(2), "not a JSON object"),
        (N, b"{\"a\":1}\n{\"a\":2}\n{not json", Some(2), "key must be a string"),
        (N, b"{\"a\":1}\n\n{\"a\":2}", Some(1), "empty event"),
        (N, b"{\"a\":1}\n[1,2]", Some(1), "not a JSON object"),
        (N, b"{\"a\":1}\n\"text\"", Some(1), "not a JSON object"),
        (N, b"{\"a\":\"\xff\"}", Some(0), "utf-8"),
        (N, b"{\"a\":1} {\"b\":2}", Some(0), "trailing"),
        (A, b"[{\"a\":1}, 5]", Some(1), "not a JSON object"),
        (A, b"[{\"a\":1}, {\"a\":\"\xff\"}]", Some(1), "utf-8"),
        (A, b"[{\"a\":1}, {\"a\":}]", Some(1), "expected value"),
        (A, b"[{\"a\":1},]", Some(1), "trailing comma"),
        (A, b"[{\"a\":1}", Some(1), "EOF"),
        (A, b"[{\"a\":1}] extra", None, "bytes after the array"),
        (A, b"{\"a\":1}", None, "not a JSON array"),
        (A, b"[]", None, "no events"),
        (N, b"", None, "no events"),
        (N, b"\n", None, "no events"),
    ];
    for (format, body, index, words) in cases {
        let e = err(Some(format), body);
        let text = e.to_string().to_lowercase();
        assert_eq!(e.event_index(), index, "{:?}: {e}", String::from_utf8_lossy(body));
        assert!(text.contains(&words.to_lowercase()), "{:?}: {e}", String::from_utf8_lossy(body));
        assert_eq!(e.status(), 400, "{e}");
    }
}

#[test]
fn size_and_count_limits_are_413_with_the_event_named() {
    let limits = Limits { max_event: 16, max_events: 2, ..Limits::default() };
    let e = body::split(Some(Format::Ndjson), b"{\"a\":1}\n{\"long\":\"0123456789\"}", &limits).unwrap_err();
    assert_eq!(e, BodyError::EventTooLarge { index: 1, len: 21, limit: 16 });
    assert_eq!(e.status(), 413);
    let e = body::split(Some(Format::JsonArray), b"[{},{},{}]", &limits).unwrap_err();
    assert_eq!(e, BodyError::TooManyEvents { limit: 2 });
    let e = body::split(Some(Format::Ndjson), b"{}\n{}\n{}", &limits).unwrap_err();
    assert_eq!(e, BodyError::TooManyEvents { limit: 2 });
    assert_eq!(e.status(), 413);
}

#[test]
fn the_idempotency_key_is_the_clients_identity_and_the_decoded_body() {
    let data = b"{\"a\":1}";
    let limits = Limits::default();
    let (gz, zs) = (gzip(data), zstd::encode_all(&data[..], 1).unwrap());
    let a = body::decode(Encoding::Gzip, &gz, &limits).unwrap();
    let b = body::decode(Encoding::Zstd, &zs, &limits).unwrap();
    assert_eq!(body::idempotency_key(b"c", &a), body::idempotency_key(b"c", &b));
    assert_ne!(body::idempotency_key(b"c", &a), body::idempotency_key(b"c", b"{\"a\":2}"));
    // Scoped to the client: the same bytes from another client are another
    // body, and the identity's boundary with the body cannot be shifted.
    assert_ne!(body::idempotency_key(b"c", &a), body::idempotency_key(b"d", &a));
    assert_ne!(body::idempotency_key(b"ab", b"c"), body::idempotency_key(b"a", b"bc"));
}

/// A JSON object written with arbitrary (valid) spacing, as clients do.
fn object() -> impl Strategy<Value = String> {
    let ws = prop_oneof![Just(""), Just(" "), Just("  "), Just("\t")];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 éü/\\\\\"]{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("null".to_owned()),
        Just("[1, {\"x\": []}]".to_owned()),
    ];
    proptest::collection::vec(("[a-z_]{1,10}", value, ws.clone(), ws), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields
            .iter()
            .map(|(k, v, w1, w2)| format!("{w1}{}{w2}:{w1}{v}{w2}", serde_json::to_string(k).unwrap()))
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn events_come_back_exactly_as_sent(objs in proptest::collection::vec(object(), 1..30), sep in prop_oneof![Just(","), Just(" , "), Just(",\n  ")], nl in any::<bool>()) {
        let array = format!("[{}]", objs.join(sep));
        let got = events(Some(Format::JsonArray), array.as_bytes());
        prop_assert_eq!(got, objs.iter().map(|o| o.as_bytes().to_vec()).collect::<Vec<_>>());
        let mut nd = objs.join("\n");
        if nl {
            nd.push('\n');
        }
        let got = events(Some(Format::Ndjson), nd.as_bytes());
        prop_assert_eq!(got, objs.iter().map(|o| o.as_bytes().to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let limits = Limits { max_decoded: 4096, ..Limits::default() };
        for enc in [Encoding::Identity, Encoding::Gzip, Encoding::Deflate, Encoding::Zstd] {
            if let Ok(d) = body::decode(enc, &bytes, &limits) {
                let _ = body::split(None, &d, &limits);
                let _ = body::split(Some(Format::JsonArray), &d, &limits);
            }
        }
    }
}
