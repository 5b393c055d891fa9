//! Row-sparse gradients (`radam.RowSparse`) as the engine reads them: the
//! indices and values borrowed and checked against the param, then coalesced
//! by the core (`RowGrad`).

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::arrays::{borrow_grad, py_shape, stored, Compute, DType, Ro};
use super::extents::Extent;
use crate::{RowGrad, StepError};

/// A grad as a step reads it: an array, or a `radam.RowSparse`'s rows.
pub(super) enum Read<'py> {
    Dense(Ro<'py>),
    Rows(RowRead<'py>),
}

/// A `radam.RowSparse`, borrowed and checked against its param.
pub(super) struct RowRead<'py> {
    indices: PyReadonlyArray1<'py, i64>,
    values: Ro<'py>,
    table_rows: usize,
    row_len: usize,
}

/// Borrow grad `what` of a param of `shape` and `param_dtype` (an array, or a
/// `radam.RowSparse` of a param of two or more dimensions), checking that
/// what it reads during the step overlaps nothing written (`overlaps`).
pub(super) fn read_grad<'py>(
    grad: &Bound<'py, PyAny>,
    param_dtype: DType,
    shape: &[usize],
    what: &dyn Fn() -> String,
    overlaps: &impl Fn(Extent) -> Option<String>,
) -> PyResult<Read<'py>> {
    // A RowSparse is told by its type's name: radam._row_sparse.RowSparse.
    let row_sparse = grad.cast::<PyUntypedArray>().is_err()
        && grad.get_type().name().is_ok_and(|n| n == "RowSparse");
    if !row_sparse {
        return Ok(Read::Dense(borrow_grad(
            grad,
            param_dtype,
            shape,
            what,
            overlaps,
        )?));
    }
    let Some((&table_rows, row)) = shape.split_first().filter(|(_, row)| !row.is_empty()) else {
        return Err(PyValueError::new_err(format!(
            "{} is a RowSparse, which steps rows of a param of two or more dimensions, \
             but its param has shape {}; pass a dense gradient",
            what(),
            py_shape(shape)
        )));
    };
    let indices = grad.getattr("indices")?;
    let indices = indices.cast::<PyArray1<i64>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{}.indices must be a 1-D int64 array (radam.RowSparse makes one)",
            what()
        ))
    })?;
    let indices = indices
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{}.indices cannot be read: {e}", what())))?;
    let values = grad.getattr("values")?;
    let values_what = || format!("{}.values", what());
    let expected: Vec<usize> = std::iter::once(indices.len())
        .chain(row.iter().copied())
        .collect();
    if let Ok(array) = values.cast::<PyUntypedArray>() {
        if array.shape() != expected.as_slice() {
            return Err(PyValueError::new_err(format!(
                "{} has shape {}, but must have shape {}: one row of its param (shape {}) \
                 per index",
                values_what(),
                py_shape(array.shape()),
                py_shape(&expected),
                py_shape(shape)
            )));
        }
    }
    let values = borrow_grad(&values, param_dtype, &expected, &values_what, overlaps)?;
    Ok(Read::Rows(RowRead {
        indices,
        values,
        table_rows,
        row_len: row.iter().product(),
    }))
}

impl RowRead<'_> {
    /// The core's coalesced gradient, in compute type `T`; `what` names the grad.
    pub(super) fn grad<T: Compute>(&self, what: &str) -> PyResult<RowGrad<'_, T>> {
        let indices = self
            .indices
            .as_slice()
            .map_err(|e| PyValueError::new_err(format!("{what}.indices cannot be read: {e}")))?;
        RowGrad::new(
            indices,
            stored(&self.values)?,
            self.row_len,
            self.table_rows,
        )
        .map_err(|e| match e {
            StepError::RowOutOfRange {
                position,
                row,
                rows,
            } => PyIndexError::new_err(format!(
                "{what}.indices[{position}] is {row}, but its param has {rows} rows"
            )),
            other => PyValueError::new_err(format!("{what}: {other}")),
        })
    }
}
