//! `GpuStep`: what the Python GPU engine writes for one step of one group,
//! computed by the core (`rust/uniform.rs`) so that the host driving the GPU
//! derives no formula of its own.

use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::config::PyAdamConfig;
use crate::plumbing::GpuStep;
use crate::{Carry, StepScalars};

/// One step of one parameter group on the GPU: the rows of the WGSL `Step`
/// uniform (the fields before `lo`, in `STEP_FIELDS`' order, as float32) and
/// the pipeline's override constants.
#[pyclass(name = "GpuStep", module = "radam._core", frozen)]
pub(super) struct PyGpuStep {
    step: GpuStep,
    rule: &'static str,
    mu_product: f64,
}

#[pymethods]
impl PyGpuStep {
    /// Step `step` (from 1) of a group with options `config`, given the
    /// `mu_product` its previous step carried (NAdam's; 1 before the first).
    #[new]
    fn new(config: &Bound<'_, PyAdamConfig>, step: u64, mu_product: f64) -> PyResult<Self> {
        let (scalars, carry) = StepScalars::next(&config.get().0, step, Carry { mu_product })
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyGpuStep {
            step: GpuStep::new(&scalars),
            rule: scalars.rule.name(),
            mu_product: carry.mu_product,
        })
    }

    /// The row of a tensor not clipped by norm.
    #[getter]
    fn row<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.step.row())
    }

    /// The row of a tensor clipped by norm, whose float32 gradient (C-contiguous)
    /// is `grad`: its norm measured as the CPU step measures it.
    fn tensor_row<'py>(
        &self,
        py: Python<'py>,
        grad: PyReadonlyArrayDyn<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let grad = grad
            .as_slice()
            .map_err(|_| PyValueError::new_err("tensor_row needs a C-contiguous array"))?;
        let norm = py.detach(|| crate::grad_norm(grad));
        Ok(PyArray1::from_slice(py, &self.step.tensor_row(norm)))
    }

    /// Whether each tensor needs its own row ([`PyGpuStep::tensor_row`]).
    #[getter]
    fn clips_norm(&self) -> bool {
        self.step.clips_norm()
    }

    /// Whether 16-bit params are rounded stochastically: then each tensor's row
    /// holds its `round_key` ([`PyGpuStep::round_key`]).
    #[getter]
    fn rounds(&self) -> bool {
        self.step.rounds()
    }

    /// The `round_key` word of the tensor at `position` in the optimizer.
    fn round_key(&self, position: u64) -> u32 {
        self.step.round_key(position)
    }

    /// The pipeline's override constants by their names in the shader.
    #[getter]
    fn constants<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, value) in self.step.pipeline().overrides() {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// The step's update rule: "adam", "adamax", "nadam" or "unadapted".
    #[getter]
    fn rule(&self) -> &'static str {
        self.rule
    }

    /// NAdam's product to carry to the next step.
    #[getter]
    fn mu_product(&self) -> f64 {
        self.mu_product
    }
}
