//! Bindings of the 8-bit codec (`radam._core.Q8_BLOCK`, `_q8_*`): the block size
//! and maps that `radam._formats` declares the format with and the GPU uploads,
//! the encode that imports float32 moments, and hooks the Python tests hold
//! against bitsandbytes. Not radam's API: the optimizer's 8-bit state reaches
//! Python through the engines.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::quant::{blocks, decode, encode, Codebook, SIGNED, UNSIGNED};
use crate::SimdLevel;

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
