//! The Wan DiT against PyPI diffusers' WanTransformer3DModel and WanVACETransformer3DModel at
//! tiny configs (weights converted to ComfyUI's key names by tests/python/wan_reference.py),
//! float32 on the CPU: detection and config from the file's shapes, then the forward pass within
//! 1e-4. Fun Control's reference image, Fun Camera's control adapter, Wan 2.2 S2V, SCAIL and
//! the other variants diffusers does not model are checked against ComfyUI's paths written out
//! over diffusers' modules.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod reference;

use tch::{Device, Kind, Tensor};
use videosdgx::models::rope::RopeOptions;
use videosdgx::models::wan::dit::{CausalCache, Conditions, WanConfig, WanModel};
use videosdgx::models::wan::humo::HumoInputs;
use videosdgx::models::wan::infinite_talk::{AudioProjection, TalkConfig, TalkInputs, TalkPatch};
use videosdgx::models::wan::s2v::SoundInputs;
use videosdgx::models::wan::scail::ScailInputs;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::detect::detect;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| reference::shared_fixtures("wan_reference.py"))
}

/// The forward of `variant`'s weights on the inputs of `{inputs}_io.safetensors` against
/// diffusers' output; `placement` as the model manager would give it.
fn check(variant: &str, inputs: &str, architecture: &str, placement: Placement) -> WanModel {
    let _guard = tch::no_grad_guard();
    let file = SafetensorsFile::open(&fixtures().join(format!("{variant}.safetensors"))).unwrap();
    let detected = detect(&file).unwrap();
    assert_eq!(detected.len(), 1);
    assert_eq!(detected[0].architecture, architecture);
    let config = WanConfig::from_detected(&detected[0].config).unwrap();
    let mut weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    weights.placement = placement;
    let model = WanModel::load(&weights, config).unwrap();

    let io = SafetensorsFile::open(&fixtures().join(format!("{inputs}_io.safetensors"))).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let optional = |name: &str| io.contains(name).then(|| get(name));
    let (clip, reference) = (optional("clip"), optional("reference"));
    let (vace, camera) = (optional("vace_context"), optional("camera"));
    let strengths: Option<Vec<f64>> =
        optional("vace_strength").map(|s| Vec::try_from(s.to_kind(Kind::Double)).unwrap());
    let (audio, sound_reference) = (optional("audio"), optional("sound_reference"));
    let (motion, control) = (optional("motion"), optional("control"));
    let context_latents: Vec<Tensor> = (0..)
        .map_while(|i| optional(&format!("context_latent_{i}")))
        .collect();
    let axes = |name: &str| {
        optional(name).map(|t| {
            <[f64; 3]>::try_from(Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()).unwrap()
        })
    };
    let rope = match (axes("rope_scale"), axes("rope_shift")) {
        (Some(scale), Some(shift)) => RopeOptions { scale, shift },
        _ => RopeOptions::default(),
    };
    let (humo_audio, humo_reference) = (optional("humo_audio"), optional("humo_reference"));
    let (scail_reference, scail_pose) = (optional("scail_reference"), optional("scail_pose"));
    let scail_masks = (
        optional("scail_reference_mask"),
        optional("scail_pose_mask"),
    );
    let conditions = Conditions {
        clip: clip.as_ref(),
        vace: vace.as_ref().zip(strengths.as_deref()),
        reference: reference.as_ref(),
        camera: camera.as_ref(),
        sound: SoundInputs {
            audio: audio.as_ref(),
            reference: sound_reference.as_ref(),
            motion: motion.as_ref(),
            control: control.as_ref(),
        },
        context_latents: &context_latents,
        rope,
        humo: HumoInputs {
            audio: humo_audio.as_ref(),
            reference: humo_reference.as_ref(),
        },
        scail: ScailInputs {
            reference: scail_reference.as_ref(),
            pose: scail_pose.as_ref(),
            reference_mask: scail_masks.0.as_ref(),
            pose_mask: scail_masks.1.as_ref(),
            replacement: io.contains("scail_replacement"),
        },
        ..Conditions::default()
    };
    let out = model
        .forward_with(&get("x"), &get("timestep"), &get("context"), &conditions)
        .unwrap();
    let expected = get("output");
    assert_eq!(out.size(), expected.size());
    let err = (&out - &expected).abs().max().double_value(&[]);
    let scale = expected.abs().max().double_value(&[]);
    assert!(
        err <= 1e-4,
        "{inputs}: max abs error {err} (outputs up to {scale})"
    );
    model
}

