//! `AdamConfig`: the core's options of one group, taken once from the
//! `EngineOptions` Python validated (`radam._options`), checked by the core,
//! and handed to every step from then on with nothing left to read.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{AdamConfig, Algorithm, BiasCorrection};

/// The core's options of one parameter group (`rust/config.rs`), made from a
/// `radam._options.EngineOptions`, whose fields are the struct's by name.
#[pyclass(name = "AdamConfig", module = "radam._core", frozen)]
pub(super) struct PyAdamConfig(pub(super) AdamConfig);

/// A named choice (`algorithm`, `bias_correction`) as the core's enum.
fn choice<T>(options: &Bound<'_, PyAny>, name: &str, parse: fn(&str) -> Option<T>) -> PyResult<T> {
    let value: String = options.getattr(name)?.extract()?;
    parse(&value).ok_or_else(|| PyValueError::new_err(format!("unknown {name} {value:?}")))
}

/// Read every field of `AdamConfig` from the attribute of the same name.
fn config_of(o: &Bound<'_, PyAny>) -> PyResult<AdamConfig> {
    let real = |name: &str| -> PyResult<f64> { o.getattr(name)?.extract() };
    let flag = |name: &str| -> PyResult<bool> { o.getattr(name)?.extract() };
    Ok(AdamConfig {
        lr: real("lr")?,
        beta1: real("beta1")?,
        beta2: real("beta2")?,
        eps: real("eps")?,
        weight_decay: real("weight_decay")?,
        decoupled_weight_decay: flag("decoupled_weight_decay")?,
        amsgrad: flag("amsgrad")?,
        maximize: flag("maximize")?,
        efficient_form: flag("efficient_form")?,
        beta1_decay: real("beta1_decay")?,
        momentum: real("momentum")?,
        nesterov: flag("nesterov")?,
        max_gradient_elem: real("max_gradient_elem")?,
        max_gradient_norm: real("max_gradient_norm")?,
        bias_correction: choice(o, "bias_correction", BiasCorrection::from_name)?,
        algorithm: choice(o, "algorithm", Algorithm::from_name)?,
        momentum_decay: real("momentum_decay")?,
        grad_scale: real("grad_scale")?,
    })
}

#[pymethods]
impl PyAdamConfig {
    /// The options of `options` (an `EngineOptions`); raises ValueError naming
    /// the first one out of its range.
    #[new]
    fn new(options: &Bound<'_, PyAny>) -> PyResult<Self> {
        let config = config_of(options)?;
        config
            .validate()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyAdamConfig(config))
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.0)
    }
}
