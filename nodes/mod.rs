//! Built-in nodes, one file per family.

mod ar_video;
mod audio;
mod audio_edit;
mod audio_encoder;
mod bernini;
mod conditioning;
mod context_windows;
mod encoders;
mod flux;
mod guidance;
mod image;
mod image_compare;
mod image_files;
mod image_transform;
mod latent;
mod loaders;
mod logic;
mod mask;
mod math;
mod media_files;
mod media_save;
mod number_convert;
mod painter;
mod preview;
mod primitive;
mod rope;
mod sampling;
mod sdxl;
mod string;
pub mod testing;
mod video;
mod wan;
mod wan_animate2;
mod wan_humo;
mod wan_move;
mod wan_sound;
mod wan_talk;

use crate::engine::registry::Registry;

/// Registers every built-in node in `/object_info` order.
pub fn register_builtin(registry: &mut Registry) {
    image_files::register(registry);
    image::register(registry);
    image_transform::register(registry);
    painter::register(registry);
    image_compare::register(registry);
    mask::register(registry);
    primitive::register(registry);
    latent::register(registry);
    sampling::register(registry);
    ar_video::register(registry);
    guidance::register(registry);
    context_windows::register(registry);
    rope::register(registry);
    conditioning::register(registry);
    video::register(registry);
    audio::register(registry);
    audio_edit::register(registry);
    loaders::register(registry);
    encoders::register(registry);
    audio_encoder::register(registry);
    wan::register(registry);
    wan_move::register(registry);
    wan_sound::register(registry);
    wan_talk::register(registry);
    wan_humo::register(registry);
    wan_animate2::register(registry);
    bernini::register(registry);
    flux::register(registry);
    sdxl::register(registry);
    logic::register(registry);
    preview::register(registry);
    math::register(registry);
    number_convert::register(registry);
    string::register(registry);
}
