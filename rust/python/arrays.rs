//! Taking NumPy arrays for one step: dtypes, checked borrows, and the views
//! the kernel gets. Every borrow goes through rust-numpy's borrow checker
//! (which also sees another thread stepping the same arrays), and every grad's
//! bytes are compared with the bytes the step writes (`extents.rs`), so
//! aliasing and read-only arrays are Python errors, never panics or races.

use half::{bf16, f16};
use numpy::{
    BorrowError, Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

use super::extents::{strided_extent, Extent};
use super::quant::{CodesRw, CODES_DTYPE};
use crate::{Float, Stored, StoredMut};

/// The dtypes the engine takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DType {
    F32,
    F64,
    F16,
    Bf16,
    /// A codec's codes, with the array of each block's scale beside them
    /// (never a param's dtype, so `of` does not return it; see `quant.rs`).
    Codes,
}

impl DType {
    /// The dtype of an array, by its NumPy name (bfloat16 comes from `ml_dtypes`).
    pub(super) fn of(array: &Bound<'_, PyUntypedArray>) -> PyResult<Option<DType>> {
        let name: String = array.dtype().getattr("name")?.extract()?;
        Ok(match name.as_str() {
            "float32" => Some(DType::F32),
            "float64" => Some(DType::F64),
            "float16" => Some(DType::F16),
            "bfloat16" => Some(DType::Bf16),
            _ => None,
        })
    }

    /// The dtype as messages name it (NumPy's names, the codes' too).
    pub(super) fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::Bf16 => "bfloat16",
            DType::Codes => CODES_DTYPE,
        }
    }

    /// Whether arithmetic for this param dtype runs in f64 (else f32).
    pub(super) fn computes_in_f64(self) -> bool {
        self == DType::F64
    }
}

/// A shape as Python prints it: `()`, `(5,)`, `(2, 3)`.
pub(super) fn py_shape(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// Raise TypeError unless `obj` is an ndarray; `what` is only formatted on error.
pub(super) fn as_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: impl Fn() -> String,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "{} must be a numpy.ndarray, got {type_name}",
            what()
        ))
    })
}

/// A read-write borrow of an array of one of the engine's dtypes.
pub(super) enum Rw<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    F64(PyReadwriteArrayDyn<'py, f64>),
    F16(PyReadwriteArrayDyn<'py, f16>),
    Bf16(PyReadwriteArrayDyn<'py, bf16>),
    /// A codec's codes and the scale of each block (`quant.rs`).
    Codes(CodesRw<'py>),
}

impl Rw<'_> {
    /// The bytes of this (C-contiguous) array, and of a coded buffer's scales.
    pub(super) fn extents(&self) -> impl Iterator<Item = Extent> {
        let (first, scales) = match self {
            Rw::F32(a) => (extent(a), None),
            Rw::F64(a) => (extent(a), None),
            Rw::F16(a) => (extent(a), None),
            Rw::Bf16(a) => (extent(a), None),
            Rw::Codes(c) => {
                let [codes, scales] = c.extents();
                (codes, Some(scales))
            }
        };
        std::iter::once(first).chain(scales)
    }

    pub(super) fn shape(&self) -> &[usize] {
        match self {
            Rw::F32(a) => a.shape(),
            Rw::F64(a) => a.shape(),
            Rw::F16(a) => a.shape(),
            Rw::Bf16(a) => a.shape(),
            Rw::Codes(c) => c.shape(),
        }
    }
}

/// A read-only borrow (a gradient).
pub(super) enum Ro<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    F16(PyReadonlyArrayDyn<'py, f16>),
    Bf16(PyReadonlyArrayDyn<'py, bf16>),
}

/// The bytes of a (C-contiguous) array.
pub(super) fn extent<T: Element>(a: &PyReadwriteArrayDyn<'_, T>) -> Extent {
    let start = a.data() as usize;
    (start, start + a.len() * std::mem::size_of::<T>())
}

pub(super) fn typed_rw<'py, T: Element>(
    array: &Bound<'py, PyUntypedArray>,
    what: &dyn Fn() -> String,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    let typed = array.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{} changed dtype after the optimizer was built",
            what()
        ))
    })?;
    let borrowed = typed.try_readwrite().map_err(|e| match e {
        BorrowError::NotWriteable => PyValueError::new_err(format!(
            "{} is read-only; the optimizer updates it in place",
            what()
        )),
        _ => PyValueError::new_err(format!(
            "{} is already in use: it shares memory with another param or state array, \
             or another thread is stepping it",
            what()
        )),
    })?;
    if !borrowed.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{} is no longer C-contiguous",
            what()
        )));
    }
    Ok(borrowed)
}

/// Borrow `array` (of dtype `dtype`) for writing; for codes, `absmax` is the
/// array of their scales and how messages name it.
pub(super) fn borrow_rw<'py>(
    array: &Bound<'py, PyUntypedArray>,
    dtype: DType,
    what: &dyn Fn() -> String,
    absmax: Option<(&Bound<'py, PyUntypedArray>, &dyn Fn() -> String)>,
) -> PyResult<Rw<'py>> {
    Ok(match (dtype, absmax) {
        (DType::F32, _) => Rw::F32(typed_rw(array, what)?),
        (DType::F64, _) => Rw::F64(typed_rw(array, what)?),
        (DType::F16, _) => Rw::F16(typed_rw(array, what)?),
        (DType::Bf16, _) => Rw::Bf16(typed_rw(array, what)?),
        (DType::Codes, absmax) => Rw::Codes(CodesRw::borrow(array, what, absmax)?),
    })
}

