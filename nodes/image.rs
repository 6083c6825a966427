//! Image nodes (`nodes.py`, `comfy_extras/nodes_images.py`). An IMAGE is a `[B, H, W, C]`
//! float tensor in 0..1.

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
    MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::upscale::{common_upscale, py_round};

const UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
const CROP_METHODS: &[&str] = &["disabled", "center"];

fn v1(name: &str, display: &str, category: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V1, display, category, f)
}

fn v3(name: &str, display: &str, category: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, display, category, f).module("comfy_extras.nodes_images")
}

fn one(t: Tensor) -> NodeResult {
    Ok(NodeOutput::one(Value::tensor(t)))
}

fn empty_image(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (w, h, b, color) = (
        i.int("width")?,
        i.int("height")?,
        i.int("batch_size")?,
        i.int("color")?,
    );
    let channel = |shift: i64| {
        let v = ((color >> shift) & 0xFF) as f64 / 255.0;
        Tensor::full([b, h, w, 1], v, (Kind::Float, tch::Device::Cpu))
    };
    one(Tensor::cat(&[channel(16), channel(8), channel(0)], -1))
}

fn invert(i: &Inputs, _: &ExecContext) -> NodeResult {
    one(1.0 - i.tensor("image")?)
}

fn scale(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (mut w, mut h) = (i.int("width")?, i.int("height")?);
    if w == 0 && h == 0 {
        return one(image.shallow_clone());
    }
    let samples = image.movedim(-1, 1);
    let size = samples.size();
    if w == 0 {
        w = py_round(size[3] as f64 * h as f64 / size[2] as f64).max(1);
    } else if h == 0 {
        h = py_round(size[2] as f64 * w as f64 / size[3] as f64).max(1);
    }
    let out = common_upscale(
        &samples,
        w,
        h,
        &i.string("upscale_method")?,
        &i.string("crop")?,
    )?;
    one(out.movedim(1, -1))
}

fn scale_by(i: &Inputs, _: &ExecContext) -> NodeResult {
    let samples = i.tensor("image")?.movedim(-1, 1);
    let factor = i.float("scale_by")?;
    let size = samples.size();
    let (w, h) = (
        py_round(size[3] as f64 * factor),
        py_round(size[2] as f64 * factor),
    );
    let out = common_upscale(&samples, w, h, &i.string("upscale_method")?, "disabled")?;
    one(out.movedim(1, -1))
}

fn batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (i.tensor("image1")?, i.tensor("image2")?);
    let (sa, sb) = (a.size(), b.size());
    let b = if sa[1..] != sb[1..] {
        common_upscale(&b.movedim(-1, 1), sa[2], sa[1], "bilinear", "center")?.movedim(1, -1)
    } else {
        b.shallow_clone()
    };
    one(Tensor::cat(&[a, &b], 0))
}

/// Inputs `images.image0` … of `BatchImagesNode`'s Autogrow.
const BATCH_IMAGE_INPUTS: usize = 50;

/// `BatchMasksNode` (`batch_masks`): every connected mask in one batch, each resized (bilinear,
/// centre crop) to the first one.
fn batch_masks(i: &Inputs, _: &ExecContext) -> NodeResult {
    let masks: Vec<&Tensor> = (0..BATCH_IMAGE_INPUTS)
        .filter_map(|n| i.opt_tensor(&format!("masks.mask{n}")))
        .collect();
    let first = masks
        .first()
        .ok_or_else(|| NodeError::value("BatchMasksNode needs at least one mask"))?
        .size();
    let resized = masks
        .iter()
        .map(|m| {
            if m.size()[1..] == first[1..] {
                Ok(m.shallow_clone())
            } else {
                let planes = m.unsqueeze(1);
                Ok(
                    common_upscale(&planes, first[2], first[1], "bilinear", "center")?
                        .squeeze_dim(1),
                )
            }
        })
        .collect::<anyhow::Result<Vec<Tensor>>>()?;
    one(Tensor::cat(&resized, 0))
}

