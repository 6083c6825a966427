//! LTX-2 against PyPI diffusers at tiny configs, with random weights in ComfyUI's layout and the
//! checkpoint's `config` metadata, float32 on the CPU: the video VAE (AutoencoderKLLTX2Video,
//! tests/python/ltx_vae_reference.py), plain and timestep-conditioned; the audio-video
//! transformer and its text connectors (LTX2VideoTransformer3DModel,
//! LTX2ConnectorTransformer1d, tests/python/ltx_av_reference.py); the Gemma 3 text decoder against
//! transformers' Gemma3ForCausalLM and LTX-2's features of its hidden states against diffusers
//! (tests/python/gemma3_reference.py); the latent upsampler against LTX2LatentUpsamplerModel
//! (tests/python/ltx_upsampler_reference.py); the audio VAE's decoder and the vocoder against
//! AutoencoderKLLTX2Audio and LTX2Vocoder (tests/python/ltx_audio_reference.py). And the LTXV
//! latent nodes through the real server on the tiny VAEs.

mod common;
mod reference;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{ffprobe, Server};
use serde_json::json;
use tch::{Device, Kind, Tensor};
use videosdgx::engine::value::SharedTensor;
use videosdgx::models::diffusion_file::{DiffusionFile, WeightDtype};
use videosdgx::models::gemma3::{Gemma3Config, Gemma3Text};
use videosdgx::models::loading::component;
use videosdgx::models::ltx::audio_vae::LtxAudioVae;
use videosdgx::models::ltx::av_config::AvConfig;
use videosdgx::models::ltx::av_model::{AvInputs, LtxAvModel};
use videosdgx::models::ltx::av_net::LtxAvNet;
use videosdgx::models::ltx::latent_upsampler::LatentUpscaleModel;
use videosdgx::models::ltx::text_features::{FeatureProjection, PROJECTION_PREFIX};
use videosdgx::models::ltx::vae_config::VaeConfig;
use videosdgx::models::ltx::video_vae::LtxVideoVae;
use videosdgx::models::text_encoder::TextEncoder;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;
use videosdgx::sampling::guidance::Guider;
use videosdgx::sampling::ksampler::sample_latent_with;
use videosdgx::sampling::model::{
    CondEntry, Conditioning, GuideAttention, Latent, Model, NoiseSource, SamplerChoice,
};

/// The VAE in `file` as the server's loader reads it, in float32 on the CPU.
fn load(file: &SafetensorsFile) -> LtxVideoVae {
    let found = component(file, "vae").unwrap();
    assert_eq!(found.architecture, "ltxv_vae");
    let config = VaeConfig::new(found.config.get("metadata"), 2).unwrap();
    assert_eq!((config.temporal_ratio(), config.spatial_ratio()), (8, 32));
    let weights = Weights::new(file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    LtxVideoVae::load(&weights, config).unwrap()
}

fn check(dir: &Path, name: &str, timestep: bool) {
    let file = SafetensorsFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
    let vae = load(&file);
    assert_eq!(vae.config.timestep_conditioning, timestep);
    let io = SafetensorsFile::open(&dir.join(format!("{name}_io.safetensors"))).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    // 11 frames in: ComfyUI keeps the first 1 + 8k.
    let mean = vae.encode(&get("video"));
    let err = reference::max_abs_diff(&mean, &get("mean"));
    assert!(err <= 1e-4, "{name} encode max abs error {err}");

    let decoded = vae.decode(&get("latent"));
    assert_eq!(decoded.size(), [1, 3, 17, 64, 96]);
    let err = reference::max_abs_diff(&decoded, &get("decoded"));
    assert!(err <= 1e-4, "{name} decode max abs error {err}");
}

#[test]
fn ltx2_video_vae_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_vae_reference.py");
    check(dir.path(), "ltx2_vae", false);
    check(dir.path(), "ltx2_vae_timestep", true);
}

