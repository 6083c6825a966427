//! Classifier-free guidance over conditioning lists (ComfyUI's `sampling_function` and
//! `calc_cond_batch`), and the guiders built on it.

use std::sync::Arc;

use anyhow::Result;
use tch::Tensor;

use super::model::{repeat_to_batch, CondEntry, Conditioning, Model, UNCLIP_EMBEDS, UNCLIP_PARAMS};
use super::post_cfg::{cfg_function, cond_and_uncond, CfgStep};
use super::regions;
use super::samplers::Denoiser;
use super::step_cache::{CacheKind, EntryKey};
use crate::engine::value::SharedTensor;

/// A guider: positive/negative (and more) conditioning with a CFG scale.
#[derive(Clone)]
pub enum Guider {
    /// One conditioning, no guidance (BasicGuider).
    Basic { model: Model, cond: Conditioning },
    /// Two conditionings stacked (DualCFGGuider): regular
    /// `neg + (c2 − neg)·cfg2 + (c1 − c2)·cfg1`, or nested `neg + cfg2·(c2 + (c1 − c2)·cfg1 − neg)`.
    DualCfg {
        model: Model,
        cond1: Conditioning,
        cond2: Conditioning,
        negative: Conditioning,
        cfg1: f64,
        cfg2: f64,
        nested: bool,
    },
    /// `uncond + (cond − uncond)·cfg` (CFGGuider, KSampler).
    Cfg {
        model: Model,
        positive: Conditioning,
        negative: Conditioning,
        cfg: f64,
    },
}

impl Guider {
    pub fn model(&self) -> &Model {
        match self {
            Guider::Basic { model, .. }
            | Guider::Cfg { model, .. }
            | Guider::DualCfg { model, .. } => model,
        }
    }

    pub fn model_mut(&mut self) -> &mut Model {
        match self {
            Guider::Basic { model, .. }
            | Guider::Cfg { model, .. }
            | Guider::DualCfg { model, .. } => model,
        }
    }
}

/// Whether an entry applies at `sigma` (its start/end percentages turned into sigmas).
fn active(model: &Model, entry: &CondEntry, sigma: f64) -> bool {
    let start = model.sampling.percent_to_sigma(entry.start_percent);
    let end = model.sampling.percent_to_sigma(entry.end_percent);
    !(sigma > start || sigma < end)
}

/// One entry's share of a model call: which conditioning it belongs to and its region.
struct Job<'a> {
    list: usize,
    /// The entry's index in its conditioning.
    index: usize,
    entry: &'a CondEntry,
    region: regions::Region,
}

/// Whether two jobs can share one batched model call (ComfyUI's `can_concat`): same input shape,
/// same conditioning shapes and constants, the conditioning's batch dividing the input's.
fn batchable(a: &Job, b: &Job) -> bool {
    let pooled = |j: &Job| j.entry.pooled.as_ref().map(|p| p.size());
    let extras = |j: &Job| {
        j.entry
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), v.size()))
            .collect::<Vec<_>>()
    };
    let batch = a.region.input.size()[0];
    a.region.input.size() == b.region.input.size()
        && a.entry.context.size() == b.entry.context.size()
        && pooled(a) == pooled(b)
        && extras(a) == extras(b)
        && a.entry.frame_rate == b.entry.frame_rate
        && a.entry.guides == b.entry.guides
        && batch % a.entry.context.size()[0] == 0
}

/// The model's estimates for a group of batchable jobs, from one call.
fn run_group(model: &Model, group: &[&Job], sigma: f64) -> Result<Vec<Tensor>> {
    let keys: Vec<EntryKey> = group.iter().map(|j| (j.list, j.index)).collect();
    if let [job] = group {
        return Ok(vec![model.apply_entries(
            &job.region.input,
            sigma,
            job.entry,
            &keys,
        )?]);
    }
    let batch = group[0].region.input.size()[0];
    let inputs: Vec<&Tensor> = group.iter().map(|j| &j.region.input).collect();
    let contexts: Vec<Tensor> = group
        .iter()
        .map(|j| repeat_to_batch(&j.entry.context, batch))
        .collect();
    let mut entry = CondEntry::new(Tensor::cat(&contexts, 0));
    entry.frame_rate = group[0].entry.frame_rate;
    entry.guides = group[0].entry.guides.clone();
    if group[0].entry.pooled.is_some() {
        let pooled: Vec<Tensor> = group
            .iter()
            .filter_map(|j| j.entry.pooled.as_ref())
            .map(|p| repeat_to_batch(p, batch))
            .collect();
        entry.pooled = Some(Arc::new(SharedTensor::new(Tensor::cat(&pooled, 0))));
    }
    for key in group[0].entry.extra.keys() {
        let parts: Vec<Tensor> = group
            .iter()
            .map(|j| repeat_to_batch(&j.entry.extra[key], batch))
            .collect();
        entry = entry.with_extra(key, Tensor::cat(&parts, 0));
    }
    let out = model.apply_entries(&Tensor::cat(&inputs, 0), sigma, &entry, &keys)?;
    Ok(out.split(batch, 0))
}

