//! SAM3_VideoTrack's loop (`track_video_with_detection`): frame by frame, the text detector
//! (every `detect_interval` frames) finds candidates; the first ones (or the given masks)
//! start the tracks, later frames are propagated from memory, and detections that match no
//! track join it.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::components::mask_overlap;
use super::frame::TextPrompt;
use super::track_data::{pack_masks, TrackData};
use super::tracker::{
    fill_holes, kept_detections, suppress_recently_occluded, Clean, FrameFeatures, FrameOutput,
    Tracker, MAX_OBJECTS, NO_OBJECT_SCORE,
};
use super::{Sam3Model, SegmentFeatures, IMAGE_SIZE};
use crate::engine::value::SharedTensor;

/// SAM3_VideoTrack's settings.
pub struct TrackSettings {
    pub threshold: f64,
    pub max_objects: i64,
    pub detect_interval: i64,
}

/// Keep-alive counts: a track detected again climbs (up to 8), one missed sinks (down to −4);
/// a track at 0 or below is hidden in the output.
const KEEP_ALIVE: (i64, i64) = (-4, 8);
const HOLE_AREA: i64 = 16;
const MATCH: f64 = 0.5;
const RECONDITION_SCORE: f64 = 0.8;

/// The tracker's state between frames.
struct Tracks {
    objects: i64,
    conditioning: Vec<(i64, FrameOutput)>,
    propagated: BTreeMap<i64, FrameOutput>,
    scores: Vec<f64>,
    keep_alive: Option<Vec<i64>>,
    last_occluded: Vec<i64>,
}

impl Tracks {
    /// Tracks start from `out` (a conditioning frame at `index`), one per score, each with
    /// the keep-alive count `alive` when detection runs.
    fn start(&mut self, index: i64, out: FrameOutput, scores: Vec<f64>, alive: i64) {
        let n = scores.len();
        self.objects = n as i64;
        self.scores = scores;
        self.keep_alive = self.keep_alive.take().map(|_| vec![alive; n]);
        self.last_occluded = vec![-1; n];
        self.conditioning.push((index, out));
    }

    /// A frame's packed masks, tracks whose keep-alive count ran out hidden.
    fn visible(&self, high: &Tensor) -> Tensor {
        let masks = high.select(1, 0);
        let masks = match &self.keep_alive {
            Some(alive) => {
                let hidden: Vec<bool> = alive.iter().map(|&a| a <= 0).collect();
                let hidden = Tensor::from_slice(&hidden)
                    .to_device(masks.device())
                    .view([-1, 1, 1]);
                masks.where_self(&hidden.logical_not(), &masks.full_like(NO_OBJECT_SCORE))
            }
            None => masks,
        };
        pack_masks(&masks).to_device(tch::Device::Cpu)
    }
}

impl Sam3Model {
    fn tracker(&self) -> Result<&Tracker> {
        match &self.tracker {
            Some(t) => Ok(t),
            None => bail!("video tracking needs SAM 3.1 (sam3.1_multiplex); SAM 3's tracker is not implemented"),
        }
    }

    /// `[1, 3, 1008, 1008]` of frame `i` of `frames` `[N, H, W, C]` (bicubic, no crop).
    fn video_frame(&self, frames: &Tensor, i: i64) -> Tensor {
        frames
            .get(i)
            .narrow(2, 0, 3)
            .permute([2, 0, 1])
            .unsqueeze(0)
            .to_device(self.device())
            .to_kind(self.dtype)
            .upsample_bicubic2d([IMAGE_SIZE, IMAGE_SIZE], false, None, None)
    }

    fn device(&self) -> tch::Device {
        self.tracker
            .as_ref()
            .map_or(tch::Device::Cpu, |t| t.device())
    }

