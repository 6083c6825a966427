//! KSampler and SamplerCustomAdvanced through the real server on a toy network, against
//! ComfyUI's pipeline rebuilt in Python over PyPI k-diffusion (tests/python/ksampler_reference.py).

mod common;
mod reference;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn reference(cases: &Value) -> Vec<Vec<f64>> {
    let out = reference::run("ksampler_reference.py", &[], cases.to_string().as_bytes());
    serde_json::from_slice(&out).unwrap()
}

fn read_latent(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("latent_tensor").unwrap();
    let values = t
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    (t.shape().to_vec(), values)
}

/// Waits for prompt `id`, reads the latent it saved under `prefix`, and checks it against the
/// reference within 1e-5 (relative, absolute below 1), naming `label` when it is not.
fn assert_saved_latent(
    s: &Server,
    id: &str,
    prefix: &str,
    shape: &[usize],
    expected: &[f64],
    label: &str,
) {
    let entry = s.wait_history(id, T);
    assert_eq!(
        entry["status"]["status_str"], "success",
        "{}",
        entry["status"]
    );
    let (got_shape, got) = read_latent(&s.output_dir().join(format!("{prefix}_00001_.latent")));
    assert_eq!(got_shape, shape);
    let err = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(err < 1e-5, "{label}: relative error {err}");
}

#[test]
fn ksampler_matches_comfyui_pipeline() {
    let cases = json!([
        {"prediction": "eps", "shift": 3.0, "seed": 42, "steps": 6, "cfg": 3.5, "sampler": "euler_ancestral", "scheduler": "karras", "denoise": 1.0, "positive": 0.7, "negative": -0.2, "shape": [1, 4, 8, 8]},
        {"prediction": "flow", "shift": 3.0, "seed": 7, "steps": 5, "cfg": 1.0, "sampler": "dpmpp_2m", "scheduler": "simple", "denoise": 1.0, "positive": 0.3, "negative": 0.0, "shape": [1, 4, 8, 8]},
        {"prediction": "eps", "shift": 3.0, "seed": 18446744073709551615u64, "steps": 4, "cfg": 6.0, "sampler": "dpm_2", "scheduler": "normal", "denoise": 0.6, "positive": 1.0, "negative": 0.5, "shape": [1, 4, 8, 8]},
        {"prediction": "v", "shift": 3.0, "seed": 3, "steps": 5, "cfg": 2.0, "sampler": "lms", "scheduler": "sgm_uniform", "denoise": 1.0, "positive": -0.4, "negative": 0.1, "shape": [1, 4, 8, 8]},
        {"prediction": "flow", "shift": 8.0, "seed": 11, "steps": 4, "cfg": 5.0, "sampler": "dpmpp_2s_ancestral", "scheduler": "beta", "denoise": 1.0, "positive": 0.2, "negative": 0.9, "shape": [1, 4, 8, 8]},
        // The Wan templates' choice: uni_pc / simple on a shifted flow model.
        {"prediction": "flow", "shift": 8.0, "seed": 12345, "steps": 8, "cfg": 6.0, "sampler": "uni_pc", "scheduler": "simple", "denoise": 1.0, "positive": 0.5, "negative": -0.3, "shape": [1, 4, 8, 8]},
        {"prediction": "eps", "shift": 3.0, "seed": 99, "steps": 7, "cfg": 4.0, "sampler": "uni_pc_bh2", "scheduler": "karras", "denoise": 1.0, "positive": 0.1, "negative": 0.4, "shape": [1, 4, 8, 8]},
    ]);
    let expected = reference(&cases);
    let s = Server::start(&[]);
    let mut ws = s.ws("c");
    for (n, case) in cases.as_array().unwrap().iter().enumerate() {
        let prompt = json!({
            "1": {"class_type": "TestToyModel", "inputs": {"prediction": case["prediction"], "shift": case["shift"]}},
            "2": {"class_type": "TestToyConditioning", "inputs": {"value": case["positive"]}},
            "3": {"class_type": "TestToyConditioning", "inputs": {"value": case["negative"]}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": case["seed"], "steps": case["steps"], "cfg": case["cfg"],
                  "sampler_name": case["sampler"], "scheduler": case["scheduler"], "positive": ["2", 0], "negative": ["3", 0],
                  "latent_image": ["4", 0], "denoise": case["denoise"]}},
            "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": format!("latents/case{n}")}},
        });
        let id = s.queue(&prompt, Some("c"));
        let msgs = ws.until_done(&id, T);
        let progress: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "progress").collect();
        assert_eq!(
            progress.len() as u64,
            progress.last().unwrap()["data"]["max"].as_u64().unwrap(),
            "one progress message per step"
        );
        let label = format!("case {n} ({}/{})", case["sampler"], case["scheduler"]);
        assert_saved_latent(
            &s,
            &id,
            &format!("latents/case{n}"),
            &[1, 4, 8, 8],
            &expected[n],
            &label,
        );
    }
}