/// ComfyUI's `calc_cond_batch`: every entry of `conds` that applies at `sigma` runs on its
/// region, compatible entries batched into one model call (cond and uncond together), and each
/// conditioning's outputs are averaged with their weight maps; zeros where none applies.
/// With context windows on a long latent, each window's calls are these, blended.
pub(crate) fn calc_conds<const N: usize>(
    model: &Model,
    conds: [&Conditioning; N],
    x: &Tensor,
    sigma: f64,
) -> Result<[Tensor; N]> {
    let outs = match &model.context_windows {
        Some(windows) if windows.applies(x) => windows.execute(&conds, x, sigma, |c, sub_x| {
            calc_conds_whole(model, c, sub_x, sigma)
        })?,
        _ => calc_conds_whole(model, &conds, x, sigma)?,
    };
    Ok(outs.try_into().expect("one result per conditioning"))
}

fn calc_conds_whole(
    model: &Model,
    conds: &[&Conditioning],
    x: &Tensor,
    sigma: f64,
) -> Result<Vec<Tensor>> {
    if let Some(cache) = &model.step_cache {
        cache.new_batch();
    }
    let totals: Vec<Tensor> = conds.iter().map(|_| x.zeros_like()).collect();
    let counts: Vec<Tensor> = conds.iter().map(|_| x.ones_like() * 1e-37).collect();
    let jobs: Vec<Job> = conds
        .iter()
        .enumerate()
        .flat_map(|(list, cond)| {
            cond.0
                .iter()
                .enumerate()
                .filter(|(_, e)| active(model, e, sigma))
                .map(move |(index, entry)| (list, index, entry))
        })
        .map(|(list, index, entry)| Job {
            list,
            index,
            entry,
            region: regions::region(entry, x),
        })
        .collect();
    let mut pending: Vec<&Job> = jobs.iter().collect();
    while let Some(first) = pending.first().copied() {
        let (group, rest): (Vec<&Job>, Vec<&Job>) =
            pending.into_iter().partition(|j| batchable(first, j));
        pending = rest;
        for (job, out) in group.iter().zip(run_group(model, &group, sigma)?) {
            let crop = job.region.crop.as_ref();
            regions::add_into(&totals[job.list], crop, &(out * &job.region.mult));
            regions::add_into(&counts[job.list], crop, &job.region.mult);
        }
    }
    Ok(totals.iter().zip(&counts).map(|(t, c)| t / c).collect())
}

/// The guided estimate of a positive conditioning alone: ComfyUI's `sampling_function` at
/// scale 1 with a zero unconditional estimate and no negative conditioning.
fn positive_only(model: &Model, positive: &Conditioning, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let [cond] = calc_conds(model, [positive], x, sigma)?;
    if model.pre_cfg.is_empty() && model.cfg_function.is_none() && model.post_cfg.is_empty() {
        return Ok(cond);
    }
    let uncond = cond.zeros_like();
    Ok(guide(model, positive, x, sigma, [cond, uncond], false, 1.0)?.0)
}

/// ComfyUI's `sampling_function` after `calc_cond_batch`: the model's pre-CFG patches rewrite
/// the conditional and unconditional estimates (`has_uncond` false on the cfg 1 path, where the
/// second is zeros), then `cfg_function` combines them. Returns the guided estimate and the
/// unconditional one as the post-CFG patches saw it (what CFG++ samplers read).
pub fn guide(
    model: &Model,
    positive: &Conditioning,
    x: &Tensor,
    sigma: f64,
    outs: [Tensor; 2],
    has_uncond: bool,
    cond_scale: f64,
) -> Result<(Tensor, Tensor)> {
    let mut outs = outs;
    for patch in &model.pre_cfg {
        outs = patch.apply(outs, x, sigma, cond_scale, has_uncond);
    }
    let [cond, uncond] = outs;
    let guided = cfg_function(&CfgStep {
        model,
        cond: positive,
        x,
        sigma,
        cond_pred: &cond,
        uncond_pred: &uncond,
        cond_scale,
    })?;
    Ok((guided, uncond))
}