    /// The detections `[K, 288, 288]` and scores above `threshold` of every text prompt in a
    /// frame's trunk output, after mask NMS.
    fn video_detections(
        &self,
        trunk: &Tensor,
        prompts: &[TextPrompt],
        threshold: f64,
    ) -> Result<(Tensor, Vec<f64>)> {
        let features = self.detector_features(trunk);
        let mut scores = Vec::new();
        let mut masks = Vec::new();
        for prompt in prompts {
            let det = self.detect(&features, &prompt.states, &prompt.mask, None)?;
            scores.push(det.scores.get(0));
            masks.push(det.masks.get(0));
        }
        let probabilities = Tensor::cat(&scores, 0).sigmoid();
        Ok(kept_detections(
            &Tensor::cat(&masks, 0),
            &probabilities,
            threshold,
        ))
    }

    /// `_condition_with_masks`: tracks start from `masks` `[n, 1, h, w]` (above `threshold`)
    /// on this frame, through the interactive heads.
    fn condition(
        &self,
        tracker: &Tracker,
        trunk: &Tensor,
        features: &FrameFeatures,
        masks: &Tensor,
        threshold: f64,
    ) -> Result<FrameOutput> {
        let kind = self.dtype;
        let input = masks
            .to_kind(Kind::Float)
            .upsample_bilinear2d([IMAGE_SIZE, IMAGE_SIZE], false, None, None)
            .gt(threshold)
            .to_kind(kind);
        let SegmentFeatures(interactive) = self.segment_features(trunk);
        let (h, w) = (interactive.coarse.size()[2], interactive.coarse.size()[3]);
        let high = &input * 20.0 - 10.0;
        let low = high
            .to_kind(Kind::Float)
            .internal_upsample_bilinear2d_aa([4 * h, 4 * w], false, None, None)
            .to_kind(kind);
        let down = tracker.interactive_mask_down.patches(&input);
        let (tokens, object) = self.heads.mask_tokens(&interactive, &down)?;
        let pointer = tracker.interactive_pointer_proj.forward(&tokens)?;
        let pointer = tracker.blend_pointer(&pointer, &object.gt(0.0))?;
        let present = input.flatten(1, -1).gt(0.0).any_dim(1, true).to_kind(kind);
        let object_scores = present * 20.0 - 10.0;
        let memory =
            tracker.encode_memory(&features.coarse_map(), &high, &object_scores, Clean::All)?;
        Ok(FrameOutput {
            memory,
            image: features.coarse.shallow_clone(),
            image_pos: features.coarse_pos.shallow_clone(),
            pointers: tracker.mux(&pointer),
            low,
            high: high.to_kind(Kind::Float),
        })
    }

    /// Tracks the objects of `initial` masks `[n, H, W]` and/or those `prompts` find through
    /// `frames` `[N, H, W, C]` (0..1); `progress` is told after each frame how many are done
    /// and the frame's tracker state (none before the first objects), and stops the work by
    /// returning false.
    pub fn track_video(
        &self,
        frames: &Tensor,
        initial: Option<&Tensor>,
        prompts: &[TextPrompt],
        settings: &TrackSettings,
        mut progress: impl FnMut(i64, Option<&FrameOutput>) -> bool,
    ) -> Result<TrackData> {
        let tracker = self.tracker()?;
        let n = frames.size()[0];
        let max_objects = if settings.max_objects <= 0 || settings.max_objects > MAX_OBJECTS {
            MAX_OBJECTS
        } else {
            settings.max_objects
        };
        let mut tracks = Tracks {
            objects: 0,
            conditioning: Vec::new(),
            propagated: BTreeMap::new(),
            scores: Vec::new(),
            keep_alive: (!prompts.is_empty()).then(Vec::new),
            last_occluded: Vec::new(),
        };
        let mut outputs: Vec<Option<Tensor>> = Vec::new();
        for index in 0..n {
            let trunk = self.trunk(&self.video_frame(frames, index))?;
            let features = tracker.features(&trunk);
            let given = initial.filter(|_| index == 0);
            let detect = !prompts.is_empty()
                && given.is_none()
                && index % settings.detect_interval.max(1) == 0
                && tracks.objects < max_objects;
            let (det_masks, det_scores) = if detect {
                self.video_detections(&trunk, prompts, settings.threshold)?
            } else {
                (
                    Tensor::zeros([0, 1, 1], (self.dtype, self.device())),
                    Vec::new(),
                )
            };
            let out = if let Some(masks) = given {
                let masks = masks.to_device(self.device()).unsqueeze(1);
                let out = self.condition(tracker, &trunk, &features, &masks, 0.5)?;
                let n = masks.size()[0] as usize;
                tracks.start(index, out, vec![1.0; n], KEEP_ALIVE.1);
                tracks.conditioning.last().map(|(_, out)| out)
            } else if tracks.objects == 0 {
                // Tracks start from the first frame with detections.
                let k = (det_scores.len() as i64).min(max_objects);
                if k > 0 {
                    let masks = det_masks.narrow(0, 0, k).unsqueeze(1);
                    let out = self.condition(tracker, &trunk, &features, &masks, 0.0)?;
                    tracks.start(index, out, det_scores[..k as usize].to_vec(), 1);
                    tracks.conditioning.last().map(|(_, out)| out)
                } else {
                    None
                }
            } else {
                let out = self.propagated(tracker, index, n, &features, &mut tracks)?;
                let out = self.matched(
                    tracker,
                    out,
                    &features,
                    (&det_masks, &det_scores),
                    detect,
                    max_objects,
                    &mut tracks,
                )?;
                tracks.propagated.insert(index, out);
                tracks
                    .propagated
                    .retain(|&t, _| t >= index - MEMORY_LOOKBACK);
                Some(&tracks.propagated[&index])
            };
            outputs.push(out.map(|out| tracks.visible(&out.high)));
            if !progress(index + 1, out) {
                bail!("interrupted");
            }
        }
        Ok(packed_tracks(
            outputs,
            n,
            tracks.scores,
            (frames.size()[1], frames.size()[2]),
        ))
    }

