//! Wan Dancer's music features (`WanDancerEncodeAudio`'s onset strength, MFCCs, chroma CENS,
//! onset peaks and beats) against ComfyUI's steps written out over numpy, scipy and torchaudio
//! (tests/python/music_features_reference.py), on a 44.1 kHz stereo clip and a detuned, slower
//! 16 kHz mono one. The peak and beat flags must agree frame for frame.

mod reference;

use tch::{Device, Kind};
use videosdgx::media::music_features::{dancer_features, video_fps};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn dancer_features_match_comfyui_steps() {
    let dir = reference::fixtures("music_features_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("music_features.safetensors")).unwrap();
    let get = |n: &str| file.tensor(n, Device::Cpu).unwrap();
    for clip in ["drums", "slow"] {
        let audio = get(&format!("{clip}_audio"));
        let rate = get(&format!("{clip}_rate")).int64_value(&[0]);
        let mono = audio.get(0).mean_dim(0, false, Kind::Float);
        let ours = dancer_features(&mono, rate).unwrap().to_kind(Kind::Double);
        let expected = get(&format!("{clip}_features"));
        assert_eq!(ours.size(), expected.size(), "{clip}");
        // (first column, columns, largest abs error allowed, what they are)
        for (start, n, tolerance, what) in [
            (0, 1, 1e-5, "onset strength"),
            (1, 20, 1e-4, "MFCC"),
            (21, 12, 1e-6, "chroma CENS"),
            (33, 2, 0.0, "onset peak and beat flags"),
        ] {
            let err =
                reference::max_abs_diff(&ours.narrow(1, start, n), &expected.narrow(1, start, n));
            assert!(err <= tolerance, "{clip} {what}: max abs error {err}");
        }
        let flags = expected
            .narrow(1, 33, 2)
            .sum(Kind::Double)
            .double_value(&[]);
        assert!(
            flags >= 8.0,
            "{clip}: only {flags} peaks and beats to compare"
        );
    }
    // 149 video frames over 25 s of features (750 frames) stand for 6 fps; over 5 s, 30.
    assert_eq!(video_fps(750, 149), 6.0);
    assert_eq!(video_fps(150, 149), 30.0);
}
