//! LTXVPreprocess's H.264 round trip (`preprocess` in `comfy_extras/nodes_lt.py`): one image
//! cropped to even size, encoded as a one-frame yuv420p mp4 by libx264 at the given CRF
//! (preset veryfast) and decoded back, so a conditioning image carries the artifacts the LTX
//! models were trained on. Our libx264 is Debian's, not the one PyAV bundles, so the bits can
//! differ slightly from ComfyUI's.

use anyhow::{Context, Result};
use tch::Tensor;

use super::decode::read;
use super::encode::{write_video, VideoSpec};

/// `[H, W, C]` in 0..1 → the decoded `[H', W', 3]` (H', W' rounded down to even).
pub fn h264_round_trip(image: &Tensor, crf: i64) -> Result<Tensor> {
    let (h, w) = (image.size()[0] & !1, image.size()[1] & !1);
    let frame = image.narrow(0, 0, h).narrow(1, 0, w).unsqueeze(0);
    let dir = tempfile::tempdir().context("a folder for the H.264 round trip")?;
    let path = dir.path().join("frame.mp4");
    let mut spec = VideoSpec::h264_mp4(vec![], vec![]);
    spec.codecs = &["libx264"];
    spec.codec_options = vec![
        ("crf".into(), crf.to_string()),
        ("preset".into(), "veryfast".into()),
    ];
    write_video(&path, &frame, 1.0, None, &spec, &mut |_, _| Ok(()))?;
    let (frames, _) = read(&path, true)?
        .frames
        .context("the round-tripped mp4 has no video")?;
    Ok(frames.get(0).to_kind(image.kind()))
}