#[test]
fn custom_sampling_nodes_compose() {
    let s = Server::start(&[]);
    let mut prompt = json!({
        "1": {"class_type": "TestToyModel", "inputs": {"prediction": "eps", "shift": 3.0}},
        "2": {"class_type": "TestToyConditioning", "inputs": {"value": 0.5}},
        "3": {"class_type": "TestToyConditioning", "inputs": {"value": -0.5}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
        "5": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "6": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 4.0}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "exponential", "steps": 8, "denoise": 1.0}},
        "9": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["8", 0], "step": 3}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["9", 0], "latent_image": ["4", 0]}},
        "11": {"class_type": "DisableNoise", "inputs": {}},
        "12": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["9", 1], "latent_image": ["10", 0]}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "latents/split"}},
        "14": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 5, "steps": 8, "cfg": 4.0, "sampler_name": "euler", "scheduler": "exponential", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "15": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": "latents/whole"}},
        // DualCFGGuider with both conditionings equal is CFG at cfg_cond2_negative, in either style.
        "16": {"class_type": "DualCFGGuider", "inputs": {"model": ["1", 0], "cond1": ["2", 0], "cond2": ["2", 0], "negative": ["3", 0], "cfg_conds": 9.0, "cfg_cond2_negative": 4.0, "style": "nested"}},
        "17": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["16", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}},
        "18": {"class_type": "SaveLatent", "inputs": {"samples": ["17", 0], "filename_prefix": "latents/dual"}},
    });
    let more = json!({
        // CFGOverride: over the whole range the guider's cfg 9 becomes 4; of two overlapping
        // overrides the one nearest the sampler wins; over part of the range it is mixed.
        "19": {"class_type": "CFGOverride", "inputs": {"model": ["1", 0], "cfg": 4.0, "start_percent": 0.0, "end_percent": 1.0}},
        "20": {"class_type": "CFGGuider", "inputs": {"model": ["19", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 9.0}},
        "21": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["20", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}},
        "22": {"class_type": "SaveLatent", "inputs": {"samples": ["21", 0], "filename_prefix": "latents/override"}},
        "23": {"class_type": "CFGOverride", "inputs": {"model": ["1", 0], "cfg": 7.0, "start_percent": 0.0, "end_percent": 1.0}},
        "24": {"class_type": "CFGOverride", "inputs": {"model": ["23", 0], "cfg": 4.0, "start_percent": 0.0, "end_percent": 1.0}},
        "25": {"class_type": "CFGGuider", "inputs": {"model": ["24", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 9.0}},
        "26": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["25", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}},
        "27": {"class_type": "SaveLatent", "inputs": {"samples": ["26", 0], "filename_prefix": "latents/override_nested"}},
        "28": {"class_type": "CFGOverride", "inputs": {"model": ["1", 0], "cfg": 1.0, "start_percent": 0.5, "end_percent": 1.0}},
        "29": {"class_type": "CFGGuider", "inputs": {"model": ["28", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 4.0}},
        "30": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["29", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}},
        "31": {"class_type": "SaveLatent", "inputs": {"samples": ["30", 0], "filename_prefix": "latents/override_half"}},
        // AddNoise on the empty latent: the seed's noise times |2.5 − 0.5|; then with no noise
        // the latent is unchanged.
        "32": {"class_type": "ManualSigmas", "inputs": {"sigmas": "2.5, 1.0, 0.5"}},
        "33": {"class_type": "AddNoise", "inputs": {"model": ["1", 0], "noise": ["5", 0], "sigmas": ["32", 0], "latent_image": ["4", 0]}},
        "34": {"class_type": "SaveLatent", "inputs": {"samples": ["33", 0], "filename_prefix": "latents/added"}},
        "35": {"class_type": "AddNoise", "inputs": {"model": ["1", 0], "noise": ["11", 0], "sigmas": ["32", 0], "latent_image": ["33", 0]}},
        "36": {"class_type": "SaveLatent", "inputs": {"samples": ["35", 0], "filename_prefix": "latents/added_again"}},
    });
    for (id, node) in more.as_object().unwrap() {
        prompt[id] = node.clone();
    }
    let id = s.queue(&prompt, None);
    let entry = s.wait_history(&id, T);
    assert_eq!(
        entry["status"]["status_str"], "success",
        "{}",
        entry["status"]
    );
    // Sampling in two halves with SplitSigmas lands where one KSampler run does.
    let (shape, split) = read_latent(&s.output_dir().join("latents/split_00001_.latent"));
    let (_, whole) = read_latent(&s.output_dir().join("latents/whole_00001_.latent"));
    assert_eq!(shape, [2, 4, 4, 4]);
    let err = split
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-5, "split sampling differs by {err}");
    let (_, dual) = read_latent(&s.output_dir().join("latents/dual_00001_.latent"));
    let err = dual
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        err < 1e-5,
        "DualCFGGuider with equal conditionings differs from CFG by {err}"
    );
    let latent = |prefix: &str| {
        read_latent(
            &s.output_dir()
                .join(format!("latents/{prefix}_00001_.latent")),
        )
        .1
    };
    assert_eq!(
        latent("override"),
        whole,
        "CFGOverride to the KSampler's cfg"
    );
    assert_eq!(
        latent("override_nested"),
        whole,
        "the nearest override wins"
    );
    let half = latent("override_half");
    assert!(half != whole && half != latent("override"));
    let noise = videosdgx::sampling::noise::initial_noise(5, &[2, 4, 4, 4], tch::Kind::Float, None);
    let expected: Vec<f64> = Vec::<f32>::try_from(&(noise * 2.0).flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(latent("added"), expected);
    assert_eq!(latent("added_again"), expected);

    // Sampler and scheduler names in /object_info are ComfyUI's, in ComfyUI's order.
    let info = s.get("/object_info/KSampler").json();
    assert_eq!(
        info["KSampler"]["input"]["required"]["scheduler"][0],
        json!([
            "simple",
            "sgm_uniform",
            "karras",
            "exponential",
            "ddim_uniform",
            "beta",
            "normal",
            "linear_quadratic",
            "kl_optimal"
        ])
    );
    let samplers = &info["KSampler"]["input"]["required"]["sampler_name"][0];
    let upstream = "euler euler_cfg_pp euler_ancestral euler_ancestral_cfg_pp heun heunpp2 \
        exp_heun_2_x0 exp_heun_2_x0_sde dpm_2 dpm_2_ancestral lms dpm_fast dpm_adaptive \
        dpmpp_2s_ancestral dpmpp_2s_ancestral_cfg_pp dpmpp_sde dpmpp_sde_gpu dpmpp_2m \
        dpmpp_2m_cfg_pp dpmpp_2m_sde dpmpp_2m_sde_gpu dpmpp_2m_sde_heun dpmpp_2m_sde_heun_gpu \
        dpmpp_3m_sde dpmpp_3m_sde_gpu ddpm lcm ipndm ipndm_v deis res_multistep \
        res_multistep_cfg_pp res_multistep_ancestral res_multistep_ancestral_cfg_pp \
        gradient_estimation gradient_estimation_cfg_pp er_sde seeds_2 seeds_3 sa_solver \
        sa_solver_pece ddim uni_pc uni_pc_bh2";
    assert_eq!(
        samplers,
        &json!(upstream.split_whitespace().collect::<Vec<_>>())
    );
}