const RESIDENT: Placement = Placement {
    device: Device::Cpu,
    resident_bytes: u64::MAX,
};

#[test]
fn wan21_t2v_matches_diffusers() {
    check("t2v", "t2v", "WAN21_T2V", RESIDENT);
}

/// Cond and uncond on one latent with zero-padded prompts, as KSampler batches them: the
/// shared stream until block 0's cross-attention runs once, and each prompt's padding is one
/// repeated key; diffusers computes both in full.
#[test]
fn wan21_t2v_cfg_batch_with_padded_prompts_matches_diffusers() {
    check("t2v", "t2v_cfg", "WAN21_T2V", RESIDENT);
}

/// Its prompt is padded too (200 of 512 tokens), beside the CLIP-vision tokens.
#[test]
fn wan21_i2v_with_clip_vision_tokens_matches_diffusers() {
    check("i2v", "i2v", "WAN21_I2V", RESIDENT);
}

#[test]
fn wan22_ti2v_with_per_frame_timesteps_matches_diffusers() {
    check("ti2v", "ti2v", "WAN22_T2V", RESIDENT);
}

/// The first and last frames' CLIP tokens side by side, with the model's learned positions.
#[test]
fn wan21_flf2v_with_two_images_clip_tokens_matches_diffusers() {
    check("flf2v", "flf2v", "WAN21_I2V", RESIDENT);
}

/// One control at strength 0.7 through VACE blocks after main blocks 0 and 2 of 4.
#[test]
fn wan21_vace_control_matches_diffusers() {
    check("vace", "vace", "WAN21_Vace", RESIDENT);
}

/// The same with room for one block: the VACE blocks stream in their own order beside the
/// main ones.
#[test]
fn wan21_vace_with_streamed_blocks_matches_diffusers() {
    let model = check("vace", "vace", "WAN21_Vace", budget("vace", 1));
    assert_eq!((model.resident_blocks(), model.config.num_layers), (1, 4));
}

/// The reference latent's `ref_conv` tokens go in front as frame 0 and are cut off again.
#[test]
fn wan22_fun_control_reference_image_matches_comfyui() {
    check("ref", "ref", "WAN21_T2V", RESIDENT);
}

/// Fun Camera (Wan 2.1): the camera adapter's tokens join the patch embedding of an I2V model.
#[test]
fn wan21_fun_camera_adapter_matches_comfyui() {
    check("camera", "camera", "WAN21_Camera", RESIDENT);
}

/// SCAIL: two reference frames in front of the video, the half-size pose video after it,
/// stretched over the video's extent beside it.
#[test]
fn wan21_scail_reference_and_pose_streams_match_comfyui() {
    check("scail", "scail", "WAN21_SCAIL", RESIDENT);
}

/// SCAIL-2's identity masks added to the reference, video and pose tokens, in animation mode
/// and in replacement mode (the references at row 120, the video from the last reference's
/// time on).
#[test]
fn wan21_scail2_identity_masks_in_both_modes_match_comfyui() {
    check("scail2", "scail2", "WAN21_SCAIL2", RESIDENT);
    check("scail2", "scail2_replace", "WAN21_SCAIL2", RESIDENT);
}

/// `variant`'s weights, float32 on the CPU, with its detected config changed by `adjust`.
/// Wan 2.2 S2V: audio tokens injected after block 0, a control video, a reference image and
/// FramePack motion frames (fewer than 19, padded) appended with their markers and positions,
/// the timestep rows spread over the tokens as ComfyUI's `repeat_e` does.
#[test]
fn wan22_s2v_audio_reference_motion_and_control_match_comfyui() {
    check("s2v", "s2v", "WAN22_S2V", RESIDENT);
}

/// Bernini: a two-frame in-context latent of the video's size and a one-frame latent of
/// another aspect after the video's tokens, each rotated on its own grid and by its index.
#[test]
fn wan_bernini_in_context_latents_match_comfyui() {
    check("bernini", "bernini", "WAN21_T2V", RESIDENT);
}

/// HuMo: Whisper features projected into 16 audio tokens per latent frame (zero frames for the
/// reference), attended per frame after each block's cross-attention; the reference latent's
/// tokens after the video's, rotated from the video's end in time.
#[test]
fn wan_humo_audio_and_reference_match_comfyui() {
    check("humo", "humo", "WAN21_HuMo", RESIDENT);
}

