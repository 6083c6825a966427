//! Built-in nodes, one file per family.

mod image;
mod image_files;
mod mask;
mod primitive;
pub mod testing;

use crate::engine::registry::Registry;

/// Registers every built-in node in `/object_info` order.
pub fn register_builtin(registry: &mut Registry) {
    image_files::register(registry);
    image::register(registry);
    mask::register(registry);
    primitive::register(registry);
}
