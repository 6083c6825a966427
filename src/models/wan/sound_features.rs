//! The wav2vec2 features Wan S2V takes per video frame (`wan_sound_to_video` in
//! `comfy_extras/nodes_wan.py`): every layer's states resampled from wav2vec2's 50 frames a
//! second to 30, then one 30-fps frame picked per 16-fps video frame, zeros past the audio's
//! end, the total padded to whole clips of the video's length.

use tch::{Kind, Tensor};

const AUDIO_FPS: f64 = 50.0;
const RESAMPLED_FPS: f64 = 30.0;
const VIDEO_FPS: f64 = 16.0;

/// `linear_interpolation`: `[layers, frames, dim]` at 50 fps → `[layers, ⌊frames·30/50⌋, dim]`,
/// linear with aligned corners.
fn resampled(features: &Tensor) -> Tensor {
    let frames = features.size()[1];
    let out = (frames as f64 / AUDIO_FPS * RESAMPLED_FPS) as i64;
    features
        .transpose(1, 2)
        .upsample_linear1d([out], true, None)
        .transpose(1, 2)
}

/// `get_audio_embed_bucket_fps` with one frame a side (`m = 0`): `[clips · frames_per_clip,
/// layers, dim]` and the number of clips (the fewest that cover the audio, plus one).
fn bucket(features: &Tensor, frames_per_clip: i64) -> (Tensor, i64) {
    let (layers, available, dim) = (features.size()[0], features.size()[1], features.size()[2]);
    let scale = RESAMPLED_FPS / VIDEO_FPS;
    let clips = (available as f64 / (frames_per_clip as f64 * scale)) as i64 + 1;
    let count = clips * frames_per_clip;
    let padded = (count as f64 / VIDEO_FPS * RESAMPLED_FPS).ceil() as i64;
    let zeros = Tensor::zeros([layers, dim], (features.kind(), features.device()));
    let frames: Vec<Tensor> = (0..count)
        .map(|i| {
            // numpy's linspace of i/16 s (exact) times 30 fps, rounded half to even.
            let index = ((i as f64 / VIDEO_FPS) * RESAMPLED_FPS).round_ties_even() as i64;
            let index = index.clamp(0, padded - 1);
            if index < available {
                features.select(1, index)
            } else {
                zeros.shallow_clone()
            }
        })
        .collect();
    (Tensor::stack(&frames, 0), clips)
}

/// The `audio_embed` of one clip: `[1, layers, dim, frames]` for the video frames from
/// `offset` (fewer, or none, past the padded end), from every layer's states `[1, T, dim]`.
pub fn clip_features(layers: &[Tensor], frames_per_clip: i64, offset: i64) -> Tensor {
    let stacked = Tensor::cat(layers, 0).to_kind(Kind::Float);
    let (bucket, _) = bucket(&resampled(&stacked), frames_per_clip);
    let all = bucket.unsqueeze(0).permute([0, 2, 3, 1]);
    let total = all.size()[3];
    let start = offset.min(total);
    all.narrow(3, start, frames_per_clip.min(total - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(frames: i64) -> Vec<Tensor> {
        (0..3)
            .map(|l| {
                (Tensor::arange(frames, (Kind::Float, tch::Device::Cpu)) + 1000.0 * l as f64)
                    .view([1, frames, 1])
                    .repeat([1, 1, 2])
            })
            .collect()
    }

    /// 100 wav2vec2 frames (2 s) become 60 at 30 fps, linearly between the ends; a clip of 30
    /// video frames spans 56.25 of them, so the bucket holds 2 clips (the rule's "+ 1") and
    /// the frames past the audio are zero.
    #[test]
    fn frames_are_picked_at_16_fps_from_30_fps_states() {
        let resampled = resampled(&Tensor::cat(&layers(100), 0));
        assert_eq!(resampled.size(), [3, 60, 2]);
        let last = resampled.double_value(&[0, 59, 0]);
        assert!((last - 99.0).abs() < 1e-4, "{last}");
        let (bucket, clips) = bucket(&resampled, 30);
        assert_eq!((clips, bucket.size()), (2, vec![60, 3, 2]));
        // Video frame 4 → 7.5 → 8 (half to even), frame 12 → 22.5 → 22.
        for (frame, source) in [(0, 0), (1, 2), (4, 8), (12, 22), (31, 58)] {
            let want = resampled.double_value(&[1, source, 0]);
            assert_eq!(bucket.double_value(&[frame, 1, 0]), want, "frame {frame}");
        }
        assert_eq!(bucket.get(33).abs().sum(Kind::Float).double_value(&[]), 0.0);
        let clip = clip_features(&layers(100), 30, 30);
        assert_eq!(clip.size(), [1, 3, 2, 30]);
        assert_eq!(
            clip.double_value(&[0, 1, 0, 1]),
            bucket.double_value(&[31, 1, 0])
        );
        assert_eq!(clip_features(&layers(100), 30, 60).size()[3], 0);
    }
}
