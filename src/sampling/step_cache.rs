//! EasyCache and LazyCache (`comfy_extras/nodes_easycache.py`): while the model's output moves
//! predictably with its input, calls are skipped and answered with the input plus the last
//! computed `output − input`.
//!
//! Both track the mean absolute change of a subsampled input between computed calls, and learn
//! from the last two computed calls how much the output changes per unit of input change. Each
//! call adds the predicted relative output change to a running sum; while the sum stays under
//! the reuse threshold the call is skipped, otherwise it runs and the sum restarts. EasyCache
//! does this around each diffusion-model call, keeping one difference per conditioning entry
//! and letting the first entry (ComfyUI's first uuid) decide for the step; LazyCache does it
//! around the whole guided estimate. Both act only between their start and end percents.
//!
//! The statistics are tensors in the precision of what they are taken of, as in ComfyUI, and
//! compared with the threshold there. ComfyUI takes the input's in the network's precision
//! (fp16 on a GPU for Wan), this server in the sampler's float32, so a decision that falls
//! within that rounding of the threshold can come out otherwise.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::model_sampling::ModelSampling;

/// Which cache, with ComfyUI's name for it in the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CacheKind {
    /// Around each diffusion-model call, per conditioning entry.
    Easy,
    /// Around the guided estimate.
    Lazy,
}

impl CacheKind {
    fn name(self) -> &'static str {
        match self {
            CacheKind::Easy => "EasyCache",
            CacheKind::Lazy => "LazyCache",
        }
    }
}

/// A conditioning entry of a sampling run: its conditioning's index and its own within it
/// (what ComfyUI's per-entry uuid identifies).
pub type EntryKey = (usize, usize);

/// Both caches subsample the input's last two dimensions by this step.
const SUBSAMPLE: i64 = 8;

pub struct StepCache {
    pub kind: CacheKind,
    pub reuse_threshold: f64,
    pub start_percent: f64,
    pub end_percent: f64,
    pub verbose: bool,
    state: Mutex<State>,
}

/// One sampling run's state (ComfyUI clones its holder for each run).
#[derive(Default)]
struct State {
    start_sigma: f64,
    end_sigma: f64,
    /// Output change per unit of input change, from the last two computed calls.
    rate: Option<Tensor>,
    /// The predicted relative output change since the last computed call; `None` is 0.
    cumulative: Option<Tensor>,
    initial_step: bool,
    /// EasyCache: the first entry decided to skip this step, so the others skip too.
    skip_current_step: bool,
    first_key: Option<EntryKey>,
    input_prev: Option<Tensor>,
    output_prev: Option<Tensor>,
    output_prev_norm: Option<Tensor>,
    /// `output − input` of the last computed call, per entry (LazyCache: one, under any key).
    diffs: HashMap<EntryKey, Tensor>,
    skipped: usize,
    /// Device and shape the state was made for; another one resets it.
    metadata: Option<(Device, Vec<i64>)>,
    /// LazyCache: the last computed unconditional estimate, for samplers that read it.
    last_uncond: Option<Tensor>,
}

/// LazyCache's single difference.
const WHOLE: EntryKey = (usize::MAX, 0);

impl State {
    fn fresh(start_sigma: f64, end_sigma: f64) -> Self {
        State {
            start_sigma,
            end_sigma,
            initial_step: true,
            ..State::default()
        }
    }

    /// ComfyUI's `reset`, which (unlike a fresh holder) leaves a zero rate behind.
    fn reset(&mut self, like: &Tensor) {
        *self = State {
            rate: Some(like.zeros_like().sum(None::<Kind>)),
            ..State::fresh(self.start_sigma, self.end_sigma)
        };
    }

    /// Resets the state when the input's device or shape (`from` on) changed.
    fn check_metadata(&mut self, name: &str, x: &Tensor, from: usize) {
        let metadata = (x.device(), x.size()[from..].to_vec());
        match &self.metadata {
            None => self.metadata = Some(metadata),
            Some(m) if *m == metadata => {}
            Some(_) => {
                log::warn!("{name} - Tensor shape, dtype or device changed, resetting state");
                self.reset(x);
            }
        }
    }