/// Causal Forcing: frame 0 at a noise level (its keys rolled back after), frame 0 clean (kept),
/// then frame 1 attending to the cached frame 0 and itself, rotated at time 1.
#[test]
fn wan_causal_cache_matches_comfyui() {
    let _guard = tch::no_grad_guard();
    let model = load("causal", |c| c);
    let io = SafetensorsFile::open(&fixtures().join("causal_io.safetensors")).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let cache = std::sync::Mutex::new(CausalCache::default());
    cache.lock().unwrap().begin();
    let tokens = 3 * 4;
    for (name, start, t, rollback) in [
        ("noisy", 0, 700.0f32, true),
        ("clean", 0, 0.0, false),
        ("next", 1, 500.0, false),
    ] {
        cache.lock().unwrap().start_frame = start;
        let conditions = Conditions {
            causal: Some(&cache),
            ..Conditions::default()
        };
        let out = model
            .forward_with(
                &get(&format!("{name}_x")),
                &Tensor::from_slice(&[t]),
                &get("context"),
                &conditions,
            )
            .unwrap();
        let err = (&out - get(&format!("{name}_output")))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err <= 1e-4, "{name}: max abs error {err}");
        if rollback {
            cache.lock().unwrap().end -= tokens;
        }
    }
    // Without the cache frame 1 sees only itself: another output.
    let alone = model
        .forward(
            &get("next_x"),
            &Tensor::from_slice(&[500.0f32]),
            &get("context"),
            None,
        )
        .unwrap();
    let moved = (&alone - get("next_output")).abs().max().double_value(&[]);
    assert!(moved > 1e-2, "the cache moved the output by {moved} only");
}

/// ScaleROPE: ChronoEdit's time spacing of 7 with shifted, respaced rows and columns, on the
/// video's grid and an in-context latent's.
#[test]
fn wan_scaled_rope_matches_comfyui() {
    check("bernini", "rope", "WAN21_T2V", RESIDENT);
}

fn load(variant: &str, adjust: impl FnOnce(WanConfig) -> WanConfig) -> WanModel {
    let file = SafetensorsFile::open(&fixtures().join(format!("{variant}.safetensors"))).unwrap();
    let config = WanConfig::from_detected(&detect(&file).unwrap()[0].config).unwrap();
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    WanModel::load(&weights, adjust(config)).unwrap()
}

/// Room for `blocks` of `variant`'s main blocks in float32.
fn budget(variant: &str, blocks: usize) -> Placement {
    let file = SafetensorsFile::open(&fixtures().join(format!("{variant}.safetensors"))).unwrap();
    let block_bytes: usize = file
        .names()
        .filter(|n| n.starts_with("blocks.0."))
        .map(|n| file.entry(n).unwrap().shape.iter().product::<usize>() * 4)
        .sum();
    Placement {
        device: Device::Cpu,
        resident_bytes: (block_bytes * blocks) as u64,
    }
}

/// `--lowvram` with room for one block: the others are kept on the host and streamed for each
/// use (on the CPU the copy is a no-op; the GPU bench checks real copies give equal outputs).
#[test]
fn wan21_i2v_with_streamed_blocks_matches_diffusers() {
    let model = check("i2v", "i2v", "WAN21_I2V", budget("i2v", 1));
    assert_eq!((model.resident_blocks(), model.config.num_layers), (1, 2));
}

#[test]
fn odd_latent_sizes_are_padded_and_cut_back() {
    let _guard = tch::no_grad_guard();
    let model = load("t2v", |c| c);
    let x = Tensor::randn([1, 16, 2, 5, 7], (Kind::Float, Device::Cpu));
    let context = Tensor::randn([1, 4, 32], (Kind::Float, Device::Cpu));
    let out = model
        .forward(&x, &Tensor::from_slice(&[500.0f32]), &context, None)
        .unwrap();
    assert_eq!(out.size(), [1, 16, 2, 5, 7]);
    assert!(bool::try_from(out.isfinite().all()).unwrap());
}

/// SkipLayerGuidanceDiT's skipped block passes its input through, as ComfyUI's `dit` patch
/// does: skipping the last of two blocks computes what the first block alone computes.
#[test]
fn a_skipped_block_passes_its_input_through() {
    let _guard = tch::no_grad_guard();
    let both = load("t2v", |c| c);
    let first = load("t2v", |c| WanConfig { num_layers: 1, ..c });
    let x = Tensor::randn([2, 16, 2, 4, 4], (Kind::Float, Device::Cpu));
    let context = Tensor::randn([2, 5, 32], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[500.0f32, 500.0]);
    let skipped = both
        .forward_with(
            &x,
            &t,
            &context,
            &Conditions {
                skip_blocks: &[1],
                ..Conditions::default()
            },
        )
        .unwrap();
    let expected = first.forward(&x, &t, &context, None).unwrap();
    assert!(skipped.equal(&expected));
    let full = both.forward(&x, &t, &context, None).unwrap();
    assert!(!full.equal(&expected), "skipping changed nothing");
}

