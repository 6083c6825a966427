//! Our SentencePiece encoder against the C++ library (PyPI sentencepiece) on tiny models
//! (tests/python/spiece_reference.py): two unigram models with T5's settings (NFKC character map,
//! whitespace rules, unknown runs, byte fallback, user-defined symbols) and a BPE model with
//! Gemma's (merge order, kept whitespace, split digits, byte fallback, turn markers).

mod reference;

use videosdgx::models::sentencepiece::SentencePiece;

#[test]
fn encodes_like_the_sentencepiece_library() {
    let dir = reference::fixtures("spiece_reference.py");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in cases.as_array().unwrap() {
        let bytes = std::fs::read(dir.path().join(case["model"].as_str().unwrap())).unwrap();
        let sp = SentencePiece::from_proto(&bytes).unwrap();
        let eos = sp.eos_id().unwrap();
        for probe in case["probes"].as_array().unwrap() {
            let text = probe["text"].as_str().unwrap();
            let expected: Vec<u32> = serde_json::from_value(probe["ids"].clone()).unwrap();
            let mut ids = sp.encode(text);
            ids.push(eos);
            assert_eq!(ids, expected, "{}: {text:?}", case["model"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 33);
}

#[test]
fn a_broken_model_is_an_error() {
    assert!(SentencePiece::from_proto(b"\x0a\xff").is_err());
    assert!(SentencePiece::from_proto(b"").is_err());
}