/// `BatchImagesNode` (`batch_images`): every connected image in one batch, those with fewer
/// channels given one more (alpha 1), each resized (bilinear, center crop) to the first one.
fn batch_images(i: &Inputs, _: &ExecContext) -> NodeResult {
    let images: Vec<&Tensor> = (0..BATCH_IMAGE_INPUTS)
        .filter_map(|n| i.opt_tensor(&format!("images.image{n}")))
        .collect();
    let channels = images
        .iter()
        .map(|t| t.size()[3])
        .max()
        .ok_or_else(|| NodeError::value("BatchImagesNode needs at least one image"))?;
    let padded: Vec<Tensor> = images
        .iter()
        .map(|t| {
            if t.size()[3] < channels {
                t.constant_pad_nd([0, 1])
                    .index_fill(3, &Tensor::from_slice(&[t.size()[3]]), 1.0)
            } else {
                t.shallow_clone()
            }
        })
        .collect();
    let first = padded[0].size();
    let resized = padded
        .iter()
        .map(|t| {
            if t.size()[1..] == first[1..] {
                Ok(t.shallow_clone())
            } else {
                let frames = t.movedim(-1, 1);
                Ok(
                    common_upscale(&frames, first[2], first[1], "bilinear", "center")?
                        .movedim(1, -1),
                )
            }
        })
        .collect::<anyhow::Result<Vec<Tensor>>>()?;
    one(Tensor::cat(&resized, 0))
}

/// `ImagePadForOutpaint`: the image on a mid-grey canvas grown by the given margins, and a mask
/// that is 1 on the margins and, with `feathering`, rises as (1 − d/feathering)² towards the
/// padded edges inside the image.
fn pad_for_outpaint(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (left, top, right, bottom) = (
        i.int("left")?,
        i.int("top")?,
        i.int("right")?,
        i.int("bottom")?,
    );
    let feathering = i.int("feathering")?;
    let [n, h, w, c] = image.size()[..] else {
        return Err(NodeError::new("ValueError", "IMAGE must be [B, H, W, C]"));
    };
    let cpu = (Kind::Float, tch::Device::Cpu);
    let canvas = Tensor::full([n, h + top + bottom, w + left + right, c], 0.5, cpu);
    canvas
        .narrow(1, top, h)
        .narrow(2, left, w)
        .copy_(&image.to_kind(Kind::Float));
    let mask = Tensor::ones([h + top + bottom, w + left + right], cpu);
    let mut inner = vec![0f32; (h * w) as usize];
    if feathering > 0 && feathering * 2 < h && feathering * 2 < w {
        for y in 0..h {
            for x in 0..w {
                let from_top = if top != 0 { y } else { h };
                let from_bottom = if bottom != 0 { h - y } else { h };
                let from_left = if left != 0 { x } else { w };
                let from_right = if right != 0 { w - x } else { w };
                let d = from_top.min(from_bottom).min(from_left).min(from_right);
                if d < feathering {
                    let v = (feathering - d) as f32 / feathering as f32;
                    inner[(y * w + x) as usize] = v * v;
                }
            }
        }
    }
    mask.narrow(0, top, h)
        .narrow(1, left, w)
        .copy_(&Tensor::from_slice(&inner).view([h, w]));
    Ok(NodeOutput::values(vec![
        Value::tensor(canvas),
        Value::tensor(mask.unsqueeze(0)),
    ]))
}

/// `Canny` (`comfy_extras/nodes_canny.py`): kornia's edges of each image, as a grey IMAGE.
fn canny(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (low, high) = (i.float("low_threshold")?, i.float("high_threshold")?);
    let edges = crate::canny::canny(&image.movedim(-1, 1), low, high)
        .map_err(|e| NodeError::value(e.to_string()))?;
    one(edges.repeat([1, 3, 1, 1]).movedim(1, -1))
}

/// `JoinImageWithAlpha` (`comfy_extras/nodes_compositing.py`): RGB and `1 − mask` (resized
/// bilinearly to the image) as RGBA, both repeated to the larger batch.
fn join_image_with_alpha(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let mask = i.tensor("alpha")?.to_kind(image.kind());
    let [n, h, w, _] = image.size()[..] else {
        return Err(NodeError::value("IMAGE must be [B, H, W, C]"));
    };
    let ms = mask.size();
    let (mh, mw) = (ms[ms.len() - 2], ms[ms.len() - 1]);
    let resized = mask
        .reshape([-1, 1, mh, mw])
        .upsample_bilinear2d([h, w], false, None, None)
        .squeeze_dim(1);
    let alpha: Tensor = 1.0 - resized;
    let batch = n.max(alpha.size()[0]);
    let repeat = |t: &Tensor| crate::sampling::model::repeat_to_batch(t, batch);
    let rgb = repeat(image).narrow(3, 0, 3);
    one(Tensor::cat(&[rgb, repeat(&alpha).unsqueeze(-1)], -1))
}

fn crop(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let size = image.size();
    let (h, w) = (size[1], size[2]);
    let x = i.int("x")?.min(w - 1);
    let y = i.int("y")?.min(h - 1);
    let to_x = (i.int("width")? + x).min(w);
    let to_y = (i.int("height")? + y).min(h);
    one(image.slice(1, y, to_y, 1).slice(2, x, to_x, 1).contiguous())
}