#[test]
fn latent_previews_are_framed_per_client() {
    let s = Server::start(&["--preview-method", "latent2rgb"]);
    let mut modern = s.ws("modern");
    modern.next(T);
    modern.send(r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#);
    assert_eq!(modern.next(T).unwrap()["type"], "feature_flags");
    let mut legacy = s.ws("legacy");
    legacy.next(T);
    let prompt = |seed: u64| {
        json!({
            "1": {"class_type": "TestToyModel", "inputs": {"prediction": "eps", "shift": 3.0}},
            "2": {"class_type": "TestToyConditioning", "inputs": {"value": 0.5}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
            "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
                  "scheduler": "normal", "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["4", 0], "denoise": 1.0}},
            "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "p"}},
        })
    };
    // The modern client's own prompt: type 4 frames with metadata, one per step.
    let id = s.queue(&prompt(1), Some("modern"));
    let (_, frames) = modern.until_done_with_binary(&id, T);
    assert_eq!(frames.len(), 3);
    for f in &frames {
        assert_eq!(&f[..4], &[0, 0, 0, 4]);
        let len = u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize;
        let meta: Value = serde_json::from_slice(&f[8..8 + len]).unwrap();
        assert_eq!(meta["node_id"], "5");
        assert_eq!(meta["prompt_id"], id.as_str());
        assert_eq!(meta["image_type"], "image/jpeg");
        let img = image::load_from_memory(&f[8 + len..]).unwrap();
        assert_eq!((img.width(), img.height()), (8, 6));
    }
    assert!(
        legacy.binary_frames(Duration::from_millis(300)).is_empty(),
        "targeted previews reach only their client"
    );

    // A prompt with no client: previews broadcast as type 1 to everyone.
    let id = s.queue(&prompt(2), None);
    s.wait_history(&id, T);
    for ws in [&mut modern, &mut legacy] {
        let frames = ws.binary_frames(Duration::from_millis(500));
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f[..8] == [0, 0, 0, 1, 0, 0, 0, 1]));
        image::load_from_memory(&frames[0][8..]).unwrap();
    }
}