    /// The running sum with this call's predicted change added, and whether it stays under
    /// `threshold`; `None` while there is nothing to predict from.
    fn accumulate(&mut self, input_change: &Tensor, threshold: f64) -> Option<bool> {
        let (rate, norm) = (self.rate.as_ref()?, self.output_prev_norm.as_ref()?);
        let approx = rate * input_change / norm;
        let cumulative = match self.cumulative.take() {
            Some(c) => c + approx,
            None => approx,
        };
        let under = cumulative.lt(threshold).int64_value(&[]) != 0;
        self.cumulative = Some(cumulative);
        Some(under)
    }

    /// After a computed call: the new rate and the previous input and output.
    fn record(
        &mut self,
        input: Tensor,
        output: &Tensor,
        whole_output: &Tensor,
        change: Option<Tensor>,
    ) {
        if let (Some(prev), Some(_)) = (&self.output_prev, &self.output_prev_norm) {
            let output_change = mean_abs_change(output, prev);
            if let Some(input_change) = change {
                self.rate = Some(output_change / input_change);
            }
        }
        self.input_prev = Some(input.copy());
        self.output_prev = Some(output.copy());
        self.output_prev_norm = Some(whole_output.abs().mean(None::<Kind>));
    }
}

/// Every `SUBSAMPLE`-th element of the last two dimensions.
fn subsample(x: &Tensor) -> Tensor {
    let d = x.dim() as i64;
    x.slice(d - 2, None, None, SUBSAMPLE)
        .slice(d - 1, None, None, SUBSAMPLE)
}

fn mean_abs_change(now: &Tensor, prev: &Tensor) -> Tensor {
    (now - prev).abs().mean(None::<Kind>)
}