/// As in ComfyUI, a model without `ref_conv` ignores a reference latent (Wan22FunControlToVideo's
/// reference image fed to a model that takes none).
#[test]
fn a_reference_latent_changes_nothing_without_ref_conv() {
    let _guard = tch::no_grad_guard();
    let model = load("t2v", |c| c);
    let x = Tensor::randn([1, 16, 2, 4, 4], (Kind::Float, Device::Cpu));
    let context = Tensor::randn([1, 5, 32], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[500.0f32]);
    let reference = Tensor::randn([1, 16, 4, 4], (Kind::Float, Device::Cpu));
    let with = Conditions {
        reference: Some(&reference),
        ..Conditions::default()
    };
    let out = model.forward_with(&x, &t, &context, &with).unwrap();
    assert!(out.equal(&model.forward(&x, &t, &context, None).unwrap()));
}

/// InfiniteTalk on an I2V DiT without CLIP tokens, against `model_multitalk.py` written out and
/// hooked into diffusers' blocks: the audio projection of `case`'s speakers, then the forward
/// with the patch; returns the model, the patch, the inputs and the audio tokens.
fn talk_case(case: &str) -> (WanModel, TalkPatch, SafetensorsFile, Tensor) {
    let _guard = tch::no_grad_guard();
    let model = load("talk", |c| c);
    let file = SafetensorsFile::open(&fixtures().join("talk_patch.safetensors")).unwrap();
    let config = TalkConfig::from_entries(file.entries()).unwrap();
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let projection = AudioProjection::load(&weights, config).unwrap();
    let patch = TalkPatch::load(&weights, &config).unwrap();

    let io = SafetensorsFile::open(&fixtures().join(format!("{case}_io.safetensors"))).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let speakers: Vec<Tensor> = (0..2)
        .map(|j| format!("speaker{j}"))
        .filter(|name| io.contains(name))
        .map(|name| get(&name))
        .collect();
    let start = get("start").int64_value(&[0]);
    let frames = get("x").size()[2];
    let audio = projection
        .project(&speakers, start, start + 4 * (frames - 1) + 1)
        .unwrap();
    let expected_audio = get("audio");
    assert_eq!(audio.size(), expected_audio.size());
    let err = (&audio - &expected_audio).abs().max().double_value(&[]);
    assert!(err <= 1e-5, "{case}: audio tokens off by {err}");

    let masks = io.contains("masks").then(|| get("masks"));
    let out = talk_forward(&model, &patch, &io, &get("context"), &audio, masks.as_ref());
    let expected = get("output");
    let err = (&out - &expected).abs().max().double_value(&[]);
    assert!(err <= 1e-4, "{case}: max abs error {err}");
    // The patch, and with two speakers their rotations, move the output well past that.
    let moved = |other: &Tensor| (other - &expected).abs().max().double_value(&[]);
    let plain = model.forward_with(
        &get("x"),
        &get("timestep"),
        &get("context"),
        &Conditions::default(),
    );
    let without_patch = moved(&plain.unwrap());
    let without_rotations = masks.as_ref().map(|_| {
        moved(&talk_forward(
            &model,
            &patch,
            &io,
            &get("context"),
            &audio,
            None,
        ))
    });
    assert!(without_patch > 0.1 && without_rotations.is_none_or(|d| d > 1e-2));
    (model, patch, io, audio)
}

fn talk_forward(
    model: &WanModel,
    patch: &TalkPatch,
    io: &SafetensorsFile,
    context: &Tensor,
    audio: &Tensor,
    masks: Option<&Tensor>,
) -> Tensor {
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let batch = context.size()[0];
    let conditions = Conditions {
        talk: Some(TalkInputs {
            blocks: &patch.blocks,
            audio,
            scale: get("scale").double_value(&[0]),
            speaker_masks: masks,
        }),
        ..Conditions::default()
    };
    let x = get("x").repeat([batch, 1, 1, 1, 1]);
    let t = get("timestep").repeat([batch]);
    model.forward_with(&x, &t, context, &conditions).unwrap()
}