/// One reference transformer: its connectors on the prompt features, then a forward on video and
/// audio latents with per-token video timesteps (and, for `ltxav_guides`, two LTXVAddGuide
/// guides: strength 0.5, and 0.8 under a pixel mask).
fn check_av(dir: &Path, name: &str) {
    let file = SafetensorsFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
    let found = component(&file, "diffusion_model").unwrap();
    assert_eq!(found.architecture, "LTXAV");
    let config = AvConfig::from_detected(&found.config).unwrap();
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    let model = LtxAvModel::load(&weights, config).unwrap();
    let io = SafetensorsFile::open(&dir.join(format!("{name}_io.safetensors"))).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    let features = match io.tensor("states", Device::Cpu) {
        // LTX-2.3: the text encoder's per-stream projection (in the checkpoint) first.
        Ok(states) => {
            let w = Weights::new(&file, PROJECTION_PREFIX, Kind::Float, Device::Cpu).unwrap();
            let projection = FeatureProjection::load(&w).unwrap();
            projection.project(&states.unbind(3)).unwrap()
        }
        Err(_) => get("text"),
    };
    let context = model.encode_context(&features).unwrap();
    let err = reference::max_abs_diff(&context, &get("context"));
    assert!(err <= 1e-4, "{name} connectors max abs error {err}");

    let keyframes = io.tensor("keyframes", Device::Cpu).ok();
    let guides = match io.tensor("pixel_mask", Device::Cpu) {
        Ok(mask) => vec![
            GuideAttention {
                tokens: 6,
                strength: 0.5,
                pixel_mask: None,
                latent_shape: [1, 2, 3],
            },
            GuideAttention {
                tokens: 6,
                strength: 0.8,
                pixel_mask: Some(Arc::new(SharedTensor::new(mask))),
                latent_shape: [1, 2, 3],
            },
        ],
        Err(_) => vec![],
    };
    let audio = get("audio");
    let inputs = AvInputs {
        video: &get("video"),
        audio: Some(&audio),
        video_timestep: &get("video_timestep"),
        audio_timestep: &Tensor::from_slice(&[0.7f32]),
        context: &get("context"),
        frame_rate: 24.0,
        keyframes: keyframes.as_ref(),
        guides: &guides,
        reference_audio: None,
    };
    let (video, audio) = model.forward(&inputs).unwrap();
    let err = reference::max_abs_diff(&video, &get("video_out"));
    assert!(err <= 1e-4, "{name} video max abs error {err}");
    let err = reference::max_abs_diff(&audio.unwrap(), &get("audio_out"));
    assert!(err <= 1e-4, "{name} audio max abs error {err}");

    // An ID-LoRA reference clip before the audio (LTXVReferenceAudio's `ref_audio`).
    let Ok(reference) = io.tensor("reference", Device::Cpu) else {
        return;
    };
    let (video, audio) = model
        .forward(&AvInputs {
            reference_audio: Some(&reference),
            ..inputs
        })
        .unwrap();
    let err = reference::max_abs_diff(&video, &get("video_out_ref"));
    assert!(
        err <= 1e-4,
        "{name} video with a reference max abs error {err}"
    );
    let err = reference::max_abs_diff(&audio.unwrap(), &get("audio_out_ref"));
    assert!(
        err <= 1e-4,
        "{name} audio with a reference max abs error {err}"
    );
    // The reference reaches both streams.
    let (plain_video, _) = model.forward(&inputs).unwrap();
    assert!(reference::max_abs_diff(&video, &plain_video) > 1e-3);
}

/// ComfyUI's video-to-audio attention reads the video after the audio-to-video update, and gates
/// audio-to-video at the audio's timestep, where diffusers does neither: each file silences one
/// direction so the other is compared exactly (the script says how). `ltxav23` has LTX-2.3's
/// gated attention, prompt-modulated text cross-attention and per-stream text projection. Upstream ComfyUI's own
/// `LTXAVModel`, loaded from the same files, matches these references within 2e-6.
#[test]
fn ltx2_av_transformer_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_av_reference.py");
    check_av(dir.path(), "ltxav_v2a");
    check_av(dir.path(), "ltxav_a2v");
    check_av(dir.path(), "ltxav_guides");
    check_av(dir.path(), "ltxav23");
}

/// Gemma 3's hidden states (7 layers, so one global layer between sliding ones; 1030 tokens, so
/// the 1024-token window cuts) and LTX-2's projected features of them. Upstream ComfyUI's own
/// Gemma 3 matches the same reference within 2e-5 of states up to 13.
#[test]
fn gemma3_hidden_states_and_ltx2_features_match_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("gemma3_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("gemma3.safetensors")).unwrap();
    let found = component(&file, "text_encoder").unwrap();
    assert_eq!(found.architecture, "gemma3");
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    let config = Gemma3Config::from_weights(&weights).unwrap();
    assert_eq!(
        (
            config.layers,
            config.heads,
            config.kv_heads,
            config.head_dim
        ),
        (7, 4, 2, 8)
    );
    let model = Gemma3Text::load(&weights, config).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("gemma3_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    let states = model.hidden_states(&get("ids")).unwrap();
    let err = reference::max_abs_diff(&Tensor::stack(&states, 3), &get("states"));
    assert!(err <= 1e-4, "hidden states max abs error {err}");

    let ltx = SafetensorsFile::open(&dir.path().join("ltx_projection.safetensors")).unwrap();
    let ltx_weights = Weights::new(&ltx, PROJECTION_PREFIX, Kind::Float, Device::Cpu).unwrap();
    let projection = FeatureProjection::load(&ltx_weights).unwrap();
    let features = projection.project(&states).unwrap();
    let err = reference::max_abs_diff(&features, &get("features"));
    assert!(err <= 1e-4, "LTX-2 text features max abs error {err}");

    // LTXAVTextEncoderLoader's CLIP: the file's BPE tokenizer, Gemma, the checkpoint's projection.
    let manager = cpu_manager();
    let clip = TextEncoder::ltxav(
        manager,
        &dir.path().join("gemma3.safetensors"),
        &dir.path().join("ltx_projection.safetensors"),
        false,
    )
    .unwrap();
    let entry = clip.encode(GEMMA_PROMPT).unwrap();
    let err = reference::max_abs_diff(&entry.context, &get("prompt_features"));
    assert!(err <= 1e-4, "encoded prompt max abs error {err}");
}

/// The prompt tests/python/gemma3_reference.py encodes.
const GEMMA_PROMPT: &str = "a cat walks in the snow, camera pans over the river";

/// LTX-2 text to video through the real server on the tiny files: LTXAVTextEncoderLoader (Gemma 3
/// and the checkpoint's projection), CLIPTextEncode, LTXVConditioning, the transformer from
/// UNETLoader sampling a video-only latent with KSampler.
#[test]
fn ltx2_text_to_video_runs_through_the_server() {
    let av = reference::fixtures("ltx_av_reference.py");
    let gemma = reference::fixtures("gemma3_reference.py");
    let server = Server::start(&[]);
    let place = |from: &Path, folder: &str, name: &str| {
        let dir = server.dir.join("models").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(from, dir.join(name)).unwrap();
    };
    place(
        &av.path().join("ltxav_a2v.safetensors"),
        "diffusion_models",
        "ltx2.safetensors",
    );
    place(
        &gemma.path().join("gemma3.safetensors"),
        "text_encoders",
        "gemma3.safetensors",
    );
    place(
        &gemma.path().join("ltx_projection.safetensors"),
        "checkpoints",
        "ltx2.safetensors",
    );
    let prompt = json!({
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": "ltx2.safetensors", "weight_dtype": "default"}},
        "clip": {"class_type": "LTXAVTextEncoderLoader", "inputs": {"text_encoder": "gemma3.safetensors",
                 "ckpt_name": "ltx2.safetensors", "device": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": GEMMA_PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry, still frame"}},
        "cond": {"class_type": "LTXVConditioning", "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "frame_rate": 24.0}},
        "latent": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 96, "height": 64, "length": 17, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["model", 0], "seed": 10, "steps": 2, "cfg": 4.0,
                   "sampler_name": "euler", "scheduler": "simple", "positive": ["cond", 0], "negative": ["cond", 1],
                   "latent_image": ["latent", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "ltx2"}},
    });
    server.run_ok(&prompt, Duration::from_secs(300));
    let latent = saved_latent(&server.output_dir().join("ltx2_00001_.latent"));
    assert_eq!(latent.size(), [1, 128, 3, 2, 3]);
    let finite = latent.isfinite().all().int64_value(&[]) == 1;
    assert!(finite && latent.abs().max().double_value(&[]) > 0.0);
}

/// A model manager on the CPU, as the server's loaders use it.
fn cpu_manager() -> Arc<ModelManager> {
    Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()))
}

