//! Bandwidth probes for the benchmarks (`benchmarks/bench_cpu.py`,
//! `benchmarks/report.py`), built only with the `bench` cargo feature
//! (`maturin develop --release --features bench`): the wheel and the default
//! build do not have them. Each moves the bytes of a step with trivial
//! arithmetic, in [`crate::plumbing::CHUNK`] pieces after a head up to the first array's
//! cache-line boundary, spread over the threads as a step's units are, so its
//! speed is the machine's bandwidth: the roofline an Adam step is drawn against.

use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::storage::to_line_boundary;
use crate::team::Team;

/// Add the probes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_rmw_probe, m)?)?;
    m.add_function(wrap_pyfunction!(_copy_probe, m)?)?;
    Ok(())
}

/// Run `body(writes, read)` over pieces of float32 arrays of one length: the
/// `writes` borrowed read-write, `read` read-only.
fn probe(
    py: Python<'_>,
    writes: &[&Bound<'_, PyArrayDyn<f32>>],
    read: &Bound<'_, PyArrayDyn<f32>>,
    body: fn(&mut [&mut [f32]], &[f32]),
) -> PyResult<()> {
    let err = |_| PyValueError::new_err("probe arrays must be distinct, writable and contiguous");
    let mut borrows: Vec<PyReadwriteArrayDyn<'_, f32>> = writes
        .iter()
        .map(|a| a.try_readwrite().map_err(err))
        .collect::<PyResult<_>>()?;
    let read: PyReadonlyArrayDyn<'_, f32> = read.try_readonly().map_err(err)?;
    let contiguous = |_| PyValueError::new_err("probe arrays must be C-contiguous");
    let mut rest: Vec<&mut [f32]> = borrows
        .iter_mut()
        .map(|b| b.as_slice_mut().map_err(contiguous))
        .collect::<PyResult<_>>()?;
    let read = read.as_slice().map_err(contiguous)?;
    if rest.iter().any(|s| s.len() != read.len()) {
        return Err(PyValueError::new_err("probe arrays must have one length"));
    }
    // The head, then CHUNK-long pieces: each piece's slices of every array.
    let head = rest.first().map_or(0, |s| to_line_boundary(s));
    let mut bounds = vec![(0, head)];
    bounds.extend(
        (head..read.len())
            .step_by(crate::plumbing::CHUNK)
            .map(|s| (s, crate::plumbing::CHUNK)),
    );
    let mut pieces: Vec<(Vec<&mut [f32]>, &[f32])> = Vec::with_capacity(bounds.len());
    for &(start, len) in &bounds {
        let len = len.min(read.len() - start);
        let mut piece = Vec::with_capacity(rest.len());
        for r in rest.iter_mut() {
            let (now, later) = std::mem::take(r).split_at_mut(len);
            piece.push(now);
            *r = later;
        }
        pieces.push((piece, &read[start..start + len]));
    }
    py.detach(|| Team::current().for_each_owned(pieces, |(mut w, r)| body(&mut w, r)));
    Ok(())
}

/// A bandwidth probe: `p += g; m += g; v += g` over four float32 arrays of one
/// length. It moves the bytes of an Adam step (4 reads, 3 writes per element)
/// with trivial arithmetic, so its speed is the machine's read-modify-write bandwidth.
#[pyfunction]
fn _rmw_probe(
    py: Python<'_>,
    p: Bound<'_, PyArrayDyn<f32>>,
    g: Bound<'_, PyArrayDyn<f32>>,
    m: Bound<'_, PyArrayDyn<f32>>,
    v: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    probe(py, &[&p, &m, &v], &g, |w, g| {
        let [p, m, v] = w else { return };
        // Re-sliced to one length so the loop has no bounds checks.
        let n = g.len();
        let (p, m, v) = (&mut p[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            p[i] += g[i];
            m[i] += g[i];
            v[i] += g[i];
        }
    })
}

/// A copy bandwidth probe: `dst[:] = src` over two float32 arrays of one
/// length (one read and one write per element).
#[pyfunction]
fn _copy_probe(
    py: Python<'_>,
    dst: Bound<'_, PyArrayDyn<f32>>,
    src: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    probe(py, &[&dst], &src, |w, s| w[0].copy_from_slice(s))
}
