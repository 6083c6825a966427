//! The official image templates run unchanged but for size and steps, on tiny random
//! checkpoints in ComfyUI's layouts, on the CPU: through the server (API format, as the frontend
//! queues them, PNG with prompt and workflow embedded) and through `videosdgx run` (the UI file
//! as shipped, subgraph and all).

mod common;
mod reference;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(300);
const WIDTH: i64 = 64;
const HEIGHT: i64 = 48;

fn workflow(name: &str) -> Value {
    let path = format!("{}/workflows/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Sets the inputs of every node of class `class` (API prompt) or the widget values of every
/// such node (UI workflow, subgraph definitions included) through `edit`.
fn edit_api(prompt: &mut Value, class: &str, edit: impl Fn(&mut Value)) {
    for node in prompt.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == class {
            edit(&mut node["inputs"]);
        }
    }
}

fn edit_ui(workflow: &mut Value, class: &str, edit: impl Fn(&mut Vec<Value>)) {
    let edit_nodes = |nodes: &mut Value| {
        for node in nodes.as_array_mut().unwrap() {
            if node["type"] == class {
                edit(node["widgets_values"].as_array_mut().unwrap());
            }
        }
    };
    edit_nodes(&mut workflow["nodes"]);
    for sub in workflow["definitions"]["subgraphs"].as_array_mut().unwrap() {
        edit_nodes(&mut sub["nodes"]);
    }
}

/// Queues `prompt` with the UI workflow as the frontend does and returns the saved PNG's path.
fn run(server: &Server, prompt: &Value, ui: &Value, client: &str) -> std::path::PathBuf {
    let mut ws = server.ws(client);
    let body = json!({"prompt": prompt, "client_id": client,
                      "extra_data": {"extra_pnginfo": {"workflow": ui}}});
    let r = server.post_json("/prompt", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    let types = common::types(&ws.until_done(&id, T));
    assert!(
        types.contains(&"execution_success".to_string()),
        "{types:?}\n{}",
        server.log()
    );
    let history = server.wait_history(&id, T);
    let image = history["outputs"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|o| o["images"].as_array().filter(|i| i[0]["type"] == "output"))
        .expect("a saved image")[0]
        .clone();
    server
        .output_dir()
        .join(image["subfolder"].as_str().unwrap())
        .join(image["filename"].as_str().unwrap())
}

/// A saved PNG's size, RGB pixels and tEXt chunks (keyword, text).
struct Png {
    size: (u32, u32),
    pixels: Vec<u8>,
    text: Vec<(String, String)>,
}

fn read_png(path: &Path) -> Png {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(frame.buffer_size());
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    Png {
        size: (frame.width, frame.height),
        pixels,
        text,
    }
}

fn cli_run(workflow: &Path, base: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_videosdgx"))
        .args(["run", workflow.to_str().unwrap(), "--base-directory"])
        .arg(base)
        .output()
        .unwrap()
}

/// Writes the UI workflow to `file`, runs it with `videosdgx run` in the server's base
/// directory and reads the PNG that node `save` reports.
fn cli_png(server: &Server, ui: &Value, file: &Path, save: &str) -> Png {
    let saved = common::run_workflow_file(ui, file, &server.dir);
    let name = saved[save]["images"][0]["filename"].as_str().unwrap();
    read_png(&server.output_dir().join(name))
}

#[test]
fn flux_dev_template_makes_pngs_through_the_server_and_the_cli() {
    let server = Server::start(&[]);
    reference::run_into("flux_workflow_fixtures.py", &server.dir);
    let ui = workflow("flux_dev_full_text_to_image_ui");
    let mut prompt = workflow("flux_dev_full_text_to_image_api");
    edit_api(&mut prompt, "EmptySD3LatentImage", |i| {
        i["width"] = json!(WIDTH);
        i["height"] = json!(HEIGHT);
    });
    edit_api(&mut prompt, "KSampler", |i| i["steps"] = json!(2));

    let png = run(&server, &prompt, &ui, "flux");
    let Png { size, pixels, text } = read_png(&png);
    assert_eq!(size, (WIDTH as u32, HEIGHT as u32));
    let chunk = |k: &str| -> Value {
        let (_, t) = text.iter().find(|(key, _)| key == k).expect(k);
        serde_json::from_str(t).unwrap()
    };
    assert_eq!(chunk("prompt")["194:50"]["class_type"], "KSampler");
    assert_eq!(chunk("workflow")["definitions"], ui["definitions"]);

    // No FluxGuidance node means ComfyUI's default 3.5: the same image with the node at 3.5,
    // a different one at 1.0.
    let with_guidance = |g: f64| {
        let mut p = prompt.clone();
        p["194:90"] = json!({"class_type": "FluxGuidance",
                             "inputs": {"conditioning": ["194:49", 0], "guidance": g}});
        p["194:50"]["inputs"]["positive"] = json!(["194:90", 0]);
        p
    };
    let same = read_png(&run(&server, &with_guidance(3.5), &ui, "g35")).pixels;
    assert_eq!(same, pixels, "FluxGuidance 3.5 must equal the default");
    let other = read_png(&run(&server, &with_guidance(1.0), &ui, "g1")).pixels;
    assert_ne!(other, pixels, "guidance must reach the model");

    // The shipped UI file (subgraph, promoted widgets) through `videosdgx run`, size and steps
    // edited inside the subgraph: the same image as the API prompt.
    let mut small = ui.clone();
    edit_ui(&mut small, "EmptySD3LatentImage", |w| {
        w[0] = json!(WIDTH);
        w[1] = json!(HEIGHT);
    });
    edit_ui(&mut small, "KSampler", |w| w[2] = json!(2));
    let file = server.dir.join("flux_small_ui.json");
    assert_eq!(cli_png(&server, &small, &file, "9").pixels, pixels);

    // CLIPTextEncodeFlux with the prompt for both towers and guidance 3.5 is CLIPTextEncode at
    // the default guidance; another CLIP-L text changes the pooled vector and so the image.
    let encode_flux = |clip_l: &str| {
        let mut p = prompt.clone();
        let text = p["194:49"]["inputs"]["text"].as_str().unwrap().to_string();
        let clip_l = if clip_l.is_empty() {
            text.clone()
        } else {
            clip_l.to_string()
        };
        p["194:49"] = json!({"class_type": "CLIPTextEncodeFlux", "inputs": {
            "clip": ["194:47", 0], "clip_l": clip_l, "t5xxl": text, "guidance": 3.5}});
        p
    };
    let same = read_png(&run(&server, &encode_flux(""), &ui, "flux_enc")).pixels;
    assert_eq!(same, pixels);
    let other = read_png(&run(&server, &encode_flux("a red car"), &ui, "flux_enc2")).pixels;
    assert_ne!(other, pixels);

    // `flux_schnell_full_text_to_image` (CLIPTextEncodeFlux), on the same transformer file.
    let models = server.dir.join("models/diffusion_models");
    std::fs::copy(
        models.join("flux1-dev.safetensors"),
        models.join("flux1-schnell.safetensors"),
    )
    .unwrap();
    let mut schnell = workflow("flux_schnell_full_text_to_image_api");
    edit_api(&mut schnell, "EmptySD3LatentImage", |i| {
        i["width"] = json!(WIDTH);
        i["height"] = json!(HEIGHT);
    });
    edit_api(&mut schnell, "KSampler", |i| i["steps"] = json!(2));
    let schnell_ui = workflow("flux_schnell_full_text_to_image_ui");
    let png = read_png(&run(&server, &schnell, &schnell_ui, "schnell"));
    assert_eq!(png.size, (WIDTH as u32, HEIGHT as u32));

    // `flux_kontext_dev_basic` (FluxKontextImageScale, ReferenceLatent): the 40×30 input goes
    // to Kontext's nearest size (1184×880), whose latent is both the reference and the latent
    // sampled; on the same transformer file with the fp16 T5, 2 steps. Without the reference
    // the image differs.
    std::fs::copy(
        models.join("flux1-dev.safetensors"),
        models.join("flux1-dev-kontext_fp8_scaled.safetensors"),
    )
    .unwrap();
    let mut kontext = workflow("flux_kontext_dev_basic_api");
    kontext["192:38"]["inputs"]["clip_name2"] = json!("t5xxl_fp16.safetensors");
    kontext["192:31"]["inputs"]["steps"] = json!(2);
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]))
        .save(input.join("flux_kontext_dev_basic_input_image.jpg"))
        .unwrap();
    let kontext_ui = workflow("flux_kontext_dev_basic_ui");
    let edited = read_png(&run(&server, &kontext, &kontext_ui, "kontext"));
    assert_eq!(edited.size, (1184, 880));
    let mut plain = kontext.clone();
    plain["192:35"]["inputs"]["conditioning"] = json!(["192:6", 0]);
    let unreferenced = read_png(&run(&server, &plain, &kontext_ui, "kontext_plain"));
    assert_ne!(unreferenced.pixels, edited.pixels);

    // T5-XXL files carry no tokenizer: without t5_tokenizer/spiece.model the error says where
    // it goes.
    std::fs::remove_dir_all(server.dir.join("models/text_encoders/t5_tokenizer")).unwrap();
    let out = cli_run(&file, &server.dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("t5_tokenizer/spiece.model"), "{stderr}");
}