/// The extra key marking negative-prompt entries for models that ask for it.
pub const PROMPT_NEGATIVE: &str = "prompt_negative";

impl Guider {
    /// A copy ready to sample a latent with spatial `dims`: areas and masks resolved, and
    /// matching-area counterparts added across the conditionings (ComfyUI's `process_conds`);
    /// the inpainting mask, if any, joins every entry as `denoise_mask`.
    /// `seed` is the sampler's, which some networks' conditioning takes
    /// (`DiffusionNet::prepare_entry`).
    pub fn prepared(&self, dims: &[i64], denoise_mask: Option<&Tensor>, seed: u64) -> Guider {
        let mut g = self.clone();
        let mut lists: Vec<&mut Conditioning> = match &mut g {
            Guider::Basic { cond, .. } => vec![cond],
            Guider::Cfg {
                positive, negative, ..
            } => vec![positive, negative],
            Guider::DualCfg {
                cond1,
                cond2,
                negative,
                ..
            } => vec![cond1, cond2, negative],
        };
        let mut owned: Vec<Conditioning> = lists.iter().map(|c| (**c).clone()).collect();
        regions::prepare(&mut owned, dims);
        // On the network's device once, as ComfyUI's `process_conds` does: a host tensor would be
        // copied again for every step, and each copy waits for the GPU to finish the last one.
        let net = &self.model().net;
        let device = net.device();
        for entry in owned.iter_mut().flat_map(|c| c.0.iter_mut()) {
            *entry = entry.on_device(device);
            net.prepare_entry(entry, seed);
            for key in [UNCLIP_EMBEDS, UNCLIP_PARAMS] {
                entry.extra.remove(key);
            }
        }
        // The inpainting mask too (Wan reads it on the device every step); the negative-prompt
        // tag stays on the host, where SDXL's refiner reads its value.
        let denoise_mask = denoise_mask.map(|m| m.to_device(device));
        let tag_negative = self.model().net.uses_prompt_type() && owned.len() > 1;
        let last = owned.len() - 1;
        for (index, (slot, resolved)) in lists.iter_mut().zip(owned).enumerate() {
            **slot = resolved;
            if tag_negative {
                let negative = Tensor::from_slice(&[f32::from(index == last)]);
                for entry in slot.0.iter_mut() {
                    entry.extra.insert(
                        PROMPT_NEGATIVE.into(),
                        Arc::new(SharedTensor::new(negative.shallow_clone())),
                    );
                }
            }
            if let Some(mask) = &denoise_mask {
                for entry in slot.0.iter_mut() {
                    entry.extra.insert(
                        "denoise_mask".into(),
                        Arc::new(SharedTensor::new(mask.shallow_clone())),
                    );
                }
            }
        }
        g
    }
}

impl Guider {
    /// The guided estimate and the unconditional one (the guided one where there is none).
    /// `needs_uncond` is ComfyUI's `disable_cfg1_optimization`, which the samplers that read the
    /// unconditional estimate set: CFG runs the negative even at scale 1.
    fn guided(&mut self, x: &Tensor, sigma: f64, needs_uncond: bool) -> Result<(Tensor, Tensor)> {
        if let Guider::Cfg {
            model,
            positive,
            negative,
            cfg,
        } = self
        {
            let cfg = model.cfg_at(sigma, *cfg);
            if needs_uncond || (cfg - 1.0).abs() > 1e-9 {
                let outs = cond_and_uncond(model, positive, negative, x, sigma)?;
                return guide(model, positive, x, sigma, outs, true, cfg);
            }
        }
        let d = match self {
            // ComfyUI runs the positive alone when there is no negative pass (BasicGuider, and
            // CFG at 1): the unconditional estimate its patches see is zeros.
            Guider::Basic {
                model,
                cond: positive,
            }
            | Guider::Cfg {
                model, positive, ..
            } => positive_only(model, positive, x, sigma)?,
            Guider::DualCfg {
                model,
                cond1,
                cond2,
                negative,
                cfg1,
                cfg2,
                nested,
            } => {
                let [c1, c2, neg] = calc_conds(model, [cond1, cond2, negative], x, sigma)?;
                if *nested {
                    let text = cfg_function(&CfgStep {
                        model,
                        cond: cond1,
                        x,
                        sigma,
                        cond_pred: &c1,
                        uncond_pred: &c2,
                        cond_scale: *cfg1,
                    })?;
                    &neg + (text - &neg) * *cfg2
                } else {
                    let middle = cfg_function(&CfgStep {
                        model,
                        cond: cond2,
                        x,
                        sigma,
                        cond_pred: &c2,
                        uncond_pred: &neg,
                        cond_scale: *cfg2,
                    })?;
                    middle + (c1 - c2) * *cfg1
                }
            }
        };
        Ok((d.shallow_clone(), d))
    }

