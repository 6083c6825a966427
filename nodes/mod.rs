//! Built-in nodes, one file per family.

mod audio;
mod image;
mod image_files;
mod mask;
mod media_files;
mod media_save;
mod primitive;
pub mod testing;
mod video;

use crate::engine::registry::Registry;

/// Registers every built-in node in `/object_info` order.
pub fn register_builtin(registry: &mut Registry) {
    image_files::register(registry);
    image::register(registry);
    mask::register(registry);
    primitive::register(registry);
    video::register(registry);
    audio::register(registry);
}