/// The transformer of `path` as the test loads it directly, float32 on the CPU.
fn av_model(path: &Path) -> LtxAvModel {
    let file = SafetensorsFile::open(path).unwrap();
    let found = component(&file, "diffusion_model").unwrap();
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    LtxAvModel::load(&weights, AvConfig::from_detected(&found.config).unwrap()).unwrap()
}

/// Sampling a nested audio-video latent as ComfyUI's sampler packs it. The initial noise is the
/// video's draw then the audio's from one seeding. One Euler step to σ 0 gives the model's
/// denoised estimate, which must equal the transformer's own prediction on the unpacked noised
/// parts (the conditioning frame at timestep 0, the text through the connectors, the frame rate
/// from the conditioning), while the first latent frame, masked 0 like an image-to-video
/// conditioning frame, keeps its clean value.
#[test]
fn ltx2_samples_nested_audio_video_latents() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_av_reference.py");
    let path = dir.path().join("ltxav_a2v.safetensors");
    let io = SafetensorsFile::open(&dir.path().join("ltxav_a2v_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let (video, audio, text) = (get("video"), get("audio"), get("text"));

    let manager = cpu_manager();
    let file = DiffusionFile::open(manager, &path, WeightDtype::Default).unwrap();
    let net = LtxAvNet::open(file).unwrap();
    let model = Model::new(Arc::new(net), Arc::new(LtxAvNet::sampling()));
    let mut entry = CondEntry::new(text.shallow_clone());
    entry.frame_rate = Some(24.0);
    let mut guider = Guider::Basic {
        model,
        cond: Conditioning(vec![entry]),
    };
    let video_mask = Tensor::ones([1, 1, 3, 2, 3], (Kind::Float, Device::Cpu));
    let _ = video_mask.narrow(2, 0, 1).fill_(0.0);
    let audio_mask = Tensor::ones([1, 1, 5, 16], (Kind::Float, Device::Cpu));
    let latent = Latent::nested(
        vec![video.shallow_clone(), audio.shallow_clone()],
        Some(vec![video_mask, audio_mask]),
    );

    let seed = 7;
    let noise = NoiseSource::Seeded(seed).generate(&latent);
    tch::manual_seed(seed as i64);
    let (video_noise, audio_noise) = (video.randn_like(), audio.randn_like());
    let drawn = Tensor::cat(
        &[
            video_noise.reshape([1, 1, -1]),
            audio_noise.reshape([1, 1, -1]),
        ],
        2,
    );
    assert!(
        noise.equal(&drawn),
        "nested noise is not the video's draw then the audio's"
    );

    let sigma = 0.7;
    let sampled = sample_latent_with(
        &mut guider,
        &SamplerChoice::named("euler"),
        &[sigma, 0.0],
        &noise,
        &latent,
        Some(seed),
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    let out = latent.with_sampled(sampled.samples);
    let parts = &out.nested.as_ref().expect("the output stays nested").parts;

    let noised_video = &video_noise * sigma + &video * (1.0 - sigma);
    noised_video.narrow(2, 0, 1).copy_(&video.narrow(2, 0, 1));
    let noised_audio = &audio_noise * sigma + &audio * (1.0 - sigma);
    let video_timestep = Tensor::full([1, 18], sigma, (Kind::Float, Device::Cpu));
    let _ = video_timestep.narrow(1, 0, 6).fill_(0.0);
    let model = av_model(&path);
    let context = model.encode_context(&text).unwrap();
    let (v, a) = model
        .forward(&AvInputs {
            video: &noised_video,
            audio: Some(&noised_audio),
            video_timestep: &video_timestep,
            audio_timestep: &Tensor::from_slice(&[sigma as f32]),
            context: &context,
            frame_rate: 24.0,
            keyframes: None,
            guides: &[],
            reference_audio: None,
        })
        .unwrap();
    let expected_video = &noised_video - v * sigma;
    expected_video.narrow(2, 0, 1).copy_(&video.narrow(2, 0, 1));
    let err = reference::max_abs_diff(&parts[0], &expected_video);
    assert!(err <= 1e-5, "sampled video max abs error {err}");
    let err = reference::max_abs_diff(&parts[1], &(&noised_audio - a.unwrap() * sigma));
    assert!(err <= 1e-5, "sampled audio max abs error {err}");
}

/// LTX-2's ×2 latent upsampler and a ×1.5 one (whose blur runs), un-normalized latents in.
#[test]
fn ltx2_latent_upsampler_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_upsampler_reference.py");
    let manager = cpu_manager();
    for name in ["ltx_upsampler_x2", "ltx_upsampler_x1_5"] {
        let path = dir.path().join(format!("{name}.safetensors"));
        let model = LatentUpscaleModel::open(manager.clone(), &path).unwrap();
        let io = SafetensorsFile::open(&dir.path().join(format!("{name}_io.safetensors"))).unwrap();
        let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
        let out = model.upsample(&get("latent")).unwrap();
        let err = reference::max_abs_diff(&out, &get("upsampled"));
        assert!(err <= 1e-4, "{name} max abs error {err}");
    }
}

/// LTX-2's audio decoding: the latent de-normalized per (channel, bin), the causal decoder to a
/// 4·5 − 3 frame spectrogram, the vocoder to 24 kHz stereo samples; its encoding: a mono 24 kHz
/// waveform through ComfyUI's resampling, crop and channel repeat, torchaudio's log-mel
/// spectrogram, the causal encoder and the normalization; and the audio nodes through the
/// server (the empty latent's length for 121 frames at 24 fps, the decode of an AV latent's
/// audio part, the encode of a second of silence).
#[test]
fn ltx2_audio_vae_decodes_and_encodes_like_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_audio_reference.py");
    let path = dir.path().join("ltx_audio.safetensors");
    let manager = cpu_manager();
    let vae = LtxAudioVae::open(manager, &path).unwrap();
    assert_eq!((vae.output_sample_rate(), vae.latent_bins()), (24000, 16));
    assert_eq!(vae.latent_frames(121, 24.0), 126);
    let io = SafetensorsFile::open(&dir.path().join("ltx_audio_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let waveform = vae.decode(&get("latent")).unwrap();
    let err = reference::max_abs_diff(&waveform, &get("waveform"));
    assert!(err <= 1e-4, "waveform max abs error {err}");
    let encoded = vae.encode(&get("sound"), 24000).unwrap();
    assert_eq!(encoded.size(), [2, 8, 10, 16]);
    let err = reference::max_abs_diff(&encoded, &get("encoded"));
    assert!(err <= 1e-4, "encoded latent max abs error {err}");
    let too_short = vae.encode(
        &Tensor::zeros([1, 2, 2000], (Kind::Float, Device::Cpu)),
        44100,
    );
    assert!(too_short.unwrap_err().to_string().contains("too short"));

    // LTX-2.3's BigVGAN vocoder with bandwidth extension to 48 kHz.
    let bwe =
        LtxAudioVae::open(cpu_manager(), &dir.path().join("ltx_audio_bwe.safetensors")).unwrap();
    assert_eq!(bwe.output_sample_rate(), 48000);
    let io = SafetensorsFile::open(&dir.path().join("ltx_audio_bwe_io.safetensors")).unwrap();
    let expected = io.tensor("waveform", Device::Cpu).unwrap();
    let waveform = bwe.decode(&get("latent")).unwrap();
    assert_eq!(waveform.size(), expected.size());
    let err = reference::max_abs_diff(&waveform, &expected);
    assert!(
        err <= 1e-4,
        "bandwidth-extended waveform max abs error {err}"
    );

    let server = Server::start(&[]);
    let checkpoints = server.dir.join("models").join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::copy(&path, checkpoints.join("ltx2.safetensors")).unwrap();
    let prompt = json!({
        "audio_vae": {"class_type": "LTXVAudioVAELoader", "inputs": {"ckpt_name": "ltx2.safetensors"}},
        "empty": {"class_type": "LTXVEmptyLatentAudio", "inputs": {"frames_number": 121, "frame_rate": 24,
                  "batch_size": 2, "audio_vae": ["audio_vae", 0]}},
        "save_empty": {"class_type": "SaveLatent", "inputs": {"samples": ["empty", 0], "filename_prefix": "empty_audio"}},
        "video": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 2}},
        "av": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["video", 0], "audio_latent": ["empty", 0]}},
        "decode": {"class_type": "LTXVAudioVAEDecode", "inputs": {"samples": ["av", 0], "audio_vae": ["audio_vae", 0]}},
        "save": {"class_type": "SaveAudio", "inputs": {"audio": ["decode", 0], "filename_prefix": "ltx2_audio"}},
        "silence": {"class_type": "EmptyAudio", "inputs": {"duration": 1.0, "sample_rate": 48000, "channels": 2}},
        "encode": {"class_type": "LTXVAudioVAEEncode", "inputs": {"audio": ["silence", 0], "audio_vae": ["audio_vae", 0]}},
        "save_encoded": {"class_type": "SaveLatent", "inputs": {"samples": ["encode", 0], "filename_prefix": "encoded_audio"}},
    });
    let entry = server.run_ok(&prompt, Duration::from_secs(300));
    let empty = saved_latent(&server.output_dir().join("empty_audio_00001_.latent"));
    assert_eq!(empty.size(), [2, 8, 126, 16]);
    // 44100 samples cropped to 40960, 14861 at 16 kHz, 93 mel frames, 24 latent frames.
    let encoded = saved_latent(&server.output_dir().join("encoded_audio_00001_.latent"));
    assert_eq!(encoded.size(), [1, 8, 24, 16]);
    // One file per batch item, named as ComfyUI names audio (no `_` after the counter).
    let files: Vec<&str> = entry["outputs"]["save"]["audio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["filename"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["ltx2_audio_00001.flac", "ltx2_audio_00002.flac"]);
    for file in files {
        let streams = ffprobe(&server.output_dir().join(file));
        assert_eq!(streams[0]["codec_name"], "flac");
    }
}