    /// A frame propagated from memory, its masks cleaned and its memory encoded.
    fn propagated(
        &self,
        tracker: &Tracker,
        index: i64,
        frames: i64,
        features: &FrameFeatures,
        tracks: &mut Tracks,
    ) -> Result<FrameOutput> {
        let n = tracks.objects;
        let image = tracker.with_memory(
            index,
            frames,
            features,
            (&tracks.conditioning, &tracks.propagated),
            n,
            self.heads.no_memory(),
        )?;
        let (low, high, pointers, _) = tracker.propagate(&image, &features.fine, n, IMAGE_SIZE)?;
        let mut low = fill_holes(&low, HOLE_AREA);
        if tracks.last_occluded.len() as i64 == n && n > 1 {
            low = suppress_recently_occluded(&low, &mut tracks.last_occluded, index);
        }
        let memory = tracker.memory_of(&low, &features.coarse_map(), Clean::None)?;
        Ok(FrameOutput {
            memory,
            image: features.coarse.shallow_clone(),
            image_pos: features.coarse_pos.shallow_clone(),
            pointers,
            low,
            high,
        })
    }

    /// `_match_and_add_detections`: detections matched against the tracks (keep-alive counts
    /// updated when `counted`), confident ones refreshing their track, unmatched ones joining
    /// while there is room.
    #[allow(clippy::too_many_arguments)]
    fn matched(
        &self,
        tracker: &Tracker,
        mut out: FrameOutput,
        features: &FrameFeatures,
        (det_masks, det_scores): (&Tensor, &[f64]),
        counted: bool,
        max_objects: i64,
        tracks: &mut Tracks,
    ) -> Result<FrameOutput> {
        let n = tracks.objects;
        let alive = tracks.keep_alive.as_mut().filter(|_| counted);
        if det_scores.is_empty() {
            if let Some(alive) = alive {
                alive
                    .iter_mut()
                    .for_each(|a| *a = (*a - 1).max(KEEP_ALIVE.0));
            }
            return Ok(out);
        }
        let tracked = out.low.select(1, 0);
        let (h, w) = (tracked.size()[1], tracked.size()[2]);
        let resized = det_masks
            .unsqueeze(1)
            .to_kind(Kind::Float)
            .upsample_bilinear2d([h, w], false, None, None)
            .select(1, 0)
            .to_kind(tracked.kind());
        let overlap = mask_overlap(&resized, &tracked).to_device(tch::Device::Cpu);
        let k = det_scores.len();
        let rows: Vec<Vec<f64>> = (0..k as i64)
            .map(|i| Vec::try_from(overlap.get(i).to_kind(Kind::Double)).expect("overlaps"))
            .collect();
        if let Some(alive) = alive {
            for (j, a) in alive.iter_mut().enumerate() {
                let matched = rows.iter().any(|r| r[j] >= MATCH);
                *a = if matched {
                    (*a + 1).min(KEEP_ALIVE.1)
                } else {
                    (*a - 1).max(KEEP_ALIVE.0)
                };
            }
        }
        let mut refreshed = false;
        for (d, row) in rows.iter().enumerate() {
            if det_scores[d] < RECONDITION_SCORE || row.is_empty() {
                continue;
            }
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            if row[best] >= MATCH {
                let d = d as i64;
                out.low.get(best as i64).copy_(&resized.narrow(0, d, 1));
                let high = det_masks
                    .narrow(0, d, 1)
                    .unsqueeze(1)
                    .to_kind(Kind::Float)
                    .upsample_bilinear2d([IMAGE_SIZE, IMAGE_SIZE], false, None, None);
                out.high.get(best as i64).copy_(&high.get(0));
                refreshed = true;
            }
        }
        if refreshed {
            out.memory = tracker.memory_of(&out.low, &features.coarse_map(), Clean::None)?;
        }
        if n >= max_objects {
            return Ok(out);
        }
        let room = (max_objects - n) as usize;
        let new: Vec<i64> = (0..k)
            .filter(|&d| rows[d].iter().copied().fold(0.0, f64::max) < MATCH)
            .take(room)
            .map(|d| d as i64)
            .collect();
        if new.is_empty() {
            return Ok(out);
        }
        let added =
            det_masks.index_select(0, &Tensor::from_slice(&new).to_device(det_masks.device()));
        let grow = |x: &Tensor| {
            let (h, w) = (x.size()[2], x.size()[3]);
            let det = added
                .unsqueeze(1)
                .to_kind(Kind::Float)
                .upsample_bilinear2d([h, w], false, None, None)
                .to_kind(x.kind());
            Tensor::cat(&[x.shallow_clone(), det], 0)
        };
        out.low = grow(&out.low);
        out.high = grow(&out.high);
        let total = n + new.len() as i64;
        let clean: Vec<bool> = (0..total).map(|i| i >= n).collect();
        out.memory = tracker.memory_of(&out.low, &features.coarse_map(), Clean::Some(&clean))?;
        tracks.objects = total;
        tracks
            .scores
            .extend(new.iter().map(|&d| det_scores[d as usize]));
        tracks
            .last_occluded
            .extend(std::iter::repeat_n(-1, new.len()));
        if let Some(alive) = tracks.keep_alive.as_mut().filter(|_| counted) {
            alive.extend(std::iter::repeat_n(1, new.len()));
        }
        Ok(out)
    }
}

/// How many propagated frames are kept (the memory's and the pointers' reach).
const MEMORY_LOOKBACK: i64 = 16;

/// The frames' packed masks stacked, each padded with empty objects to the most any frame
/// had (`None` frames are all empty).
fn packed_tracks(
    outputs: Vec<Option<Tensor>>,
    frames: i64,
    scores: Vec<f64>,
    orig_size: (i64, i64),
) -> TrackData {
    let objects = outputs.iter().flatten().map(|m| m.size()[0]).max();
    let packed = objects.map(|objects| {
        let sample = outputs.iter().flatten().next().expect("a tracked frame");
        let (h, w) = (sample.size()[1], sample.size()[2]);
        let all: Vec<Tensor> = outputs
            .iter()
            .map(|m| {
                let empty = Tensor::zeros([objects, h, w], (Kind::Uint8, tch::Device::Cpu));
                match m {
                    Some(m) => {
                        empty.narrow(0, 0, m.size()[0]).copy_(m);
                        empty
                    }
                    None => empty,
                }
            })
            .collect();
        SharedTensor::new(Tensor::stack(&all, 0))
    });
    TrackData {
        packed,
        frames,
        scores,
        orig_size,
    }
}
