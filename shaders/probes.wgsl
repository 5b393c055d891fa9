// Entry points for the tests and the benchmark, not the optimizer: composed after
// adam.wgsl (whose functions and constants they use) at load time by the tests and
// benchmarks/bench_gpu.py (`radam._core.ADAM_WGSL + radam._core.PROBES_WGSL`); the
// optimizer compiles adam.wgsl alone.

// Every entry point here reads its input words from conv_in and writes conv_out.
@group(0) @binding(0) var<storage, read> conv_in: array<u32>;
@group(0) @binding(1) var<storage, read_write> conv_out: array<u32>;

// A copy kernel with the same access pattern shape, for the benchmark's
// bandwidth reference: reads and writes one word per element.
@compute @workgroup_size(WORKGROUP_SIZE)
fn copy(at: Place) {
    let i = invocation(at);
    if (i >= arrayLength(&conv_out)) {
        return;
    }
    conv_out[i] = conv_in[i];
}

// The 16-bit conversions alone, for the tests (tests/test_gpu.py compares them with
// NumPy's and ml_dtypes' on every 16-bit value and every rounding boundary): per
// input word x, f32 -> bf16 and f32 -> f16 of bitcast<f32>(x), then the f32 bits of
// bf16 -> f32 and f16 -> f32 of x's low half.
@compute @workgroup_size(WORKGROUP_SIZE)
fn convert16(at: Place) {
    let i = invocation(at);
    if (i >= arrayLength(&conv_in)) {
        return;
    }
    let x = conv_in[i];
    conv_out[4u * i] = f32_to_bf16(bitcast<f32>(x));
    conv_out[4u * i + 1u] = f32_to_f16(bitcast<f32>(x));
    conv_out[4u * i + 2u] = bitcast<u32>(bf16_to_f32(x));
    conv_out[4u * i + 3u] = bitcast<u32>(f16_to_f32(x));
}

// Stochastic rounding alone, for the tests: per input pair (x's bits, r), the bf16
// and f16 bits of x rounded with random bits r, and lowbias32 of r.
@compute @workgroup_size(WORKGROUP_SIZE)
fn round16(at: Place) {
    let i = invocation(at);
    if (2u * i + 1u >= arrayLength(&conv_in)) {
        return;
    }
    let x = bitcast<f32>(conv_in[2u * i]);
    let r = conv_in[2u * i + 1u];
    conv_out[3u * i] = f32_to_bf16_stochastic(x, r);
    conv_out[3u * i + 1u] = f32_to_f16_stochastic(x, r);
    conv_out[3u * i + 2u] = lowbias32(r);
}

// adam_step_q8's reciprocal alone, for the tests (tests/test_gpu_q8.py compares it with
// the correctly rounded 1 / a of NumPy): per input word, the bits of reciprocal(a).
@compute @workgroup_size(WORKGROUP_SIZE)
fn q8_reciprocal(at: Place) {
    let i = invocation(at);
    if (i >= arrayLength(&conv_in)) {
        return;
    }
    conv_out[i] = bitcast<u32>(reciprocal(bitcast<f32>(conv_in[i])));
}

// adam_step_q8's nearest code alone, for the tests (tests/test_gpu_q8.py compares it
// with the midpoint rule): per input word (y's bits), y's code in the signed map, then
// in the unsigned map. 64-wide workgroups, as adam_step_q8's map copy is written for.
@compute @workgroup_size(64)
fn q8_nearest(at: Place) {
    copy_maps(at.lid);
    workgroupBarrier();
    let i = workgroup_index(at) * 64u + at.lid;
    if (i >= arrayLength(&conv_in)) {
        return;
    }
    let y = bitcast<f32>(conv_in[i]);
    conv_out[2u * i] = nearest_code(0u, y);
    conv_out[2u * i + 1u] = nearest_code(1u, y);
}