/// The official LTX-2 text-, image-, canny- and depth-to-video templates (workflows/, converted from
/// their UI format) unchanged but for size (128×64 video, so stage 1 samples 64×32), length (9
/// frames), the full model's stage-1 steps (2) and prefix, on tiny files under their own file
/// names (tests/python/ltx2_template_fixtures.py) and small input pictures, videos and sounds: the Gemma
/// text encoder, the picture put into the first latent frame, the canny video (or Lotus-D's
/// depth maps of it) appended as an LTXVAddGuide guide and cropped again, both sampling stages on the nested audio-video latent,
/// the latent upsampler, the LoRAs, the video decode and the audio decode, saved as an mp4 with
/// sound.
#[test]
fn ltx2_templates_make_videos_with_sound() {
    let server = Server::start(&[]);
    reference::run_into("ltx2_template_fixtures.py", &server.dir);
    let test_size = |value: i64| match value {
        121 | 281 => Some(9),
        1280 => Some(128),
        720 => Some(64),
        _ => None,
    };
    for (name, save, fps) in [
        ("video_ltx2_t2v", "75", "24/1"),
        ("video_ltx2_t2v_distilled", "104", "24/1"),
        ("video_ltx2_i2v", "75", "25/1"),
        ("video_ltx2_i2v_distilled", "75", "25/1"),
        ("video_ltx2_i2v_lora", "75", "24/1"),
        ("video_ltx2_canny_to_video", "175", "24/1"),
        ("video_ltx2_depth_to_video", "175", "24/1"),
    ] {
        run_ltx_template(&server, name, save, (128, 64, fps), &test_size);
    }
    // LTX-2.3 (gated attention, prompt modulation, per-stream text, 48 kHz vocoder): first and
    // last frame as LTXVAddGuide guides, the style LoRA, text and image to video with their
    // prompt enhancers (Gemma with its LoRA writes the prompt, from the picture too); lengths are
    // seconds × fps + 1, so 1 s at 8 fps; the style template is portrait.
    let test_size_23 = |value: i64| match value {
        5 | 6 => Some(1),
        25 => Some(8),
        1280 => Some(128),
        720 => Some(64),
        _ => None,
    };
    for (name, save, size) in [
        ("video_ltx2_3_flf2v", "68", (128, 64, "8/1")),
        ("template_ltx2_3_style_transition", "68", (64, 128, "8/1")),
        ("video_ltx2_3_t2v", "75", (128, 64, "8/1")),
        ("video_ltx2_3_i2v", "75", (128, 64, "8/1")),
    ] {
        let (entry, audio) = run_ltx_template(&server, name, save, size, &test_size_23);
        assert_eq!(audio["sample_rate"], "48000", "{name}");
        if name == "video_ltx2_3_t2v" {
            // Its prompt enhancer is on: Gemma's text, not the prompt, is what was encoded.
            let shown = &entry["outputs"]["267:328"]["text"][0];
            assert!(shown
                .as_str()
                .is_some_and(|t| !t.is_empty() && !t.starts_with("Dynamic")));
        }
    }
    // Image and audio to video: the loaded sound, trimmed to the clip's second, is encoded and
    // kept through both stages by a zero noise mask, so the sampled audio latent is the
    // encoded one (24 frames: 40960 samples at 44.1 kHz).
    let test_size_ia2v = |value: i64| match value {
        9 => Some(1),
        24 => Some(8),
        1280 => Some(128),
        720 => Some(64),
        _ => None,
    };
    let mut prompt = ltx_template("video_ltx2_3_ia2v", &test_size_ia2v);
    let nodes = prompt.as_object_mut().unwrap();
    for (id, source, slot) in [("encoded", "340:328", 0), ("sampled", "340:311", 1)] {
        nodes.insert(
            format!("save_{id}"),
            json!({"class_type": "SaveLatent",
                   "inputs": {"samples": [source, slot], "filename_prefix": format!("ia2v_{id}")}}),
        );
    }
    let (_, audio) = run_ltx_prompt(
        &server,
        "video_ltx2_3_ia2v",
        &prompt,
        "341",
        (128, 64, "8/1"),
    );
    assert_eq!(audio["sample_rate"], "48000");
    let latent =
        |id: &str| saved_latent(&server.output_dir().join(format!("ia2v_{id}_00001_.latent")));
    let encoded = latent("encoded");
    assert_eq!(encoded.size(), [1, 8, 24, 16]);
    assert!(encoded.abs().max().double_value(&[]) > 0.0);
    // Euler's last step gives the kept latent back up to float rounding, as in ComfyUI.
    let err = reference::max_abs_diff(&latent("sampled"), &encoded);
    assert!(err <= 1e-5, "the sampled audio latent moved by {err}");

    // ID-LoRA: the loaded sound is the reference voice on both conditionings, and the identity
    // guidance makes one more call without it in stage 1; at scale 0 the audio differs.
    let test_size_id = |value: i64| match value {
        10 => Some(1),
        25 => Some(8),
        1280 => Some(128),
        720 => Some(64),
        _ => None,
    };
    let mut sampled = Vec::new();
    for scale in [3.0, 0.0] {
        let mut prompt = ltx_template("video_ltx2_3_id_lora", &test_size_id);
        prompt["340:349"]["inputs"]["identity_guidance_scale"] = json!(scale);
        prompt["save_sampled"] = json!({"class_type": "SaveLatent",
            "inputs": {"samples": ["340:311", 1], "filename_prefix": format!("id_lora_{scale}")}});
        let (_, audio) = run_ltx_prompt(
            &server,
            "video_ltx2_3_id_lora",
            &prompt,
            "341",
            (128, 64, "8/1"),
        );
        assert_eq!(audio["sample_rate"], "48000");
        let file = format!("id_lora_{scale}_00001_.latent");
        sampled.push(saved_latent(&server.output_dir().join(file)));
    }
    assert!(reference::max_abs_diff(&sampled[0], &sampled[1]) > 1e-4);

    // The ingredients IC-LoRA: the reference sheet looped into a 9-frame video guide; its
    // metadata's downscale factor (1) passes through GetICLoRAParameters to LTXVAddGuide.
    let test_size_ingredients = |value: i64| match value {
        5 => Some(1),
        25 => Some(9),
        _ => None,
    };
    let mut prompt = ltx_template(
        "template_ltx2_3_ic_lora_ingredients",
        &test_size_ingredients,
    );
    prompt["129:704"]["inputs"]["steps"] = json!(2);
    run_ltx_prompt(
        &server,
        "template_ltx2_3_ic_lora_ingredients",
        &prompt,
        "68",
        (128, 64, "9/1"),
    );
    // A small-grid IC-LoRA (factor 2) is refused with the factor named.
    prompt["129:195"]["inputs"]["lora_name"] = json!("ltx-2.3-small-grid-ic-lora.safetensors");
    let error = server.run_failing(&prompt, Duration::from_secs(300));
    assert_eq!(error["node_type"], "LTXVAddGuide");
    let message = error["exception_message"].as_str().unwrap();
    assert!(
        message.contains("reference downscale factor above 1 (this one's is 2)"),
        "{message}"
    );
}