/// Writes the box-and-gradient mask the reference rebuilds (`gradient_mask`) as a PNG's red channel.
fn write_region_mask(input_dir: &std::path::Path) {
    std::fs::create_dir_all(input_dir).unwrap();
    let img = image::RgbImage::from_fn(128, 128, |x, y| {
        let inside = (32..96).contains(&x) && (40..104).contains(&y);
        let red = if inside { (x + 3 * y) % 200 + 30 } else { 0 };
        image::Rgb([red as u8, 0, 0])
    });
    img.save(input_dir.join("regions.png")).unwrap();
}

/// One regional entry of a test case as a chain of conditioning nodes; returns the last one.
fn region_nodes(prompt: &mut serde_json::Map<String, Value>, id: &str, entry: &Value) -> String {
    let mut last = format!("{id}v");
    prompt.insert(
        last.clone(),
        json!({"class_type": "TestToyConditioning", "inputs": {"value": entry["value"]}}),
    );
    if entry.get("mask").is_some() {
        prompt.insert(
            format!("{id}m"),
            json!({"class_type": "LoadImageMask", "inputs": {"image": "regions.png", "channel": "red"}}),
        );
    }
    let mut step = |class: &str, mut inputs: Value| {
        inputs["conditioning"] = json!([last, 0]);
        let next = format!("{last}+");
        prompt.insert(next.clone(), json!({"class_type": class, "inputs": inputs}));
        last = next;
    };
    if let Some(a) = entry.get("area") {
        // [h, w, y, x] in cells; the node takes pixels.
        let px = |k: usize| a[k].as_i64().unwrap() * 8;
        step(
            "ConditioningSetArea",
            json!({"width": px(1), "height": px(0), "x": px(3), "y": px(2), "strength": entry["strength"]}),
        );
    }
    if let Some(a) = entry.get("percentage") {
        step(
            "ConditioningSetAreaPercentage",
            json!({"width": a[1], "height": a[0], "x": a[3], "y": a[2], "strength": entry["strength"]}),
        );
    }
    if entry.get("mask").is_some() {
        let set_area = if entry["bounds"] == true {
            "mask bounds"
        } else {
            "default"
        };
        step(
            "ConditioningSetMask",
            json!({"mask": [format!("{id}m"), 0], "strength": entry["mask_strength"], "set_cond_area": set_area}),
        );
    }
    if entry.get("area").is_none() && entry.get("percentage").is_none() {
        if let Some(strength) = entry.get("strength") {
            step("ConditioningSetAreaStrength", json!({"strength": strength}));
        }
    }
    last
}