/// One speaker whose audio ends before the clip: the windows past its end repeat its first
/// frame. Without CLIP tokens the I2V image keys read the whole text, as in ComfyUI.
#[test]
fn infinite_talk_single_speaker_matches_comfyui() {
    let _ = talk_case("talk_single");
}

/// Two speakers one after the other, each token rotated toward the speaker whose region of the
/// first frame its self-attention favours.
#[test]
fn infinite_talk_two_speakers_match_comfyui() {
    let _ = talk_case("talk_two");
}

/// A CFG batch (cond and uncond on one latent): every item gets the audio and its own speaker
/// positions (ComfyUI's patch takes one item per call); each item equals its own call, also
/// when the shared start runs once.
#[test]
fn infinite_talk_cfg_batch_equals_separate_calls() {
    let _guard = tch::no_grad_guard();
    let (model, patch, io, audio) = talk_case("talk_two");
    let masks = io.tensor("masks", Device::Cpu).unwrap();
    let cond = io.tensor("context", Device::Cpu).unwrap();
    let uncond = Tensor::zeros_like(&cond);
    let both = Tensor::cat(&[&cond, &uncond], 0);
    let batched = talk_forward(&model, &patch, &io, &both, &audio, Some(&masks));
    for (j, context) in [cond, uncond].iter().enumerate() {
        let alone = talk_forward(&model, &patch, &io, context, &audio, Some(&masks));
        let err = (batched.get(j as i64) - alone.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err <= 1e-5, "item {j}: {err}");
    }
}

/// Wan Animate 2: the pose branch (its own prompt, CLIP vision and rotations, timestep 1) feeding
/// each block's keys and values to the video's frames, at pose strength 0.8 and reference
/// strength 1.3; with WanAnimate2Cache the second call reads the branch's block inputs back
/// (exactly by default, rounded through int8 or int4 as ComfyUI rounds them otherwise).
#[test]
fn wan_animate2_pose_branch_matches_comfyui() {
    use std::sync::Mutex;
    use videosdgx::models::wan::animate2::{CacheStorage, PoseCache, PoseInputs};
    let _guard = tch::no_grad_guard();
    let file = SafetensorsFile::open(&fixtures().join("animate2.safetensors")).unwrap();
    assert_eq!(detect(&file).unwrap()[0].architecture, "WAN_Animate2");
    let model = load("animate2", |c| c);
    assert!(model.config.animate2);
    let io = SafetensorsFile::open(&fixtures().join("animate2_io.safetensors")).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let (clip, pose, context_pose, clip_pose) = (
        get("clip"),
        get("pose"),
        get("context_pose"),
        get("clip_pose"),
    );
    let run = |cache: Option<&Mutex<PoseCache>>| {
        let conditions = Conditions {
            clip: Some(&clip),
            pose: Some(PoseInputs {
                latents: &pose,
                context: Some(&context_pose),
                clip: Some(&clip_pose),
                strength: 0.8,
                cache,
            }),
            reference_strength: Some(1.3),
            ..Conditions::default()
        };
        model
            .forward_with(&get("x"), &get("timestep"), &get("context"), &conditions)
            .unwrap()
    };
    let err = |out: &Tensor, key: &str| (out - get(key)).abs().max().double_value(&[]);
    let plain = run(None);
    assert!(err(&plain, "output") <= 1e-4, "{}", err(&plain, "output"));
    for storage in [
        CacheStorage::Default,
        CacheStorage::Int8,
        CacheStorage::Int4,
    ] {
        let cache = Mutex::new(PoseCache::new(Device::Cpu, storage));
        // The first call fills the cache and computes as without it.
        assert!(err(&run(Some(&cache)), "output") <= 1e-4);
        let second = run(Some(&cache));
        let expected = match storage {
            CacheStorage::Default => "output",
            CacheStorage::Int8 => "output_int8",
            CacheStorage::Int4 => "output_int4",
        };
        assert!(
            err(&second, expected) <= 1e-4,
            "{storage:?}: {}",
            err(&second, expected)
        );
    }
    // The int8 and int4 roundings are visible (int4's more), and the pose branch matters.
    let off = |key: &str| (get("output") - get(key)).abs().max().double_value(&[]);
    assert!(off("output_int8") > 1e-4);
    assert!(off("output_int4") > off("output_int8"));
    let without = model
        .forward_with(
            &get("x"),
            &get("timestep"),
            &get("context"),
            &Conditions {
                clip: Some(&clip),
                ..Conditions::default()
            },
        )
        .unwrap();
    assert!(err(&without, "output") > 1e-2);
}