/// One LTX template (workflows/NAME_api.json) at test size, its prompt enhancer on where it has
/// one: its `save` node's mp4 must have
/// 9 frames of `width`×`height` at `fps`, and sound. Gives the history entry and the sound's
/// stream.
fn run_ltx_template(
    server: &Server,
    name: &str,
    save: &str,
    size: (i64, i64, &str),
    test_size: &dyn Fn(i64) -> Option<i64>,
) -> (serde_json::Value, serde_json::Value) {
    let prompt = ltx_template(name, test_size);
    run_ltx_prompt(server, name, &prompt, save, size)
}

/// The template `workflows/{name}_api.json` at test size: `test_size` maps the sizes, lengths
/// and rates its primitives set; the prompt enhancer is on; LTXVScheduler takes 2 steps.
fn ltx_template(name: &str, test_size: &dyn Fn(i64) -> Option<i64>) -> serde_json::Value {
    let path = format!("{}/workflows/{name}_api.json", env!("CARGO_MANIFEST_DIR"));
    let mut prompt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in prompt.as_object_mut().unwrap().values_mut() {
        let class = node["class_type"].as_str().unwrap().to_string();
        let enhance = node["_meta"]["title"] == "Boolean (Enable Prompt Enhance)";
        let inputs = &mut node["inputs"];
        match class.as_str() {
            // The prompt enhancers run (Gemma writes the prompt, from the picture in i2v).
            "PrimitiveBoolean" if enhance => inputs["value"] = json!(true),
            "EmptyImage" if inputs["width"].is_number() => {
                inputs["width"] = json!(128);
                inputs["height"] = json!(64);
            }
            "ResizeImageMaskNode" if inputs["resize_type.width"].is_number() => {
                inputs["resize_type.width"] = json!(128);
                inputs["resize_type.height"] = json!(64);
            }
            "ResizeAndPadImage" if inputs["target_width"].is_number() => {
                inputs["target_width"] = json!(128);
                inputs["target_height"] = json!(64);
            }
            "PrimitiveInt" => {
                if let Some(v) = inputs["value"].as_i64().and_then(test_size) {
                    inputs["value"] = json!(v);
                }
            }
            "PrimitiveFloat" => {
                let whole = inputs["value"].as_f64().filter(|v| v.fract() == 0.0);
                if let Some(v) = whole.and_then(|v| test_size(v as i64)) {
                    inputs["value"] = json!(v as f64);
                }
            }
            "LTXVScheduler" => inputs["steps"] = json!(2),
            "SaveVideo" => inputs["filename_prefix"] = json!(name),
            _ => {}
        }
    }
    prompt
}

