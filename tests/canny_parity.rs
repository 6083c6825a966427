//! The Canny node's edges against PyPI kornia 0.9.0's `canny`, which ComfyUI's node calls
//! (tests/python/canny_reference.py): smooth colour fields and shapes with exact ties, four
//! threshold pairs; every edge pixel equal.

mod reference;

use tch::{Device, Kind};
use videosdgx::canny::canny;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn canny_edges_equal_kornias() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("canny_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("canny.safetensors")).unwrap();
    let get = |name: &str| file.tensor(name, Device::Cpu).unwrap();
    let images = get("images").movedim(-1, 1);
    let thresholds = Vec::<f64>::try_from(get("thresholds").flatten(0, -1)).unwrap();
    for (i, pair) in thresholds.chunks(2).enumerate() {
        let edges = canny(&images, pair[0], pair[1]).unwrap();
        let expected = get(&format!("edges_{i}")).to_kind(Kind::Float);
        assert_eq!(edges.size(), expected.size());
        let differ = edges.ne_tensor(&expected).sum(Kind::Int64).int64_value(&[]);
        let count = expected.sum(Kind::Double).double_value(&[]);
        assert_eq!(
            differ, 0,
            "thresholds {pair:?}: {differ} pixels differ ({count} edges)"
        );
        assert!(
            count > 50.0,
            "thresholds {pair:?} found only {count} edge pixels"
        );
    }
    assert!(canny(&images, 0.5, 0.4).is_err(), "low above high");
}