/// Wan 2.2 Animate (`WAN22_Animate`) against diffusers' WanAnimateTransformer3DModel: the real
/// motion and face encoders on five 512×512 face frames, face blocks after DiT blocks 0 and 5,
/// and two pose latent frames added behind the reference slot. Without the faces the output
/// moves far beyond the tolerance, so the face path is what the comparison checks.
#[test]
fn wan22_animate_pose_and_faces_match_diffusers() {
    use videosdgx::models::wan::animate::AnimateInputs;
    let dir = reference::fixtures("wan_animate_reference.py");
    let _guard = tch::no_grad_guard();
    let file = SafetensorsFile::open(&dir.path().join("animate.safetensors")).unwrap();
    let detected = detect(&file).unwrap();
    assert_eq!(detected[0].architecture, "WAN22_Animate");
    let config = WanConfig::from_detected(&detected[0].config).unwrap();
    assert!(config.animate && config.i2v);
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let model = WanModel::load(&weights, config).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("animate_io.safetensors")).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let (clip, pose, faces) = (get("clip"), get("pose_latents"), get("face_pixels"));
    let run = |faces: Option<&Tensor>| {
        let conditions = Conditions {
            clip: Some(&clip),
            animate: AnimateInputs {
                pose: Some(&pose),
                faces,
            },
            ..Conditions::default()
        };
        model
            .forward_with(&get("x"), &get("timestep"), &get("context"), &conditions)
            .unwrap()
    };
    let err = |out: &Tensor, key: &str| (out - get(key)).abs().max().double_value(&[]);
    let out = run(Some(&faces));
    assert!(err(&out, "output") <= 1e-4, "{}", err(&out, "output"));
    assert!(err(&get("output"), "output_without_faces") > 0.1);
    let without = run(None);
    assert!(err(&without, "output_without_faces") <= 1e-4);
    // An RGBA face video is refused with a message, not a failed convolution.
    let rgba = Tensor::cat(&[&faces, &faces.narrow(1, 0, 1)], 1);
    let conditions = Conditions {
        clip: Some(&clip),
        animate: AnimateInputs {
            pose: Some(&pose),
            faces: Some(&rgba),
        },
        ..Conditions::default()
    };
    let refused = model.forward_with(&get("x"), &get("timestep"), &get("context"), &conditions);
    assert!(refused.unwrap_err().to_string().contains("4 channels"));
}

/// Wan Dancer (`WAN22_WanDancer`, the original files' stacked `in_proj` in the music encoder)
/// against ComfyUI's `WanDancerModel` written out over diffusers' modules: music injected after
/// blocks 0 and 4 at scale 0.7 beside the reference image's CLIP tokens, at 30 fps and at 6 fps
/// (the global patch embedding, head and time positions). The music and the fps both matter.
#[test]
fn wan_dancer_music_and_global_pass_match_comfyui() {
    use videosdgx::models::wan::dancer::DancerInputs;
    let _guard = tch::no_grad_guard();
    let file = SafetensorsFile::open(&fixtures().join("dancer.safetensors")).unwrap();
    assert_eq!(detect(&file).unwrap()[0].architecture, "WAN22_WanDancer");
    let model = load("dancer", |c| c);
    assert!(model.config.dancer && model.config.i2v);
    let io = SafetensorsFile::open(&fixtures().join("dancer_io.safetensors")).unwrap();
    let get = |name: &str| io.tensor(name, Device::Cpu).unwrap();
    let (clip, clip_ref, music) = (get("clip"), get("clip_ref"), get("music"));
    let run = |fps: f64, music: Option<&Tensor>| {
        let conditions = Conditions {
            clip: Some(&clip),
            dancer: DancerInputs {
                music,
                clip_reference: Some(&clip_ref),
                fps: Some(fps),
                scale: Some(0.7),
            },
            ..Conditions::default()
        };
        model
            .forward_with(&get("x"), &get("timestep"), &get("context"), &conditions)
            .unwrap()
    };
    let err = |out: &Tensor, key: &str| (out - get(key)).abs().max().double_value(&[]);
    for (fps, key) in [(30.0, "output_30fps"), (6.0, "output_6fps")] {
        let out = run(fps, Some(&music));
        assert!(err(&out, key) <= 1e-4, "{key}: {}", err(&out, key));
        assert!(
            err(&run(fps, None), key) > 1e-2,
            "{key}: the music changed nothing"
        );
    }
    assert!(err(&run(30.0, Some(&music)), "output_6fps") > 1e-2);
}