/// Runs an LTX template's prompt and checks its video: size, 9 frames, frame rate. Returns the
/// history entry and the video's audio stream.
fn run_ltx_prompt(
    server: &Server,
    name: &str,
    prompt: &serde_json::Value,
    save: &str,
    (width, height, fps): (i64, i64, &str),
) -> (serde_json::Value, serde_json::Value) {
    server.make_inputs(prompt, 9);
    let entry = server.run_ok(prompt, Duration::from_secs(600));
    let video = entry["outputs"][save]["images"][0].clone();
    let file = server
        .output_dir()
        .join(video["subfolder"].as_str().unwrap())
        .join(video["filename"].as_str().unwrap());
    let streams = ffprobe(&file);
    let find = |kind: &str| {
        streams
            .iter()
            .find(|s| s["codec_type"] == kind)
            .unwrap_or_else(|| panic!("{name}: no {kind} stream in {streams:?}"))
            .clone()
    };
    let picture = find("video");
    assert_eq!(
        (&picture["width"], &picture["height"]),
        (&json!(width), &json!(height)),
        "{name}"
    );
    assert_eq!(picture["nb_read_frames"], "9", "{name}");
    assert_eq!(picture["r_frame_rate"], fps, "{name}");
    (entry, find("audio"))
}

/// `latent_tensor` of a SaveLatent file.
fn saved_latent(path: &Path) -> Tensor {
    let file = SafetensorsFile::open(path).unwrap();
    file.tensor("latent_tensor", Device::Cpu).unwrap()
}

