//! The graph engine: node definitions, validation, scheduling, caching and execution.

pub mod cache;
pub mod context;
pub mod executor;
pub mod graph;
pub mod node;
pub mod registry;
pub mod replacements;
pub mod typematch;
pub mod validate;
pub mod value;
