//! Bindings of the 8-bit codec (`radam._core.Q8_BLOCK`, `_q8_*`): the block size
//! and maps that `radam._formats` declares the format with and the GPU uploads,
//! the encode that imports float32 moments, and hooks the Python tests hold
//! against bitsandbytes. Not radam's API: the optimizer's 8-bit state reaches
//! Python through the engines. Also the 8-bit storage kind as `engine.rs` and
//! `arrays.rs` take it: the kind's name, its borrow and its checks and messages.

use numpy::{
    PyArray1, PyReadonlyArray1, PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::arrays::{extent, not_contiguous, typed_rw, DType};
use super::extents::Extent;
use crate::quant::{blocks, decode, encode, Codebook, SIGNED, UNSIGNED};
use crate::{Buffer, SimdLevel, StepError, StoredMut, Q8_BLOCK};

fn book(signed: bool) -> &'static Codebook {
    if signed {
        &SIGNED
    } else {
        &UNSIGNED
    }
}

/// The named SIMD level (as `simd_level()` spells it), or the detected one.
fn level(name: Option<&str>) -> PyResult<SimdLevel> {
    match name {
        None => Ok(SimdLevel::detect()),
        Some(name) => SimdLevel::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| PyValueError::new_err(format!("level: unknown SIMD level {name:?}"))),
    }
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

/// The 256 values of the signed or unsigned dynamic tree map.
#[pyfunction]
fn _q8_map(py: Python<'_>, signed: bool) -> Bound<'_, PyArray1<f32>> {
    PyArray1::from_slice(py, &book(signed).values)
}

/// Codes (uint8, one per element) and absmax (float32, one per block).
type Quantized<'py> = (Bound<'py, PyArray1<u8>>, Bound<'py, PyArray1<f32>>);

/// Blockwise 8-bit codes and absmax of `x`.
#[pyfunction]
#[pyo3(signature = (x, signed, level=None))]
fn _q8_encode<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f32>,
    signed: bool,
    level: Option<&str>,
) -> PyResult<Quantized<'py>> {
    let x = slice(&x, "x")?;
    let (mut codes, mut absmax) = (vec![0u8; x.len()], vec![0f32; blocks(x.len())]);
    encode(
        self::level(level)?,
        book(signed),
        x,
        &mut codes,
        &mut absmax,
    )
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((
        PyArray1::from_vec(py, codes),
        PyArray1::from_vec(py, absmax),
    ))
}

/// `values[codes] * absmax`, block by block.
#[pyfunction]
#[pyo3(signature = (codes, absmax, signed, level=None))]
fn _q8_decode<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, u8>,
    absmax: PyReadonlyArray1<'py, f32>,
    signed: bool,
    level: Option<&str>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (codes, absmax) = (slice(&codes, "codes")?, slice(&absmax, "absmax")?);
    let mut out = vec![0f32; codes.len()];
    decode(self::level(level)?, book(signed), codes, absmax, &mut out)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Add the functions above to `radam._core`, and the block size of 8-bit state
/// (elements per block, one float32 absmax each; `radam._formats` declares it).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Q8_BLOCK", crate::Q8_BLOCK)?;
    m.add_function(wrap_pyfunction!(_q8_map, m)?)?;
    m.add_function(wrap_pyfunction!(_q8_encode, m)?)?;
    m.add_function(wrap_pyfunction!(_q8_decode, m)?)
}

// -- the 8-bit storage kind, as the engine's binding takes it ---------------------------

/// The storage kind `radam._formats` declares the 8-bit format with.
pub(super) const KIND: &str = "q8";
/// NumPy's name of the codes' dtype.
pub(super) const CODES_DTYPE: &str = "uint8";

/// Whether `kind` (a format's storage kind) is this codec's.
pub(super) fn is_kind(kind: &str) -> bool {
    kind == KIND
}

/// Whether `array` holds codes (its dtype is `CODES_DTYPE`).
pub(super) fn holds_codes(array: &Bound<'_, PyUntypedArray>) -> PyResult<bool> {
    let name: String = array.dtype().getattr("name")?.extract()?;
    Ok(name == CODES_DTYPE)
}

/// A write borrow of one 8-bit buffer: its codes and the absmax of each block.
pub(super) struct CodesRw<'py> {
    codes: PyReadwriteArrayDyn<'py, u8>,
    absmax: PyReadwriteArrayDyn<'py, f32>,
}

impl<'py> CodesRw<'py> {
    /// Borrow `codes` and its `absmax` (how messages name each: `what`,
    /// `absmax_what`) for writing.
    pub(super) fn borrow(
        codes: &Bound<'py, PyUntypedArray>,
        what: &dyn Fn() -> String,
        absmax: Option<(&Bound<'py, PyUntypedArray>, &dyn Fn() -> String)>,
    ) -> PyResult<Self> {
        let Some((absmax, absmax_what)) = absmax else {
            return Err(PyValueError::new_err(format!(
                "{} holds 8-bit codes but has no absmax array",
                what()
            )));
        };
        Ok(CodesRw {
            codes: typed_rw(codes, what)?,
            absmax: typed_rw(absmax, absmax_what)?,
        })
    }

    /// The bytes of the codes, then of the absmax.
    pub(super) fn extents(&self) -> [Extent; 2] {
        [extent(&self.codes), extent(&self.absmax)]
    }

    pub(super) fn shape(&self) -> &[usize] {
        self.codes.shape()
    }

    /// The kernel's buffer of these arrays.
    #[inline(always)]
    pub(super) fn stored_mut<T>(&mut self) -> PyResult<StoredMut<'_, T>> {
        Ok(StoredMut::Q8 {
            codes: self.codes.as_slice_mut().map_err(not_contiguous)?,
            absmax: self.absmax.as_slice_mut().map_err(not_contiguous)?,
        })
    }
}

/// An 8-bit buffer's scales, its absmax: float32, one per block (of `block` elements) of
/// its `n` elements, contiguous.
pub(super) fn check_scales(
    n: usize,
    block: usize,
    absmax: &Bound<'_, PyUntypedArray>,
    what: &str,
) -> PyResult<()> {
    let blocks = n.div_ceil(block);
    if DType::of(absmax)? != Some(DType::F32) || absmax.shape() != [blocks] {
        return Err(PyValueError::new_err(format!(
            "{what} must be a float32 array of shape ({blocks},): one absmax per block of \
             {block} elements"
        )));
    }
    if !absmax.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous"
        )));
    }
    Ok(())
}

/// Whether `name` is the key of `buffer`'s scales, its absmax array (as the
/// core's errors name it).
pub(super) fn names_scales(buffer: Buffer, name: &str) -> bool {
    buffer.absmax_name() == name
}

/// The error of a row-sparse grad whose rows split the blocks of 8-bit state
/// (`label`: how messages name the tensor of an index), or None for another error.
pub(super) fn row_error<'a>(e: &StepError, label: impl Fn(usize) -> &'a str) -> Option<PyErr> {
    let StepError::Q8RowLength { index, row_len } = *e else {
        return None;
    };
    let label = label(index);
    Some(PyValueError::new_err(format!(
        "grads{label}: state_dtype='8bit' keeps blocks of {Q8_BLOCK} elements, so a RowSparse \
         gradient needs rows of a whole number of blocks, and the rows of params{label} have \
         {row_len} elements; use state_dtype=None, 'float32', 'bfloat16' or 'float16'",
    )))
}
