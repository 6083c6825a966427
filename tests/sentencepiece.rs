//! Our SentencePiece encoder against the C++ library (PyPI sentencepiece) on tiny models
//! (tests/python/spiece_reference.py): two unigram models with T5's settings (NFKC character map,
//! whitespace rules, unknown runs, byte fallback, user-defined symbols) and a BPE model with
//! Gemma's (merge order, kept whitespace, split digits, byte fallback, turn markers).

mod reference;

use videosdgx::models::sentencepiece::SentencePiece;

/// Each tiny model with its probes, as the reference wrote them.
fn models() -> Vec<(SentencePiece, serde_json::Value)> {
    let dir = reference::fixtures("spiece_reference.py");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap().clone();
    cases
        .into_iter()
        .map(|case| {
            let bytes = std::fs::read(dir.path().join(case["model"].as_str().unwrap())).unwrap();
            (SentencePiece::from_proto(&bytes).unwrap(), case)
        })
        .collect()
}

#[test]
fn encodes_like_the_sentencepiece_library() {
    let mut checked = 0;
    for (sp, case) in models() {
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
fn decodes_like_the_sentencepiece_library() {
    let mut checked = 0;
    for (sp, case) in models() {
        for probe in case["decodes"].as_array().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(probe["ids"].clone()).unwrap();
            let expected = probe["text"].as_str().unwrap();
            assert_eq!(
                sp.decode(&ids).unwrap(),
                expected,
                "{}: {ids:?}",
                case["model"]
            );
            checked += 1;
        }
        assert!(sp.decode(&[sp.vocab_size() as u32]).is_err());
    }
    // Per model: the 11 probes, the unknown piece, spaced pieces twice, and two byte runs
    // where the model has byte pieces (two of the three).
    assert_eq!(checked, 3 * 14 + 2 * 2);
}

#[test]
fn a_broken_model_is_an_error() {
    assert!(SentencePiece::from_proto(b"\x0a\xff").is_err());
    assert!(SentencePiece::from_proto(b"").is_err());
}