    /// [`Guider::guided`] under the model's LazyCache, if it has one.
    fn cached(&mut self, x: &Tensor, sigma: f64, needs_uncond: bool) -> Result<(Tensor, Tensor)> {
        match self.model().step_cache.clone() {
            Some(cache) if cache.kind == CacheKind::Lazy => {
                cache.lazy_denoise(x, sigma, || self.guided(x, sigma, needs_uncond))
            }
            _ => self.guided(x, sigma, needs_uncond),
        }
    }
}

impl Denoiser for Guider {
    fn is_flow(&self) -> bool {
        self.model().sampling.prediction == super::model_sampling::Prediction::Flow
    }

    fn percent_to_sigma(&self, percent: f64) -> f64 {
        self.model().sampling.percent_to_sigma(percent)
    }

    fn denoise_with_uncond(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        self.cached(x, sigma, true)
    }

    fn noise_scaling(&self, sigma: f64, noise: &Tensor, x: &Tensor) -> Tensor {
        let s = Tensor::full([x.size()[0]], sigma, (x.kind(), x.device()));
        self.model().sampling.noise_scaling(&s, noise, x, false)
    }

    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.cached(x, sigma, false)?.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::sampling::model::DiffusionNet;
    use crate::sampling::model_sampling::{ModelSampling, Prediction};

    /// Counts its calls and the items it saw; output = context's value per item.
    #[derive(Default)]
    struct CountingNet {
        calls: AtomicUsize,
        items: AtomicUsize,
    }

    impl DiffusionNet for CountingNet {
        fn forward(&self, xc: &Tensor, _: &Tensor, cond: &CondEntry) -> Result<Tensor> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.items
                .fetch_add(xc.size()[0] as usize, Ordering::SeqCst);
            let value = cond.context.flatten(1, -1).mean_dim(1, false, None);
            Ok(xc.zeros_like() + value.view([-1, 1, 1, 1]))
        }
    }

    fn cond(value: f64, tokens: i64) -> Conditioning {
        Conditioning(vec![CondEntry::new(Tensor::full(
            [1, tokens, 8],
            value,
            (tch::Kind::Float, tch::Device::Cpu),
        ))])
    }

    fn cfg_guider(net: Arc<CountingNet>, negative_tokens: i64) -> Guider {
        Guider::Cfg {
            model: Model::new(net, Arc::new(ModelSampling::sd(Prediction::Eps))),
            positive: cond(0.5, 3),
            negative: cond(-0.5, negative_tokens),
            cfg: 4.0,
        }
    }

    #[test]
    fn cond_and_uncond_share_one_model_call_when_shapes_match() {
        let x = Tensor::ones([2, 4, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
        let net = Arc::new(CountingNet::default());
        let batched = cfg_guider(net.clone(), 3).denoise(&x, 1.0).unwrap();
        assert_eq!(net.calls.load(Ordering::SeqCst), 1);
        assert_eq!(net.items.load(Ordering::SeqCst), 4);

        // Different token counts cannot be concatenated: two calls, the same result.
        let net = Arc::new(CountingNet::default());
        let separate = cfg_guider(net.clone(), 5).denoise(&x, 1.0).unwrap();
        assert_eq!(net.calls.load(Ordering::SeqCst), 2);
        assert!(batched.allclose(&separate, 1e-6, 1e-6, false));
    }
}
