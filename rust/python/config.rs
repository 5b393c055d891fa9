//! `AdamConfig`: the core's options of one group, read once (every field of
//! `rust/config.rs`'s `AdamConfig` by its name) from the `EngineOptions`
//! Python validated (`radam._options`), checked by the core, and handed to
//! every step from then on with nothing left to read.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::plumbing::Fields;
use crate::AdamConfig;

/// The core's options of one parameter group (`rust/config.rs`), made from a
/// `radam._options.EngineOptions`, whose fields are the struct's by name.
#[pyclass(name = "AdamConfig", module = "radam._core", frozen)]
pub(super) struct PyAdamConfig(pub(super) AdamConfig);

/// A group's options read by attribute: each field of `AdamConfig` from the
/// attribute of its name.
struct Attributes<'a, 'py>(&'a Bound<'py, PyAny>);

impl Fields for Attributes<'_, '_> {
    type Error = PyErr;

    fn real(&mut self, name: &'static str) -> PyResult<f64> {
        self.0.getattr(name)?.extract()
    }

    fn flag(&mut self, name: &'static str) -> PyResult<bool> {
        self.0.getattr(name)?.extract()
    }

    fn integer(&mut self, name: &'static str) -> PyResult<u64> {
        self.0.getattr(name)?.extract()
    }

    fn choice(&mut self, name: &'static str) -> PyResult<String> {
        self.0.getattr(name)?.extract()
    }

    fn unknown(&mut self, name: &'static str, value: String) -> PyErr {
        PyValueError::new_err(format!("unknown {name} {value:?}"))
    }
}

#[pymethods]
impl PyAdamConfig {
    /// The options of `options` (an `EngineOptions`); raises ValueError naming
    /// the first one out of its range.
    #[new]
    fn new(options: &Bound<'_, PyAny>) -> PyResult<Self> {
        let config = AdamConfig::from_fields(&mut Attributes(options))?;
        config
            .validate()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyAdamConfig(config))
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.0)
    }
}