fn repeat(i: &Inputs, _: &ExecContext) -> NodeResult {
    one(i.tensor("image")?.repeat([i.int("amount")?, 1, 1, 1]))
}

fn from_batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let n = image.size()[0];
    // A negative index counts from the end.
    let index = i.int("batch_index")?;
    let index = if index < 0 { index + n } else { index };
    let start = index.min(n - 1).max(0);
    let length = i.int("length")?.min(n - start);
    one(image.narrow(0, start, length).copy())
}

fn image_size(i: &Inputs, cx: &ExecContext) -> NodeResult {
    let size = i.tensor("image")?.size();
    cx.progress_text(&format!(
        "width: {}, height: {}\n batch size: {}",
        size[2], size[1], size[0]
    ));
    let values = vec![
        Value::Int(size[2] as i128),
        Value::Int(size[1] as i128),
        Value::Int(size[0] as i128),
    ];
    Ok(NodeOutput::values(values))
}

/// `RebatchImages` (`nodes_rebatch.py`, list in, list out): every image of the incoming batches
/// in order, regrouped into batches of `batch_size` (the last one shorter).
fn rebatch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let as_list = |name: &str| match i.get(name) {
        Some(Value::List(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    let size = match as_list("batch_size").first() {
        Some(Value::Int(n)) if *n >= 1 => *n as usize,
        _ => {
            return Err(NodeError::value(
                "batch_size must be an integer of at least 1",
            ))
        }
    };
    let mut frames = Vec::new();
    for item in as_list("images") {
        let Some(batch) = item.as_tensor() else {
            return Err(NodeError::value("images must be IMAGE batches"));
        };
        frames.extend(batch.split(1, 0));
    }
    let batches = frames
        .chunks(size)
        .map(|chunk| {
            Tensor::f_cat(chunk, 0)
                .map(Value::tensor)
                .map_err(|_| NodeError::runtime("images of different sizes cannot share a batch"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeOutput::one(Value::List(batches)))
}

pub fn register(r: &mut Registry) {
    let mut rebatch_node = NodeDef::builtin(
        "RebatchImages",
        Style::V3,
        "Rebatch Images",
        "image/batch",
        rebatch,
    )
    .module("comfy_extras.nodes_rebatch")
    .input(InputDef::new("images", "IMAGE"))
    .input(InputDef::int("batch_size").default(1).min(1).max(4096))
    .output("IMAGE")
    .list_output();
    rebatch_node.input_is_list = true;
    r.add(rebatch_node);
    r.add(
        NodeDef::builtin(
            "BatchMasksNode",
            Style::V3,
            "Batch Masks",
            "image/mask",
            batch_masks,
        )
        .module("comfy_extras.nodes_post_processing")
        .aliases(&["combine masks", "stack masks", "merge masks"])
        .input(InputDef::autogrow_prefix(
            "masks",
            InputDef::new("mask", "MASK"),
            "mask",
            1,
            BATCH_IMAGE_INPUTS,
        ))
        .output("MASK"),
    );
    r.add(
        NodeDef::builtin(
            "BatchImagesNode",
            Style::V3,
            "Batch Images",
            "image/batch",
            batch_images,
        )
        .module("comfy_extras.nodes_post_processing")
        .essentials("Image Tools")
        .aliases(&[
            "batch",
            "image batch",
            "batch images",
            "combine images",
            "merge images",
            "stack images",
        ])
        .input(InputDef::autogrow_prefix(
            "images",
            InputDef::new("image", "IMAGE"),
            "image",
            1,
            BATCH_IMAGE_INPUTS,
        ))
        .output("IMAGE"),
    );
    r.add(
        NodeDef::builtin(
            "JoinImageWithAlpha",
            Style::V3,
            "Join Image with Alpha",
            "image/compositing",
            join_image_with_alpha,
        )
        .module("comfy_extras.nodes_compositing")
        .aliases(&["add transparency", "apply alpha", "composite alpha", "RGBA"])
        .input(InputDef::new("image", "IMAGE"))
        .input(InputDef::new("alpha", "MASK"))
        .output("IMAGE"),
    );
    let threshold = |name: &str, default: f64| {
        InputDef::float(name)
            .default_float(default)
            .min_float(0.01)
            .max_float(0.99)
            .step_float(0.01)
    };
    r.add(
        NodeDef::builtin(
            "Canny",
            Style::V3,
            "Detect Edges (Canny)",
            "image/filters",
            canny,
        )
        .module("comfy_extras.nodes_canny")
        .essentials("Image Tools")
        .aliases(&["edge detection", "outline", "contour detection", "line art"])
        .input(InputDef::new("image", "IMAGE"))
        .input(threshold("low_threshold", 0.4))
        .input(threshold("high_threshold", 0.8))
        .output("IMAGE"),
    );
    let margin = |name: &str| {
        InputDef::int(name)
            .default(0)
            .min(0)
            .max(MAX_RESOLUTION)
            .step(8)
    };
    r.add(
        v1(
            "ImagePadForOutpaint",
            "Pad Image for Outpainting",
            "image/transform",
            pad_for_outpaint,
        )
        .aliases(&["extend canvas", "expand image"])
        .input(InputDef::new("image", "IMAGE"))
        .input(margin("left"))
        .input(margin("top"))
        .input(margin("right"))
        .input(margin("bottom"))
        .input(
            InputDef::int("feathering")
                .default(40)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(1)
                .opt("advanced", serde_json::json!(true)),
        )
        .output("IMAGE")
        .output("MASK"),
    );
    let dim = |name: &str, default: i64, min: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(1)
    };
    let image = || InputDef::new("image", "IMAGE");
    r.add(
        v1("EmptyImage", "Empty Image", "image", empty_image)
            .input(dim("width", 512, 1))
            .input(dim("height", 512, 1))
            .input(InputDef::int("batch_size").default(1).min(1).max(4096))
            .input(
                InputDef::int("color")
                    .default(0)
                    .min(0)
                    .max(0xFFFFFF)
                    .step(1)
                    .opt("display", "color".into()),
            )
            .output("IMAGE"),
    );
    r.add(
        v1("ImageInvert", "Invert Image Colors", "image/color", invert)
            .essentials("Image Tools")
            .aliases(&["reverse colors"])
            .input(image())
            .output("IMAGE"),
    );
    r.add(
        v1("ImageScale", "Upscale Image", "image/upscaling", scale)
            .essentials("Image Tools")
            .aliases(&[
                "resize",
                "resize image",
                "scale image",
                "image resize",
                "zoom",
                "zoom in",
                "change size",
            ])
            .input(image())
            .input(InputDef::combo("upscale_method", UPSCALE_METHODS))
            .input(dim("width", 512, 0))
            .input(dim("height", 512, 0))
            .input(InputDef::combo("crop", CROP_METHODS))
            .output("IMAGE"),
    );
    r.add(
        v1(
            "ImageScaleBy",
            "Upscale Image By",
            "image/upscaling",
            scale_by,
        )
        .essentials("Image Tools")
        .input(image())
        .input(InputDef::combo("upscale_method", UPSCALE_METHODS))
        .input(
            InputDef::float("scale_by")
                .default_float(1.0)
                .min_float(0.01)
                .max_float(8.0)
                .step_float(0.01),
        )
        .output("IMAGE"),
    );
    r.add(
        v1(
            "ImageBatch",
            "Batch Images (DEPRECATED)",
            "image/batch",
            batch,
        )
        .deprecated()
        .aliases(&["combine images", "merge images", "stack images"])
        .input(InputDef::new("image1", "IMAGE"))
        .input(InputDef::new("image2", "IMAGE"))
        .output("IMAGE"),
    );
    r.add(
        v3(
            "ImageCrop",
            "Crop Image (DEPRECATED)",
            "image/transform",
            crop,
        )
        .deprecated()
        .essentials("Image Tools")
        .aliases(&["trim"])
        .input(image())
        .input(dim("width", 512, 1))
        .input(dim("height", 512, 1))
        .input(dim("x", 0, 0))
        .input(dim("y", 0, 0))
        .output("IMAGE"),
    );
    r.add(
        v3(
            "RepeatImageBatch",
            "Repeat Image Batch",
            "image/batch",
            repeat,
        )
        .aliases(&["duplicate image", "clone image"])
        .input(image())
        .input(InputDef::int("amount").default(1).min(1).max(4096))
        .output("IMAGE"),
    );
    r.add(
        v3(
            "ImageFromBatch",
            "Get Image from Batch",
            "image/batch",
            from_batch,
        )
        .aliases(&["select image", "pick from batch", "extract image"])
        .input(image())
        .input(
            InputDef::int("batch_index")
                .default(0)
                .min(-MAX_RESOLUTION)
                .max(MAX_RESOLUTION),
        )
        .input(InputDef::int("length").default(1).min(1).max(4096))
        .output("IMAGE"),
    );
    r.add(
        v3("GetImageSize", "Get Image Size", "image", image_size)
            .description("Returns width and height of the image, and passes it through unchanged.")
            .aliases(&["dimensions", "resolution", "image info"])
            .input(image())
            .input(InputDef::hidden("unique_id", "UNIQUE_ID"))
            .named_output("INT", "width")
            .named_output("INT", "height")
            .named_output("INT", "batch_size"),
    );
}