#[test]
fn regional_conditioning_matches_comfyui() {
    let cases = json!([
        {"prediction": "eps", "shift": 3.0, "seed": 5, "steps": 4, "cfg": 3.0, "sampler": "euler", "scheduler": "karras", "denoise": 1.0,
         "shape": [1, 4, 16, 16],
         "positive_regions": [{"value": 0.7, "area": [8, 10, 2, 4], "strength": 0.8}, {"value": 0.1}],
         "negative_regions": [{"value": -0.2}]},
        {"prediction": "eps", "shift": 3.0, "seed": 6, "steps": 4, "cfg": 4.0, "sampler": "dpmpp_2m", "scheduler": "normal", "denoise": 1.0,
         "shape": [1, 4, 16, 16],
         "positive_regions": [{"value": 0.4, "percentage": [0.25, 0.5, 0.5, 0.25], "strength": 1.2},
                              {"value": -0.3, "mask": true, "mask_strength": 0.6, "bounds": false}],
         "negative_regions": [{"value": 0.2, "strength": 0.5}, {"value": 0.5, "mask": true, "mask_strength": 1.0, "bounds": true}]},
        {"prediction": "flow", "shift": 3.0, "seed": 7, "steps": 5, "cfg": 2.5, "sampler": "euler", "scheduler": "simple", "denoise": 1.0,
         "shape": [1, 4, 16, 16],
         "positive_regions": [{"value": 0.6, "area": [16, 8, 0, 8], "strength": 1.0}, {"value": -0.1, "area": [8, 8, 8, 0], "strength": 1.5}],
         "negative_regions": [{"value": 0.0}, {"value": 0.3, "area": [16, 16, 0, 0], "strength": 1.0}]},
    ]);
    let expected = reference(&cases);
    let s = Server::start(&[]);
    write_region_mask(&s.output_dir().parent().unwrap().join("input"));
    for (n, case) in cases.as_array().unwrap().iter().enumerate() {
        let mut prompt = serde_json::Map::new();
        for (key, id) in [("positive_regions", "p"), ("negative_regions", "n")] {
            let entries = case[key].as_array().unwrap();
            let ends: Vec<String> = entries
                .iter()
                .enumerate()
                .map(|(k, entry)| region_nodes(&mut prompt, &format!("{id}{k}"), entry))
                .collect();
            let mut acc = ends[0].clone();
            for next in &ends[1..] {
                let combined = format!("{acc}&{next}");
                prompt.insert(
                    combined.clone(),
                    json!({"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [acc, 0], "conditioning_2": [next, 0]}}),
                );
                acc = combined;
            }
            prompt.insert(format!("{id}_out"), json!([acc, 0]));
        }
        let positive = prompt.remove("p_out").unwrap();
        let negative = prompt.remove("n_out").unwrap();
        prompt.insert("1".into(), json!({"class_type": "TestToyModel", "inputs": {"prediction": case["prediction"], "shift": case["shift"]}}));
        prompt.insert("4".into(), json!({"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}}));
        prompt.insert("5".into(), json!({"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": case["seed"], "steps": case["steps"], "cfg": case["cfg"],
            "sampler_name": case["sampler"], "scheduler": case["scheduler"], "positive": positive, "negative": negative,
            "latent_image": ["4", 0], "denoise": case["denoise"]}}));
        prompt.insert("6".into(), json!({"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": format!("regions/case{n}")}}));
        let id = s.queue(&Value::Object(prompt), None);
        let label = format!("regional case {n}");
        assert_saved_latent(
            &s,
            &id,
            &format!("regions/case{n}"),
            &[1, 4, 16, 16],
            &expected[n],
            &label,
        );
    }
}

/// ConditioningAverage mixes the token rows (`to · s + from · (1 − s)`) and ConditioningConcat
/// joins them: with the toy model, which reads the conditioning's mean, each samples exactly
/// what a conditioning of the mixed mean samples.
#[test]
fn conditioning_average_and_concat_mix_and_join_tokens() {
    let s = Server::start(&[]);
    let sample = |positive: Value, extra: Value, prefix: &str| {
        let mut prompt = json!({
            "1": {"class_type": "TestToyModel", "inputs": {"prediction": "eps", "shift": 3.0}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "n": {"class_type": "TestToyConditioning", "inputs": {"value": 0.0}},
            "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 3, "cfg": 2.0,
                "sampler_name": "euler", "scheduler": "normal", "positive": positive, "negative": ["n", 0],
                "latent_image": ["4", 0], "denoise": 1.0}},
            "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": format!("avg/{prefix}")}},
        });
        prompt
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.run_ok(&prompt, T);
        // The 4 × 8 × 8 float32 values end the safetensors file (1024 bytes).
        std::fs::read(s.output_dir().join(format!("avg/{prefix}_00001_.latent"))).unwrap()
    };
    let toy = |value: f64| json!({"class_type": "TestToyConditioning", "inputs": {"value": value}});
    let averaged = sample(
        json!(["avg", 0]),
        json!({"a": toy(1.0), "b": toy(-1.0), "avg": {"class_type": "ConditioningAverage",
            "inputs": {"conditioning_to": ["a", 0], "conditioning_from": ["b", 0], "conditioning_to_strength": 0.25}}}),
        "average",
    );
    let direct = sample(json!(["c", 0]), json!({"c": toy(-0.5)}), "direct");
    assert_eq!(
        averaged[averaged.len() - 1024..],
        direct[direct.len() - 1024..]
    );
    let joined = sample(
        json!(["cat", 0]),
        json!({"a": toy(1.0), "b": toy(0.0), "cat": {"class_type": "ConditioningConcat",
            "inputs": {"conditioning_to": ["a", 0], "conditioning_from": ["b", 0]}}}),
        "concat",
    );
    let half = sample(json!(["c", 0]), json!({"c": toy(0.5)}), "half");
    assert_eq!(joined[joined.len() - 1024..], half[half.len() - 1024..]);
    assert_ne!(half[half.len() - 1024..], direct[direct.len() - 1024..]);
}