/// EmptyLTXVLatentVideo, LTXVImgToVideoInplace, LTXVImgToVideo (after LTXVConditioning and
/// LTXVPreprocess) and VAEDecode on the 128-channel tiny VAE from models/vae: the first latent
/// frame is the image's encoding, the rest stay empty, and 3 latent frames decode to 17.
#[test]
fn ltxv_latent_nodes_run_through_the_server() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_vae_reference.py");
    let upsamplers = reference::fixtures("ltx_upsampler_reference.py");
    let server = Server::start(&[]);
    let upsampler_dir = server.dir.join("models").join("latent_upscale_models");
    std::fs::create_dir_all(&upsampler_dir).unwrap();
    let upsampler_file = upsamplers.path().join("ltx_upsampler_x2.safetensors");
    std::fs::copy(&upsampler_file, upsampler_dir.join("x2.safetensors")).unwrap();
    let vae_dir = server.dir.join("models").join("vae");
    std::fs::create_dir_all(&vae_dir).unwrap();
    std::fs::copy(
        dir.path().join("ltx2_vae.safetensors"),
        vae_dir.join("ltx2.safetensors"),
    )
    .unwrap();
    let prompt = json!({
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ltx2.safetensors"}},
        "image": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 0x3366cc}},
        "empty": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 96, "height": 64, "length": 17, "batch_size": 1}},
        "inplace": {"class_type": "LTXVImgToVideoInplace", "inputs": {"vae": ["vae", 0], "image": ["image", 0],
                    "latent": ["empty", 0], "strength": 0.8, "bypass": false}},
        "save_inplace": {"class_type": "SaveLatent", "inputs": {"samples": ["inplace", 0], "filename_prefix": "inplace"}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["inplace", 0], "vae": ["vae", 0]}},
        "frames": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "frames"}},
        "pos": {"class_type": "TestToyConditioning", "inputs": {"value": 0.5}},
        "neg": {"class_type": "TestToyConditioning", "inputs": {"value": 0.1}},
        "cond": {"class_type": "LTXVConditioning", "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "frame_rate": 24.0}},
        "pre": {"class_type": "LTXVPreprocess", "inputs": {"image": ["image", 0], "img_compression": 30}},
        "i2v": {"class_type": "LTXVImgToVideo", "inputs": {"positive": ["cond", 0], "negative": ["cond", 1], "vae": ["vae", 0],
                "image": ["pre", 0], "width": 96, "height": 64, "length": 17, "batch_size": 2, "strength": 1.0}},
        "save_i2v": {"class_type": "SaveLatent", "inputs": {"samples": ["i2v", 2], "filename_prefix": "i2v"}},
        // Nesting: an AV latent whose audio stream is then swapped for a shorter one, which
        // LTXVConcatAVLatent pads to the stream it replaces.
        "empty9": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 96, "height": 64, "length": 9, "batch_size": 1}},
        "inplace9": {"class_type": "LTXVImgToVideoInplace", "inputs": {"vae": ["vae", 0], "image": ["image", 0],
                     "latent": ["empty9", 0], "strength": 1.0, "bypass": false}},
        "av": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["inplace", 0], "audio_latent": ["inplace", 0]}},
        "av2": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["av", 0], "audio_latent": ["inplace9", 0]}},
        "split": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["av2", 0]}},
        "save_video": {"class_type": "SaveLatent", "inputs": {"samples": ["split", 0], "filename_prefix": "split_video"}},
        "save_audio": {"class_type": "SaveLatent", "inputs": {"samples": ["split", 1], "filename_prefix": "split_audio"}},
        "upsampler": {"class_type": "LatentUpscaleModelLoader", "inputs": {"model_name": "x2.safetensors"}},
        "upsampled": {"class_type": "LTXVLatentUpsampler", "inputs": {"samples": ["inplace", 0], "upscale_model": ["upsampler", 0], "vae": ["vae", 0]}},
        "save_upsampled": {"class_type": "SaveLatent", "inputs": {"samples": ["upsampled", 0], "filename_prefix": "upsampled"}},
        // No guides were added, so the crop keeps every frame.
        "crop": {"class_type": "LTXVCropGuides", "inputs": {"positive": ["cond", 0], "negative": ["cond", 1], "latent": ["split", 0]}},
        "save_crop": {"class_type": "SaveLatent", "inputs": {"samples": ["crop", 2], "filename_prefix": "crop"}},
        // A 9-frame guide from pixel frame 8 (moved to 1): its first frame is encoded before it
        // and that latent dropped, so one latent frame is appended; the crop takes it off again.
        "clip9": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 9, "color": 0x3366cc}},
        "guide": {"class_type": "LTXVAddGuide", "inputs": {"positive": ["cond", 0], "negative": ["cond", 1], "vae": ["vae", 0],
                  "latent": ["inplace", 0], "image": ["clip9", 0], "frame_idx": 8, "strength": 0.7}},
        "save_guide": {"class_type": "SaveLatent", "inputs": {"samples": ["guide", 2], "filename_prefix": "guide"}},
        "uncrop": {"class_type": "LTXVCropGuides", "inputs": {"positive": ["guide", 0], "negative": ["guide", 1], "latent": ["guide", 2]}},
        "save_uncrop": {"class_type": "SaveLatent", "inputs": {"samples": ["uncrop", 2], "filename_prefix": "uncrop"}},
    });
    let entry = server.run_ok(&prompt, Duration::from_secs(300));
    assert_eq!(
        entry["outputs"]["frames"]["images"]
            .as_array()
            .unwrap()
            .len(),
        17
    );

    let vae = load(&SafetensorsFile::open(&dir.path().join("ltx2_vae.safetensors")).unwrap());
    let color = Tensor::from_slice(&[0x33 as f32, 0x66 as f32, 0xcc as f32]) / 255.0;
    let video = (color.view([1, 3, 1, 1, 1]) * 2.0 - 1.0).expand([1, 3, 1, 64, 96], false);
    let expected = vae.encode(&video);

    let inplace = saved_latent(&server.output_dir().join("inplace_00001_.latent"));
    assert_eq!(inplace.size(), [1, 128, 3, 2, 3]);
    let err = reference::max_abs_diff(&inplace.narrow(2, 0, 1), &expected);
    assert!(err <= 1e-4, "inplace first frame max abs error {err}");
    assert_eq!(inplace.narrow(2, 1, 2).abs().max().double_value(&[]), 0.0);

    // The H.264 round trip moves the colour a little: close to the plain encoding, not equal.
    let i2v = saved_latent(&server.output_dir().join("i2v_00001_.latent"));
    assert_eq!(i2v.size(), [2, 128, 3, 2, 3]);
    assert_eq!(i2v.get(0), i2v.get(1));
    let first = i2v.narrow(0, 0, 1).narrow(2, 0, 1);
    let err = reference::max_abs_diff(&first, &expected);
    assert!(
        err > 0.0 && err < 0.5,
        "preprocessed first frame differs by {err}"
    );
    assert_eq!(i2v.narrow(2, 1, 2).abs().max().double_value(&[]), 0.0);

    let video = saved_latent(&server.output_dir().join("split_video_00001_.latent"));
    assert!(video.equal(&inplace));
    let cropped = saved_latent(&server.output_dir().join("crop_00001_.latent"));
    assert!(cropped.equal(&inplace));
    let guided = saved_latent(&server.output_dir().join("guide_00001_.latent"));
    assert_eq!(guided.size(), [1, 128, 4, 2, 3]);
    assert!(guided.narrow(2, 0, 3).equal(&inplace));
    let clip = (color.view([1, 3, 1, 1, 1]) * 2.0 - 1.0).expand([1, 3, 9, 64, 96], false);
    let err = reference::max_abs_diff(&guided.narrow(2, 3, 1), &vae.encode(&clip).narrow(2, 1, 1));
    assert!(err <= 1e-4, "guide latent max abs error {err}");
    let uncropped = saved_latent(&server.output_dir().join("uncrop_00001_.latent"));
    assert!(uncropped.equal(&inplace));

    // LTXVLatentUpsampler works on the VAE's un-normalized latent.
    let file = SafetensorsFile::open(&dir.path().join("ltx2_vae.safetensors")).unwrap();
    let stat = |n: &str| {
        let key = format!("per_channel_statistics.{n}");
        file.tensor(&key, Device::Cpu)
            .unwrap()
            .view([1, -1, 1, 1, 1])
    };
    let (mean, std) = (stat("mean-of-means"), stat("std-of-means"));
    let manager = cpu_manager();
    let model = LatentUpscaleModel::open(manager, &upsampler_file).unwrap();
    let expected_up = (model.upsample(&(&inplace * &std + &mean)).unwrap() - &mean) / &std;
    let upsampled = saved_latent(&server.output_dir().join("upsampled_00001_.latent"));
    assert_eq!(upsampled.size(), [1, 128, 3, 4, 6]);
    let err = reference::max_abs_diff(&upsampled, &expected_up);
    assert!(err <= 1e-5, "upsampled latent max abs error {err}");
    let audio = saved_latent(&server.output_dir().join("split_audio_00001_.latent"));
    assert_eq!(audio.size(), [1, 128, 3, 2, 3]);
    let err = reference::max_abs_diff(&audio.narrow(2, 0, 1), &expected);
    assert!(err <= 1e-4, "swapped audio stream max abs error {err}");
    assert_eq!(audio.narrow(2, 1, 2).abs().max().double_value(&[]), 0.0);
}