fn typed_ro<'py, T: Element>(
    grad: &Bound<'py, PyUntypedArray>,
    shape: &[usize],
    what: &dyn Fn() -> String,
    param_dtype: &str,
    overlaps: &impl Fn(Extent) -> Option<String>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let typed = grad.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{} has dtype {} but its param has dtype {param_dtype}; radam never casts, \
             pass a {param_dtype} array",
            what(),
            grad.dtype(),
        ))
    })?;
    if typed.shape() != shape {
        return Err(PyValueError::new_err(format!(
            "{} has shape {} but its param has shape {}",
            what(),
            py_shape(typed.shape()),
            py_shape(shape),
        )));
    }
    let (data, itemsize) = (typed.data() as usize, std::mem::size_of::<T>());
    let extent = if typed.is_c_contiguous() {
        (data, data + typed.len() * itemsize)
    } else {
        strided_extent(data, typed.shape(), typed.strides(), itemsize)
    };
    if let Some(written) = overlaps(extent) {
        return Err(PyValueError::new_err(format!(
            "{} shares memory with {written}, which the step writes; pass a separate \
             gradient array",
            what()
        )));
    }
    // Its bytes overlap nothing this step writes, so a refused borrow means
    // another thread is writing them (another optimizer stepping them).
    let view = typed.try_readonly().map_err(|_| {
        PyValueError::new_err(format!(
            "{} is being written by another call (an optimizer stepping an array it \
             shares memory with); pass a separate gradient array",
            what()
        ))
    })?;
    if view.is_c_contiguous() {
        return Ok(view);
    }
    // Not contiguous (a transposed or strided view): read a C-ordered copy.
    let copy = typed.call_method0("copy")?.cast_into::<PyArrayDyn<T>>()?;
    copy.try_readonly()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Borrow a gradient for reading, checking that it is an ndarray of the
/// param's dtype and shape whose bytes overlap nothing being written
/// (`overlaps` names what they do overlap).
pub(super) fn borrow_grad<'py>(
    grad: &Bound<'py, PyAny>,
    param_dtype: DType,
    shape: &[usize],
    what: &dyn Fn() -> String,
    overlaps: &impl Fn(Extent) -> Option<String>,
) -> PyResult<Ro<'py>> {
    let grad = as_array(grad, what)?;
    Ok(match param_dtype {
        DType::F32 => Ro::F32(typed_ro(&grad, shape, what, "float32", overlaps)?),
        DType::F64 => Ro::F64(typed_ro(&grad, shape, what, "float64", overlaps)?),
        DType::F16 => Ro::F16(typed_ro(&grad, shape, what, "float16", overlaps)?),
        DType::Bf16 => Ro::Bf16(typed_ro(&grad, shape, what, "bfloat16", overlaps)?),
        // Not a param's dtype (the engine refuses such a param).
        DType::Codes => {
            return Err(PyTypeError::new_err(format!(
                "{} has no float param",
                what()
            )))
        }
    })
}

pub(super) fn not_contiguous<E>(_: E) -> PyErr {
    PyValueError::new_err("an array stopped being contiguous")
}

/// The compute types, and how a borrow of the same type is viewed natively.
pub(super) trait Compute: Float + Element {
    fn native_mut<'a>(rw: &'a mut Rw<'_>) -> Option<&'a mut [Self]>;
    fn native<'a>(ro: &'a Ro<'_>) -> Option<&'a [Self]>;
}

macro_rules! compute {
    ($t:ty, $variant:ident) => {
        impl Compute for $t {
            fn native_mut<'a>(rw: &'a mut Rw<'_>) -> Option<&'a mut [Self]> {
                match rw {
                    Rw::$variant(a) => a.as_slice_mut().ok(),
                    _ => None,
                }
            }
            fn native<'a>(ro: &'a Ro<'_>) -> Option<&'a [Self]> {
                match ro {
                    Ro::$variant(a) => a.as_slice().ok(),
                    _ => None,
                }
            }
        }
    };
}

compute!(f32, F32);
compute!(f64, F64);

fn mixed() -> PyErr {
    PyTypeError::new_err("a float32 array and a float64 array were mixed in one tensor")
}

/// A function viewing a borrow (`Rw`, `Ro`) as the kernel's holder of it for
/// compute type `T`: a 16-bit array as it is stored, the compute type's own natively.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident($($mut:ident)?), $borrow:ident, $holder:ident, $slice:ident, $native:ident $(, $extra:pat => $extra_of:expr)?) => {
        $(#[$doc])*
        // Inlined: called once per buffer of every tensor of every step, and
        // its result, returned through memory, stalled the caller.
        #[inline(always)]
        pub(super) fn $name<'a, T: Compute>(b: &'a $($mut)? $borrow<'_>) -> PyResult<$holder<'a, T>> {
            Ok(match b {
                $borrow::F16(a) => $holder::F16(a.$slice().map_err(not_contiguous)?),
                $borrow::Bf16(a) => $holder::Bf16(a.$slice().map_err(not_contiguous)?),
                $($extra => $extra_of,)?
                other => $holder::Native(T::$native(other).ok_or_else(mixed)?),
            })
        }
    };
}

view!(
    /// A write borrow as the kernel's buffer for compute type `T`.
    stored_mut(mut), Rw, StoredMut, as_slice_mut, native_mut,
    Rw::Codes(codes) => codes.stored_mut()?
);
view!(
    /// A read borrow (a gradient) as the kernel's buffer for compute type `T`.
    stored(), Ro, Stored, as_slice, native
);