/// Adds the scheduler node(s) of `spec` (nested SIGMAS inputs become their own nodes) and
/// returns the id of the outermost.
fn sigma_nodes(prompt: &mut serde_json::Map<String, Value>, id: &str, spec: &Value) -> String {
    let mut inputs = spec["inputs"].clone();
    if let Some(inner) = spec["inputs"].get("sigmas") {
        let inner_id = sigma_nodes(prompt, &format!("{id}i"), inner);
        inputs["sigmas"] = json!([inner_id, 0]);
    }
    if spec["class"] == "BetaSamplingScheduler" {
        inputs["model"] = json!(["1", 0]);
    }
    prompt.insert(
        id.into(),
        json!({"class_type": spec["class"], "inputs": inputs}),
    );
    id.into()
}

/// The Sampler* nodes' options and the scheduler nodes beyond BasicScheduler, wired through
/// SamplerCustomAdvanced, against ComfyUI's pipeline with the same sampler options and
/// schedule in the reference.
#[test]
fn sampler_and_scheduler_nodes_match_comfyui_pipeline() {
    let ays = |steps: u64| json!({"class": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": steps, "denoise": 1.0}});
    let cases = json!([
        {"node": {"class": "SamplerEulerAncestral", "inputs": {"eta": 0.5, "s_noise": 0.8}}, "tuned": "euler_ancestral",
         "sigmas_node": ays(10)},
        {"node": {"class": "SamplerLMS", "inputs": {"order": 2}}, "tuned": "lms/order2",
         "sigmas_node": {"class": "PolyexponentialScheduler", "inputs": {"steps": 9, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 1.7}}},
        {"node": {"class": "SamplerSEEDS2", "inputs": {"solver_type": "phi_2", "eta": 0.5, "s_noise": 0.8, "r": 0.4}}, "tuned": "seeds_2/phi_2",
         "sigmas_node": {"class": "VPScheduler", "inputs": {"steps": 8, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}}},
        {"node": {"class": "SamplerER_SDE", "inputs": {"solver_type": "ER-SDE", "max_stage": 2, "eta": 0.5, "s_noise": 0.9}}, "tuned": "er_sde/er",
         "sigmas_node": {"class": "LaplaceScheduler", "inputs": {"steps": 10, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.3, "beta": 0.7}}},
        {"node": {"class": "SamplerSASolver", "inputs": {"eta": 0.7, "sde_start_percent": 0.1, "sde_end_percent": 0.7, "s_noise": 0.9,
                  "predictor_order": 2, "corrector_order": 2, "use_pece": false, "simple_order_2": true}}, "tuned": "sa_solver/simple",
         "sigmas_node": {"class": "ExtendIntermediateSigmas", "inputs": {"sigmas": ays(6), "steps": 3, "start_at_sigma": -1.0, "end_at_sigma": 1.0, "spacing": "cosine"}}},
        {"node": {"class": "SamplerLCM", "inputs": {"s_noise": 0.5, "s_noise_end": 1.5, "noise_clip_std": 1.0}}, "tuned": "lcm",
         "sigmas_node": {"class": "SetFirstSigma", "inputs": {"sigmas": {"class": "BetaSamplingScheduler", "inputs": {"steps": 12, "alpha": 0.4, "beta": 1.7}}, "sigma": 10.0}}},
        {"node": {"class": "SamplerDPMPP_2S_Ancestral", "inputs": {"eta": 0.6, "s_noise": 1.2}}, "tuned": "dpmpp_2s_ancestral/flow", "prediction": "flow",
         "sigmas_node": {"class": "OptimalStepsScheduler", "inputs": {"model_type": "Wan", "steps": 12, "denoise": 1.0}}},
    ]);
    let mut cases = cases.as_array().unwrap().clone();
    for (n, case) in cases.iter_mut().enumerate() {
        let extra = json!({"prediction": case.get("prediction").cloned().unwrap_or(json!("eps")), "shift": 3.0,
                           "seed": 100 + n, "cfg": 3.0, "positive": 0.6, "negative": -0.1, "shape": [1, 4, 8, 8]});
        for (k, v) in extra.as_object().unwrap() {
            case[k] = v.clone();
        }
    }
    let expected = reference(&json!(cases));
    let s = Server::start(&[]);
    for (n, case) in cases.iter().enumerate() {
        let mut prompt = json!({
            "1": {"class_type": "TestToyModel", "inputs": {"prediction": case["prediction"], "shift": 3.0}},
            "2": {"class_type": "TestToyConditioning", "inputs": {"value": 0.6}},
            "3": {"class_type": "TestToyConditioning", "inputs": {"value": -0.1}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {"class_type": "RandomNoise", "inputs": {"noise_seed": case["seed"]}},
            "6": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 3.0}},
            "9": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["5", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}},
            "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": format!("latents/tuned{n}")}},
        });
        let map = prompt.as_object_mut().unwrap();
        let mut sampler_inputs = case["node"]["inputs"].clone();
        if case["node"]["class"] == "SamplerSASolver" {
            sampler_inputs["model"] = json!(["1", 0]);
        }
        map.insert(
            "7".into(),
            json!({"class_type": case["node"]["class"], "inputs": sampler_inputs}),
        );
        sigma_nodes(map, "8", &case["sigmas_node"]);
        let id = s.queue(&prompt, None);
        let label = format!("case {n} ({})", case["tuned"]);
        assert_saved_latent(
            &s,
            &id,
            &format!("latents/tuned{n}"),
            &[1, 4, 8, 8],
            &expected[n],
            &label,
        );
    }
}
