//! ResizeImagesByLongerEdge and ResizeImagesByShorterEdge (`comfy_extras/nodes_dataset.py`,
//! deprecated there but still in the LTX-2 image-to-video templates): each image scaled by
//! Pillow's Lanczos so that one edge takes the given length, the other truncated to keep the
//! aspect.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::imageio::to_u8;
use crate::pil_resample::resize_lanczos;

#[derive(Clone, Copy)]
enum Edge {
    Longer,
    Shorter,
}

/// The new `(width, height)`: Python's `int(side * (edge / other))` for the other side.
/// Ties go to the height for the longer edge and to the width for the shorter, as upstream's
/// comparisons do.
fn target(edge: Edge, (w, h): (i64, i64), length: i64) -> (i64, i64) {
    let scaled = |side: i64, by: i64| (side as f64 * (length as f64 / by as f64)) as i64;
    let width_is_set = match edge {
        Edge::Longer => w > h,
        Edge::Shorter => w < h,
    };
    if width_is_set {
        (length, scaled(h, w))
    } else {
        (scaled(w, h), length)
    }
}

fn resize_each(images: &Tensor, edge: Edge, length: i64) -> Result<Tensor, NodeError> {
    let mut frames = Vec::new();
    for i in 0..images.size()[0] {
        let (bytes, w, h, c) = to_u8(&images.get(i))?;
        let (nw, nh) = target(edge, (w as i64, h as i64), length);
        if nw < 1 || nh < 1 {
            return Err(NodeError::value(format!(
                "Cannot resize a {w}×{h} image to {nw}×{nh}"
            )));
        }
        let out = resize_lanczos(
            &bytes,
            (w as usize, h as usize, c),
            (nw as usize, nh as usize),
        )?;
        frames.push(Tensor::from_slice(&out).view([nh, nw, c as i64]));
    }
    // Images of one batch share a size, so their resized frames do too.
    Ok(Tensor::stack(&frames, 0).to_kind(Kind::Float) / 255.0)
}

fn run(edge: Edge, key: &'static str) -> impl Fn(&Inputs, &ExecContext) -> NodeResult {
    move |i, _| {
        let out = resize_each(i.tensor("images")?, edge, i.int(key)?)?;
        Ok(NodeOutput::one(Value::tensor(out)))
    }
}

fn def(id: &str, edge: Edge, key: &'static str, display: &str, description: &str) -> NodeDef {
    NodeDef::new(id, Style::V3, Arc::new(run(edge, key)))
        .display(display)
        .description(description)
        .category("image/transform")
        .module("comfy_extras.nodes_dataset")
        .deprecated()
        .experimental()
        .input(InputDef::new("images", "IMAGE").tooltip("Image to process."))
}

pub fn register(r: &mut Registry) {
    r.add(
        def(
            "ResizeImagesByShorterEdge",
            Edge::Shorter,
            "shorter_edge",
            "Resize Images by Shorter Edge (DEPRECATED)",
            "Resize images so that the shorter edge matches the specified dimension while \
             preserving aspect ratio.",
        )
        .input(
            InputDef::int("shorter_edge")
                .default(512)
                .min(1)
                .max(8192)
                .tooltip("Target dimension for the shorter edge."),
        )
        .named_output("IMAGE", "images")
        .output_tooltip("Processed images"),
    );
    r.add(
        def(
            "ResizeImagesByLongerEdge",
            Edge::Longer,
            "longer_edge",
            "Resize Images by Longer Edge (DEPRECATED)",
            "Resize images so that the longer edge matches the specified dimension while \
             preserving aspect ratio.",
        )
        .input(
            InputDef::int("longer_edge")
                .default(1024)
                .min(1)
                .max(8192)
                .tooltip("Target dimension for the longer edge."),
        )
        .named_output("IMAGE", "images")
        .output_tooltip("Processed images"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_side_is_truncated() {
        assert_eq!(target(Edge::Longer, (1000, 667), 512), (512, 341));
        assert_eq!(target(Edge::Longer, (667, 1000), 512), (341, 512));
        assert_eq!(target(Edge::Longer, (300, 300), 128), (128, 128));
        assert_eq!(target(Edge::Shorter, (1000, 667), 512), (767, 512));
        assert_eq!(target(Edge::Shorter, (300, 300), 128), (128, 128));
    }
}
