//! Image nodes (`nodes.py`, `comfy_extras/nodes_images.py`). An IMAGE is a `[B, H, W, C]`
//! float tensor in 0..1.

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeFunction, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
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
    let start = i.int("batch_index")?.min(n - 1);
    let length = i.int("length")?.min(n - start);
    one(image.narrow(0, start, length).copy())
}

fn image_size(i: &Inputs, _: &ExecContext) -> NodeResult {
    let size = i.tensor("image")?.size();
    let values = vec![
        Value::Int(size[2] as i128),
        Value::Int(size[1] as i128),
        Value::Int(size[0] as i128),
    ];
    Ok(NodeOutput::values(values))
}

pub fn register(r: &mut Registry) {
    let dim = |name: &str, default: i64, min: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(1)
    };
    let image = || InputDef::new("image", "IMAGE");
    r.add(
        v1("EmptyImage", "EmptyImage", "image", empty_image)
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
        v1("ImageInvert", "Invert Image", "image", invert)
            .input(image())
            .output("IMAGE"),
    );
    r.add(
        v1("ImageScale", "Upscale Image", "image/upscaling", scale)
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
        v1("ImageBatch", "Batch Images", "image", batch)
            .input(InputDef::new("image1", "IMAGE"))
            .input(InputDef::new("image2", "IMAGE"))
            .output("IMAGE"),
    );
    r.add(
        v3("ImageCrop", "Image Crop", "image/transform", crop)
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
        .input(image())
        .input(InputDef::int("amount").default(1).min(1).max(4096))
        .output("IMAGE"),
    );
    r.add(
        v3(
            "ImageFromBatch",
            "Image From Batch",
            "image/batch",
            from_batch,
        )
        .input(image())
        .input(InputDef::int("batch_index").default(0).min(0).max(4095))
        .input(InputDef::int("length").default(1).min(1).max(4096))
        .output("IMAGE"),
    );
    r.add(
        v3("GetImageSize", "Get Image Size", "image", image_size)
            .input(image())
            .named_output("INT", "width")
            .named_output("INT", "height")
            .named_output("INT", "batch_size"),
    );
}
