//! ImageBlend (six modes, and a smaller RGBA image resized onto an RGB one), ImageBlur and
//! ImageSharpen against ComfyUI's nodes written out in torch (tests/python/image_filters_reference.py).

mod reference;

use tch::Device;
use videosdgx::image_filters::{blend, blur, sharpen, BLEND_MODES};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn image_filters_match_comfyuis_nodes() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("image_filters_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("image_filters.safetensors")).unwrap();
    let get = |name: &str| file.tensor(name, Device::Cpu).unwrap();
    let (a, b) = (get("a"), get("b"));
    let check = |name: &str, ours: tch::Tensor| {
        let theirs = get(name);
        assert_eq!(ours.size(), theirs.size(), "{name}: shape");
        let err = reference::max_abs_diff(&ours, &theirs);
        assert!(err <= 1e-6, "{name}: max abs error {err}");
    };
    for mode in BLEND_MODES {
        check(&format!("blend_{mode}"), blend(&a, &b, 0.7, mode).unwrap());
    }
    check(
        "blend_resized",
        blend(&a, &get("small_rgba"), 0.4, "overlay").unwrap(),
    );
    check("blur_1", blur(&a, 1, 1.0));
    check("blur_3", blur(&a, 3, 2.5));
    check("sharpen_1", sharpen(&a, 1, 1.0, 1.0));
    check("sharpen_2", sharpen(&a, 2, 0.6, 0.3));
    assert!(blend(&a, &b, 0.5, "hue").is_err());
}