impl StepCache {
    pub fn new(
        kind: CacheKind,
        reuse_threshold: f64,
        start_percent: f64,
        end_percent: f64,
        verbose: bool,
    ) -> Self {
        StepCache {
            kind,
            reuse_threshold,
            start_percent,
            end_percent,
            verbose,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sampling run starts: fresh state, with the percents as sigmas of its model.
    pub fn begin(&self, sampling: &ModelSampling) {
        let (start, end) = (
            sampling.percent_to_sigma(self.start_percent),
            sampling.percent_to_sigma(self.end_percent),
        );
        log::info!(
            "{} enabled - threshold: {}, start_percent: {}, end_percent: {}",
            self.kind.name(),
            self.reuse_threshold,
            self.start_percent,
            self.end_percent
        );
        *self.lock() = State::fresh(start, end);
    }

    /// A sampling run of `steps` steps ended: how many were skipped (logged), and the state
    /// dropped.
    pub fn finish(&self, steps: usize) -> usize {
        let mut state = self.lock();
        let skipped = state.skipped;
        let speedup = if steps > skipped {
            steps as f64 / (steps - skipped) as f64
        } else {
            1.0
        };
        log::info!(
            "{} - skipped {skipped}/{steps} steps ({speedup:.2}x speedup).",
            self.kind.name()
        );
        *state = State::default();
        skipped
    }

    /// A new `calc_cond_batch` (EasyCache's wrapper of it): no skip decided yet.
    pub fn new_batch(&self) {
        self.lock().skip_current_step = false;
    }

    fn log_decision(&self, skip: bool, state: &State) {
        if self.verbose {
            let what = if skip { "skipping" } else { "NOT skipping" };
            let sum = state
                .cumulative
                .as_ref()
                .map_or(0.0, |c| c.double_value(&[]));
            log::info!(
                "{} [verbose] - {what} step; cumulative_change_rate: {sum}, reuse_threshold: {}",
                self.kind.name(),
                self.reuse_threshold
            );
        }
    }

    /// EasyCache around one diffusion-model call. `x` is the network input's latent channels,
    /// a batch of one equal chunk per entry of `keys` in that order; `forward` computes the
    /// network output. ComfyUI batches a group of entries in the reverse of this order, so
    /// its first uuid is the last key here.
    pub fn easy_forward(
        &self,
        x: &Tensor,
        sigma: f64,
        keys: &[EntryKey],
        forward: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut state = self.lock();
        if sigma <= state.end_sigma || keys.is_empty() {
            drop(state);
            return forward();
        }
        let chunk = |t: &Tensor, key: EntryKey| {
            let n = t.size()[0] / keys.len() as i64;
            let i = keys.iter().position(|k| *k == key).unwrap_or(0) as i64;
            t.narrow(0, i * n, n)
        };
        let mut has_first = state.first_key.is_some_and(|k| keys.contains(&k));
        let mut input_change = None;
        if sigma <= state.start_sigma {
            state.check_metadata(self.kind.name(), x, 1);
            let can_apply = keys.iter().all(|k| state.diffs.contains_key(k));
            if state.skip_current_step && can_apply {
                return Ok(self.apply_diffs(&mut state, x, keys));
            }
            if state.initial_step {
                state.first_key = keys.last().copied();
                has_first = true;
                state.initial_step = false;
            }
            if has_first {
                let first = state.first_key.expect("set above");
                if let Some(prev) = &state.input_prev {
                    input_change = Some(mean_abs_change(&subsample(&chunk(x, first)), prev));
                }
                let decision = input_change
                    .as_ref()
                    .and_then(|change| state.accumulate(change, self.reuse_threshold));
                if let Some(under) = decision {
                    let skip = under && can_apply;
                    self.log_decision(skip, &state);
                    if skip {
                        state.skip_current_step = true;
                        return Ok(self.apply_diffs(&mut state, x, keys));
                    }
                    state.cumulative = None;
                }
            }
        }
        drop(state);
        let out = forward()?;
        let mut state = self.lock();
        let diff = &out - x;
        let n = diff.size()[0] / keys.len() as i64;
        for (i, key) in keys.iter().enumerate() {
            state.diffs.insert(*key, diff.narrow(0, i as i64 * n, n));
        }
        if has_first {
            let first = state.first_key.expect("has_first");
            let input = subsample(&chunk(x, first));
            let output = subsample(&chunk(&out, first));
            state.record(input, &output, &out, input_change);
        }
        Ok(out)
    }

    /// The skipped call's output: each entry's chunk of `x` plus its difference.
    fn apply_diffs(&self, state: &mut State, x: &Tensor, keys: &[EntryKey]) -> Tensor {
        if state.first_key.is_some_and(|k| keys.contains(&k)) {
            state.skipped += 1;
        }
        let chunks = x.chunk(keys.len() as i64, 0);
        let parts: Vec<Tensor> = chunks
            .iter()
            .zip(keys)
            .map(|(c, k)| c + &state.diffs[k])
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// LazyCache around the guided estimate at `x` (the sampler's latent). `denoise` computes
    /// the estimate and the unconditional one (which CFG++ samplers read); a skipped step
    /// returns the last computed unconditional estimate with it, as ComfyUI's samplers keep it.
    pub fn lazy_denoise(
        &self,
        x: &Tensor,
        sigma: f64,
        denoise: impl FnOnce() -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let mut state = self.lock();
        if sigma <= state.end_sigma {
            drop(state);
            return denoise();
        }
        let mut input_change = None;
        if sigma <= state.start_sigma {
            state.check_metadata(self.kind.name(), x, 0);
            if let Some(prev) = &state.input_prev {
                input_change = Some(mean_abs_change(&subsample(x), prev));
            }
            let decision = input_change
                .as_ref()
                .and_then(|change| state.accumulate(change, self.reuse_threshold));
            if let Some(under) = decision {
                self.log_decision(under, &state);
                if under {
                    state.skipped += 1;
                    let out = x + &state.diffs[&WHOLE];
                    let uncond = state
                        .last_uncond
                        .as_ref()
                        .map_or_else(|| out.shallow_clone(), Tensor::shallow_clone);
                    return Ok((out, uncond));
                }
                state.cumulative = None;
            }
        }
        drop(state);
        let (out, uncond) = denoise()?;
        let mut state = self.lock();
        state.diffs.insert(WHOLE, &out - x);
        state.last_uncond = Some(uncond.shallow_clone());
        state.record(subsample(x), &subsample(&out), &out, input_change);
        Ok((out, uncond))
    }
}