/// `flux_schnell`: CheckpointLoaderSimple on an all-in-one FP8 checkpoint (schnell transformer,
/// CLIP-L, T5-XXL, autoencoder) gives the same image as the same weights through UNETLoader,
/// DualCLIPLoader and VAELoader. `flux_dev_checkpoint_example` and `flux1_krea_dev` (their
/// subgraphs) run on the dev file.
#[test]
fn flux_checkpoint_and_dev_templates_make_pngs() {
    let server = Server::start(&[]);
    reference::run_into("flux_workflow_fixtures.py", &server.dir);
    let small = |name: &str| {
        let mut prompt = workflow(&format!("{name}_api"));
        edit_api(&mut prompt, "EmptySD3LatentImage", |i| {
            i["width"] = json!(WIDTH);
            i["height"] = json!(HEIGHT);
        });
        edit_api(&mut prompt, "KSampler", |i| i["steps"] = json!(2));
        (prompt, workflow(&format!("{name}_ui")))
    };

    let (schnell, ui) = small("flux_schnell");
    let packed = read_png(&run(&server, &schnell, &ui, "schnell"));
    assert_eq!(packed.size, (WIDTH as u32, HEIGHT as u32));
    let mut split = schnell.clone();
    split["30"] = json!({"class_type": "UNETLoader", "inputs": {
        "unet_name": "flux1-schnell-fp8-split.safetensors", "weight_dtype": "default"}});
    split["40"] = json!({"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp8_e4m3fn.safetensors",
        "type": "flux"}});
    split["41"] = json!({"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}});
    for id in ["6", "33"] {
        split[id]["inputs"]["clip"] = json!(["40", 0]);
    }
    split["8"]["inputs"]["vae"] = json!(["41", 0]);
    let loose = read_png(&run(&server, &split, &ui, "schnell_split"));
    assert_eq!(loose.pixels, packed.pixels);

    let models = server.dir.join("models/diffusion_models");
    std::fs::copy(
        models.join("flux1-dev.safetensors"),
        models.join("flux1-krea-dev_fp8_scaled.safetensors"),
    )
    .unwrap();
    let (dev, ui) = small("flux_dev_checkpoint_example");
    let dev = read_png(&run(&server, &dev, &ui, "dev"));
    assert_eq!(dev.size, (WIDTH as u32, HEIGHT as u32));
    let (krea, ui) = small("flux1_krea_dev");
    let krea = read_png(&run(&server, &krea, &ui, "krea"));
    assert_eq!(krea.size, (WIDTH as u32, HEIGHT as u32));
    assert_ne!(krea.pixels, dev.pixels, "another prompt and seed");
}

#[test]
fn sdxl_base_and_refiner_template_makes_pngs_through_the_server_and_the_cli() {
    let server = Server::start(&[]);
    reference::run_into("sdxl_workflow_fixtures.py", &server.dir);
    let ui = workflow("sdxl_simple_example_ui");
    // 64×64 (the refiner's four levels need a latent divisible by 8), 4 steps, refiner from 3.
    let mut prompt = workflow("sdxl_simple_example_api");
    edit_api(&mut prompt, "EmptyLatentImage", |i| {
        i["width"] = json!(64);
        i["height"] = json!(64);
    });
    edit_api(&mut prompt, "KSamplerAdvanced", |i| {
        i["steps"] = json!(4);
        if i["end_at_step"] == 20 {
            i["end_at_step"] = json!(3);
        }
        if i["start_at_step"] == 20 {
            i["start_at_step"] = json!(3);
        }
    });
    let png = read_png(&run(&server, &prompt, &ui, "sdxl"));
    assert_eq!(png.size, (64, 64));
    assert!(png.text.iter().any(|(k, _)| k == "workflow"));

    // CLIPTextEncodeSDXL (for both base prompts, so they still share a batch) with the
    // latent's own size and no crop is what CLIPTextEncode gives (ComfyUI's defaults); a crop
    // changes the ADM vector and so the image.
    let sdxl_encode = |crop_w: i64| {
        let mut p = prompt.clone();
        for id in ["6", "7"] {
            let text = p[id]["inputs"]["text"].clone();
            p[id] = json!({"class_type": "CLIPTextEncodeSDXL", "inputs": {
                "clip": ["4", 1], "width": 64, "height": 64, "crop_w": crop_w, "crop_h": 0,
                "target_width": 64, "target_height": 64, "text_g": text, "text_l": text}});
        }
        p
    };
    let same = read_png(&run(&server, &sdxl_encode(0), &ui, "sdxl0")).pixels;
    assert_eq!(same, png.pixels);
    let cropped = read_png(&run(&server, &sdxl_encode(16), &ui, "sdxl16")).pixels;
    assert_ne!(cropped, png.pixels);

    // LoraLoader's text-encoder half changes the base prompts' encoding; at strength 0 it
    // leaves them alone. An `embedding:` file changes the prompt, a missing one is dropped.
    let with_lora = |strength_clip: f64| {
        let mut p = prompt.clone();
        p["20"] = json!({"class_type": "LoraLoader", "inputs": {
            "model": ["4", 0], "clip": ["4", 1], "lora_name": "sdxl_te_lora.safetensors",
            "strength_model": 0.0, "strength_clip": strength_clip}});
        for id in ["6", "7"] {
            p[id]["inputs"]["clip"] = json!(["20", 1]);
        }
        p
    };
    // The inpainting encoders: the base model samples from VAEEncodeForInpaint's latent (its
    // grown mask as the noise mask), and from InpaintModelConditioning's (its concat image and
    // mask on the prompts, which the plain SDXL model does not take, as in ComfyUI).
    let inpaint = |conditioning: bool| {
        let mut p = prompt.clone();
        p["30"] = json!({"class_type": "EmptyImage", "inputs": {"width": 70, "height": 66, "batch_size": 1, "color": 0x4080c0}});
        p["31"] =
            json!({"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 20, "height": 20}});
        p["32"] =
            json!({"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 70, "height": 66}});
        p["33"] = json!({"class_type": "MaskComposite", "inputs": {"destination": ["32", 0], "source": ["31", 0], "x": 10, "y": 10, "operation": "add"}});
        if conditioning {
            p["34"] = json!({"class_type": "InpaintModelConditioning", "inputs": {"positive": ["6", 0], "negative": ["7", 0],
                "vae": ["4", 2], "pixels": ["30", 0], "mask": ["33", 0], "noise_mask": true}});
            p["10"]["inputs"]["positive"] = json!(["34", 0]);
            p["10"]["inputs"]["negative"] = json!(["34", 1]);
            p["10"]["inputs"]["latent_image"] = json!(["34", 2]);
        } else {
            p["34"] = json!({"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["30", 0], "vae": ["4", 2], "mask": ["33", 0], "grow_mask_by": 6}});
            p["10"]["inputs"]["latent_image"] = json!(["34", 0]);
        }
        p
    };
    let for_inpaint = read_png(&run(&server, &inpaint(false), &ui, "inpaint")).pixels;
    let conditioned = read_png(&run(&server, &inpaint(true), &ui, "inpaint_cond"));
    assert_eq!(conditioned.size, (64, 64), "cut to whole latent cells");
    assert_ne!(for_inpaint, png.pixels);
    let lora_off = read_png(&run(&server, &with_lora(0.0), &ui, "lora0")).pixels;
    assert_eq!(lora_off, png.pixels);
    let lora_on = read_png(&run(&server, &with_lora(1.0), &ui, "lora1")).pixels;
    assert_ne!(lora_on, png.pixels);
    let with_word = |word: &str| {
        let mut p = prompt.clone();
        let text = p["6"]["inputs"]["text"].as_str().unwrap().to_string();
        p["6"]["inputs"]["text"] = json!(format!("{text} {word}"));
        p
    };
    let missing = read_png(&run(&server, &with_word("embedding:absent"), &ui, "ti0")).pixels;
    assert_eq!(missing, png.pixels);
    let embedded = read_png(&run(&server, &with_word("embedding:tiny_ti"), &ui, "ti1")).pixels;
    assert_ne!(embedded, png.pixels);

    // The shipped UI file (PrimitiveNodes for the steps and prompts) through `videosdgx run`.
    let mut small = ui.clone();
    for node in small["nodes"].as_array_mut().unwrap() {
        let key = (
            node["type"].as_str().unwrap().to_string(),
            node["id"].as_i64().unwrap(),
        );
        let values = &mut node["widgets_values"];
        match (key.0.as_str(), key.1) {
            ("EmptyLatentImage", _) => {
                values[0] = json!(64);
                values[1] = json!(64);
            }
            ("PrimitiveNode", 45) => values[0] = json!(4),
            ("PrimitiveNode", 47) => values[0] = json!(3),
            _ => {}
        }
    }
    let file = server.dir.join("sdxl_small_ui.json");
    assert_eq!(cli_png(&server, &small, &file, "19").pixels, png.pixels);

    // `sdxlturbo_example` (SDTurboScheduler's one step from timestep 999, euler_ancestral) on
    // the base checkpoint's layout.
    let checkpoints = server.dir.join("models/checkpoints");
    std::fs::copy(
        checkpoints.join("sd_xl_base_1.0.safetensors"),
        checkpoints.join("sd_xl_turbo_1.0_fp16.safetensors"),
    )
    .unwrap();
    let mut turbo = workflow("sdxlturbo_example_api");
    edit_api(&mut turbo, "EmptyLatentImage", |i| {
        i["width"] = json!(64);
        i["height"] = json!(64);
    });
    let turbo_ui = workflow("sdxlturbo_example_ui");
    let one = read_png(&run(&server, &turbo, &turbo_ui, "turbo"));
    assert_eq!(one.size, (64, 64));
    // Half the denoise starts from timestep 499: another image.
    edit_api(&mut turbo, "SDTurboScheduler", |i| {
        i["denoise"] = json!(0.5)
    });
    let half = read_png(&run(&server, &turbo, &turbo_ui, "turbo_half"));
    assert_ne!(half.pixels, one.pixels);

    // `sdxl_refiner_prompt_example`: the refiner's prompts through plain CLIPTextEncode, which
    // gives them the refiner's default aesthetic scores (6 positive, 2.5 negative).
    let mut refined = workflow("sdxl_refiner_prompt_example_api");
    edit_api(&mut refined, "EmptyLatentImage", |i| {
        i["width"] = json!(64);
        i["height"] = json!(64);
    });
    edit_api(&mut refined, "KSamplerAdvanced", |i| {
        i["steps"] = json!(4);
        for at in ["start_at_step", "end_at_step"] {
            if i[at] == 20 {
                i[at] = json!(3);
            }
        }
    });
    let refined_ui = workflow("sdxl_refiner_prompt_example_ui");
    let png = read_png(&run(&server, &refined, &refined_ui, "refiner_prompt"));
    assert_eq!(png.size, (64, 64));
    let with_scores = |positive: f64, negative: f64| {
        let mut p = refined.clone();
        for (id, ascore) in [("15", positive), ("16", negative)] {
            let text = p[id]["inputs"]["text"].clone();
            p[id] = json!({"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
                "clip": ["12", 1], "ascore": ascore, "width": 64, "height": 64, "text": text}});
        }
        p
    };
    let scored = read_png(&run(&server, &with_scores(6.0, 2.5), &refined_ui, "ascore"));
    assert_eq!(scored.pixels, png.pixels);
    let other = read_png(&run(
        &server,
        &with_scores(6.0, 6.0),
        &refined_ui,
        "ascore6",
    ));
    assert_ne!(other.pixels, png.pixels);
}

/// `sdxl_revision_text_prompts`: two images' CLIP vision embeddings through unCLIPConditioning
/// replace the base prompt's pooled vector (noise-augmented with the sampler's seed, as
/// ComfyUI's `sdxl_pooled` does); each image reaches the result, and strength 0 leaves the text
/// prompt alone.
#[test]
fn sdxl_revision_template_conditions_on_images() {
    let server = Server::start(&[]);
    reference::run_into("sdxl_workflow_fixtures.py", &server.dir);
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    for (n, tint) in [(1, 40u8), (2, 210)] {
        image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([tint, x as u8 * 5, y as u8 * 6]))
            .save(input.join(format!("sdxl_revision_text_prompts_ref_image{n}.png")))
            .unwrap();
    }
    let mut prompt = workflow("sdxl_revision_text_prompts_api");
    edit_api(&mut prompt, "EmptyLatentImage", |i| {
        i["width"] = json!(64);
        i["height"] = json!(64);
    });
    edit_api(&mut prompt, "KSampler", |i| i["steps"] = json!(3));
    let ui = workflow("sdxl_revision_text_prompts_ui");
    let revised = read_png(&run(&server, &prompt, &ui, "revision"));
    assert_eq!(revised.size, (64, 64));

    let mut same_images = prompt.clone();
    same_images["38"]["inputs"]["image"] = json!("sdxl_revision_text_prompts_ref_image1.png");
    let same = read_png(&run(&server, &same_images, &ui, "revision_same"));
    assert_ne!(
        same.pixels, revised.pixels,
        "the second image changed nothing"
    );

    let mut text_only = prompt.clone();
    text_only["3"]["inputs"]["positive"] = json!(["6", 0]);
    let text = read_png(&run(&server, &text_only, &ui, "revision_text")).pixels;
    let mut off = prompt.clone();
    edit_api(&mut off, "unCLIPConditioning", |i| {
        i["strength"] = json!(0.0)
    });
    assert_eq!(
        read_png(&run(&server, &off, &ui, "revision_off")).pixels,
        text
    );
    assert_ne!(text, revised.pixels);
}

/// `flux_fill_inpaint_example`, `flux_fill_outpaint_example` (FLUX.1 Fill: the image's latent and
/// its 8×8-packed mask as 80 more input channels; DifferentialDiffusion) and
/// `flux_canny_model_example` (FLUX.1 Canny: the edge image's latent through
/// InstructPixToPixConditioning), 2 steps each on tiny models of those layouts.
#[test]
fn flux_fill_and_canny_templates_condition_through_their_extra_channels() {
    let server = Server::start(&[]);
    reference::run_into("flux_workflow_fixtures.py", &server.dir);
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    // The inpainting input's transparent rectangle is the mask; its edges fall between the
    // latent cells' sample points, so the latent mask has fractional edges for
    // DifferentialDiffusion to threshold.
    image::RgbaImage::from_fn(40, 32, |x, y| {
        let hole = (12..28).contains(&x) && (12..20).contains(&y);
        image::Rgba([x as u8 * 6, y as u8 * 8, 90, if hole { 0 } else { 255 }])
    })
    .save(input.join("flux_fill_inpaint_example_input_image.png"))
    .unwrap();
    let picture = image::RgbImage::from_fn(40, 32, |x, y| {
        image::Rgb([
            x as u8 * 6,
            y as u8 * 8,
            if (x / 8 + y / 8) % 2 == 0 { 20 } else { 220 },
        ])
    });
    for name in ["flux_fill_outpaint_example", "flux_canny_model_example"] {
        picture
            .save(input.join(format!("{name}_input_image.png")))
            .unwrap();
    }
    let small = |name: &str| {
        let mut prompt = workflow(&format!("{name}_api"));
        edit_api(&mut prompt, "KSampler", |i| i["steps"] = json!(2));
        (prompt, workflow(&format!("{name}_ui")))
    };

    let (inpaint, ui) = small("flux_fill_inpaint_example");
    let filled = read_png(&run(&server, &inpaint, &ui, "fill"));
    assert_eq!(filled.size, (40, 32));
    // DifferentialDiffusion's thresholded mask changes the result.
    let mut plain = inpaint.clone();
    plain["47:3"]["inputs"]["model"] = json!(["47:31", 0]);
    let undifferentiated = read_png(&run(&server, &plain, &ui, "fill_plain"));
    assert!(
        undifferentiated.pixels != filled.pixels,
        "DifferentialDiffusion changed nothing"
    );

    let (outpaint, ui) = small("flux_fill_outpaint_example");
    assert_eq!(
        read_png(&run(&server, &outpaint, &ui, "outpaint")).size,
        (840, 432)
    );

    // `image_flux.1_fill_dev_OneReward`: the inpainting subgraph with OneReward's fill model and
    // its removal LoRA (the outpainting one is muted in the template); its previews. The LoRA
    // reaches the image.
    image::RgbaImage::from_fn(40, 32, |x, y| {
        let hole = (12..28).contains(&x) && (12..20).contains(&y);
        image::Rgba([x as u8 * 6, y as u8 * 8, 90, if hole { 0 } else { 255 }])
    })
    .save(input.join("image_flux.1_fill_dev_OneReward_input_image.png"))
    .unwrap();
    let (reward, _) = small("image_flux.1_fill_dev_OneReward");
    let preview = |prompt: &Value| {
        let history = server.run_ok(prompt, T);
        let record = &history["outputs"]["105"]["images"][0];
        assert_eq!(record["type"], "temp");
        read_png(
            &server
                .dir
                .join("temp")
                .join(record["filename"].as_str().unwrap()),
        )
    };
    let removed = preview(&reward);
    assert_eq!(removed.size, (40, 32));
    let mut without_lora = reward.clone();
    without_lora["108:100"]["inputs"]["strength_model"] = json!(0.0);
    assert!(
        preview(&without_lora).pixels != removed.pixels,
        "the LoRA changed nothing"
    );

    let (canny, ui) = small("flux_canny_model_example");
    let edged = read_png(&run(&server, &canny, &ui, "canny"));
    assert_eq!(edged.size, (40, 32));
    // The edges reach the model: no edges (thresholds above any gradient), another image.
    let mut blank = canny.clone();
    blank["18"]["inputs"]["low_threshold"] = json!(0.99);
    blank["18"]["inputs"]["high_threshold"] = json!(0.99);
    let blank = read_png(&run(&server, &blank, &ui, "canny_blank"));
    assert!(
        blank.pixels != edged.pixels,
        "the edge image changed nothing"
    );
}

/// `flux_redux_model_example`: two reference images through SigLIP and FLUX.1 Redux's projector,
/// their tokens appended to the prompt's (StyleModelApply, multiply), then sampled with
/// SamplerCustomAdvanced. Each image reaches the result; strength 0 zeroes its tokens, which
/// still count in the attention.
#[test]
fn flux_redux_template_appends_image_tokens() {
    let server = Server::start(&[]);
    reference::run_into("flux_workflow_fixtures.py", &server.dir);
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    for (n, tint) in [(1, 30u8), (2, 220)] {
        image::RgbImage::from_fn(70, 50, |x, y| image::Rgb([x as u8 * 3, y as u8 * 4, tint]))
            .save(input.join(format!("flux_redux_model_example_reference_image_{n}.png")))
            .unwrap();
    }
    let mut prompt = workflow("flux_redux_model_example_api");
    for id in ["27", "30"] {
        prompt[id]["inputs"]["width"] = json!(WIDTH);
        prompt[id]["inputs"]["height"] = json!(HEIGHT);
    }
    prompt["17"]["inputs"]["steps"] = json!(2);
    let ui = workflow("flux_redux_model_example_ui");
    let styled = read_png(&run(&server, &prompt, &ui, "redux"));
    assert_eq!(styled.size, (WIDTH as u32, HEIGHT as u32));

    let mut one_image = prompt.clone();
    one_image["22"]["inputs"]["conditioning"] = json!(["41", 0]);
    let single = read_png(&run(&server, &one_image, &ui, "redux_one"));
    assert_ne!(
        single.pixels, styled.pixels,
        "the second image changed nothing"
    );
    let mut other = prompt.clone();
    other["47"]["inputs"]["image"] = json!("flux_redux_model_example_reference_image_1.png");
    let swapped = read_png(&run(&server, &other, &ui, "redux_swap"));
    assert_ne!(
        swapped.pixels, styled.pixels,
        "the image's content changed nothing"
    );
    // attn_bias at strength 1 is multiply at 1; other attn_bias strengths say they are missing.
    let mut bias = prompt.clone();
    bias["45"]["inputs"]["strength_type"] = json!("attn_bias");
    assert_eq!(
        read_png(&run(&server, &bias, &ui, "redux_bias")).pixels,
        styled.pixels
    );
    bias["45"]["inputs"]["strength"] = json!(0.5);
    let error = server.run_failing(&bias, T);
    assert_eq!(error["node_type"], "StyleModelApply");
    let message = error["exception_message"].as_str().unwrap();
    assert!(message.contains("attn_bias"), "{message}");
}

/// `flux_depth_lora_example`: Lotus-D's depth map of the input conditions FLUX.1-dev (UNETLoader
/// on an all-in-one FP8 checkpoint) through BFL's depth control LoRA, which widens `img_in` to
/// the depth latent's channels, adds its biases and replaces the norm gains. The image equals
/// the one from the transformer the fixture merged as ComfyUI merges it (ComfyUI's own
/// `convert_lora` + `calculate_weight` give that merge exactly).
#[test]
fn flux_depth_lora_template_equals_the_merged_model() {
    let server = Server::start(&[]);
    reference::run_into("flux_workflow_fixtures.py", &server.dir);
    reference::run_into("lotus_reference.py", &server.dir);
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_fn(60, 44, |x, y| {
        image::Rgb([x as u8 * 4, y as u8 * 5, if x > 30 { 200 } else { 40 }])
    })
    .save(input.join("flux_depth_lora_example_input_image.png"))
    .unwrap();
    let mut prompt = workflow("flux_depth_lora_example_api");
    edit_api(&mut prompt, "KSampler", |i| i["steps"] = json!(2));
    // The least it takes, 0.01 megapixels (120×88 from 60×44), instead of one.
    edit_api(&mut prompt, "ImageScaleToTotalPixels", |i| {
        i["megapixels"] = json!(0.01)
    });
    let ui = workflow("flux_depth_lora_example_ui");
    let with_lora = read_png(&run(&server, &prompt, &ui, "depth"));
    assert_eq!(with_lora.size, (120, 88));

    let mut merged = prompt.clone();
    merged["150:31"]["inputs"]["unet_name"] = json!("flux1-dev-depth-merged.safetensors");
    merged["150:3"]["inputs"]["model"] = json!(["150:31", 0]);
    let reference = read_png(&run(&server, &merged, &ui, "depth_merged"));
    let worst = reference
        .pixels
        .iter()
        .zip(&with_lora.pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "LoRA against merged model: {worst} levels apart"
    );

    // At strength 0 the LoRA is not loaded: the 16-channel model ignores the depth latent.
    let mut off = prompt.clone();
    off["150:37"]["inputs"]["strength_model"] = json!(0.0);
    let plain = read_png(&run(&server, &off, &ui, "depth_off"));
    assert_ne!(plain.pixels, with_lora.pixels);
}
