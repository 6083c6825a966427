//! The values that travel along graph links.

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value as Json;
use tch::Tensor;

use crate::pyjson;

/// A tensor that cached outputs share between consumers.
///
/// Nodes never modify an input tensor in place (they build new ones), and ATen's read-only
/// operations are safe from several threads, so sharing by reference is sound.
pub struct SharedTensor(Tensor);

// SAFETY: see the type's comment: shared tensors are only read, never mutated in place.
unsafe impl Sync for SharedTensor {}

impl SharedTensor {
    pub fn new(t: Tensor) -> Self {
        SharedTensor(t)
    }
}

impl Deref for SharedTensor {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

/// One value on a link: a literal, a tensor (IMAGE, MASK, …) or an opaque object (MODEL, …).
#[derive(Clone)]
pub enum Value {
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Any other literal (null, objects, unwrapped lists) exactly as the prompt held it.
    Json(Json),
    Tensor(Arc<SharedTensor>),
    /// A whole list: the input of an `INPUT_IS_LIST` node or the output of a list slot.
    List(Vec<Value>),
    Object(Arc<dyn Any + Send + Sync>),
}

impl Value {
    pub fn tensor(t: Tensor) -> Self {
        Value::Tensor(Arc::new(SharedTensor(t)))
    }

    /// An opaque value (VIDEO, AUDIO, MODEL, …).
    pub fn object<T: Any + Send + Sync>(value: T) -> Self {
        Value::Object(Arc::new(value))
    }

    pub fn as_object<T: Any>(&self) -> Option<&T> {
        match self {
            Value::Object(o) => o.downcast_ref::<T>(),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The literal a prompt input holds, as a value.
    pub fn from_json(v: &Json) -> Self {
        match v {
            Json::Bool(b) => Value::Bool(*b),
            Json::String(s) => Value::Str(s.clone()),
            Json::Number(n) => match pyjson::as_i128(n) {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => Value::Json(other.clone()),
        }
    }

    /// The value as ComfyUI reports it in `execution_error.current_inputs`:
    /// primitives as they are, anything else as its `str()`.
    pub fn to_report_json(&self) -> Json {
        match self {
            Value::Int(i) => pyjson::int_number(*i),
            Value::Float(f) => pyjson::float_number(*f),
            Value::Str(s) => Json::String(s.clone()),
            Value::Bool(b) => Json::Bool(*b),
            Value::Json(Json::Null) => Json::Null,
            other => Json::String(other.to_string()),
        }
    }

    /// Python truthiness, used where ComfyUI applies `bool()` to a value.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bool(b) => *b,
            Value::Json(Json::Null) => false,
            Value::Json(Json::Array(a)) => !a.is_empty(),
            Value::Json(Json::Object(o)) => !o.is_empty(),
            Value::Json(_) => true,
            Value::Tensor(t) => t.numel() > 0 && t.ne(0.0).any().int64_value(&[]) != 0,
            Value::List(l) => !l.is_empty(),
            Value::Object(_) => true,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&pyjson::float_repr(*x)),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::Json(j) => f.write_str(&pyjson::value_repr(j)),
            Value::Tensor(t) => write!(f, "tensor(shape={:?}, dtype={:?})", t.size(), t.kind()),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Object(_) => f.write_str("<object>"),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
