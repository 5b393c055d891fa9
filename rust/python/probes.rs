//! Bandwidth probes for the benchmarks (`benchmarks/bench_cpu.py`,
//! `benchmarks/report.py`), built only with the `bench` cargo feature
//! (`maturin develop --release --features bench`): the wheel and the default
//! build do not have them. Each moves the bytes of a step with trivial
//! arithmetic, spread over the threads as a step's units are, so its speed is
//! the machine's bandwidth, the roofline an Adam step is drawn against.

use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Add the probes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_rmw_probe, m)?)?;
    m.add_function(wrap_pyfunction!(_copy_probe, m)?)?;
    Ok(())
}

/// A bandwidth probe for the benchmarks: `p += g; m += g; v += g` over four
/// float32 arrays of one length, in [`crate::CHUNK`] pieces spread over a step's threads.
/// It moves the bytes of an Adam step (4 reads, 3 writes per element) with
/// trivial arithmetic, so its speed is the machine's read-modify-write bandwidth.
#[pyfunction]
fn _rmw_probe(
    py: Python<'_>,
    p: Bound<'_, PyArrayDyn<f32>>,
    g: Bound<'_, PyArrayDyn<f32>>,
    m: Bound<'_, PyArrayDyn<f32>>,
    v: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    let err = |_| PyValueError::new_err("probe arrays must be distinct, writable and contiguous");
    let (mut p, g) = (
        p.try_readwrite().map_err(err)?,
        g.try_readonly().map_err(err)?,
    );
    let (mut m, mut v) = (
        m.try_readwrite().map_err(err)?,
        v.try_readwrite().map_err(err)?,
    );
    let contiguous = |_| PyValueError::new_err("probe arrays must be C-contiguous");
    let (p, g) = (
        p.as_slice_mut().map_err(contiguous)?,
        g.as_slice().map_err(contiguous)?,
    );
    let (m, v) = (
        m.as_slice_mut().map_err(contiguous)?,
        v.as_slice_mut().map_err(contiguous)?,
    );
    if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
        return Err(PyValueError::new_err("probe arrays must have one length"));
    }
    let chunk = crate::CHUNK;
    // Chunks spread over the threads exactly as a step's units are, after a
    // head up to p's first cache-line boundary, as the kernel aligns them.
    let head = crate::storage::to_line_boundary(p);
    let ((p0, p), (g0, g)) = (p.split_at_mut(head), g.split_at(head));
    let ((m0, m), (v0, v)) = (m.split_at_mut(head), v.split_at_mut(head));
    let chunks: Vec<_> = std::iter::once((((p0, g0), m0), v0))
        .chain(
            p.chunks_mut(chunk)
                .zip(g.chunks(chunk))
                .zip(m.chunks_mut(chunk))
                .zip(v.chunks_mut(chunk)),
        )
        .collect();
    py.detach(|| {
        crate::team::Team::current().for_each_owned(chunks, |(((p, g), m), v)| {
            // Re-sliced to one length so the loop has no bounds checks.
            let n = p.len();
            let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
            for i in 0..n {
                let (g, m, v) = (g[i], &mut m[i], &mut v[i]);
                p[i] += g;
                *m += g;
                *v += g;
            }
        })
    });
    Ok(())
}

/// A copy bandwidth probe for the benchmarks: `dst[:] = src` over two float32
/// arrays of one length, in [`crate::CHUNK`] pieces spread over a step's threads (one
/// read and one write per element).
#[pyfunction]
fn _copy_probe(
    py: Python<'_>,
    dst: Bound<'_, PyArrayDyn<f32>>,
    src: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    let err = |_| PyValueError::new_err("probe arrays must be distinct, writable and contiguous");
    let (mut dst, src) = (
        dst.try_readwrite().map_err(err)?,
        src.try_readonly().map_err(err)?,
    );
    let contiguous = |_| PyValueError::new_err("probe arrays must be C-contiguous");
    let (dst, src) = (
        dst.as_slice_mut().map_err(contiguous)?,
        src.as_slice().map_err(contiguous)?,
    );
    if dst.len() != src.len() {
        return Err(PyValueError::new_err("probe arrays must have one length"));
    }
    let chunk = crate::CHUNK;
    let chunks: Vec<_> = dst.chunks_mut(chunk).zip(src.chunks(chunk)).collect();
    py.detach(|| {
        crate::team::Team::current().for_each_owned(chunks, |(d, s)| d.copy_from_slice(s))
    });
    Ok(())
}
