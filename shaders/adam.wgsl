// radam: the fused Adam step (Kingma & Ba, Algorithm 1, as torch.optim.Adam/AdamW),
// one invocation per element, the same formula as the Rust CPU kernel (rust/kernel.rs).
//
// The single source of the GPU kernel. It is embedded in the Rust extension
// (`radam._core.ADAM_WGSL`, `radam::ADAM_WGSL`) and compiled once per device
// by python/radam/gpu.py.
//
// Layout of one dispatch (one chunk of one parameter group):
//   binding 0  `s`      the step's scalars, computed on the host in f64 and
//                       rounded once to f32 (no pow per element), plus the
//                       chunk's length;
//   binding 1  `param`  the chunk's params, updated in place;
//   binding 2  `grad`   the chunk's gradients;
//   binding 3  `state`  the chunk's optimizer state, interleaved per element:
//                       m, v (and AMSGrad's running max of v). Three storage
//                       buffers per stage whatever the options, so AMSGrad runs
//                       on adapters that allow fewer than five.
// A chunk is at most max_storage_buffer_binding_size bytes of each binding; the
// host binds chunks at offsets aligned to min_storage_buffer_offset_alignment.

struct Step {
    step_size: f32,                 // lr / (1 - beta1^t)
    inv_bias_correction2_sqrt: f32, // 1 / sqrt(1 - beta2^t)
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    l2: f32,                        // L2 coefficient (used when L2 is true)
    decay: f32,                     // decoupled decay factor 1 - lr*wd (else 1)
    sign: f32,                      // -1 to maximize, else 1
    n: u32,                         // elements in this chunk
    pad0: u32,
    pad1: u32,
}

// Chosen once per pipeline: no per-element variant switch beyond a constant.
override AMSGRAD: bool = false;
override L2: bool = false;
override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> s: Step;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // 2-D dispatch: x covers at most 65535 workgroups, y the rest.
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
    if (i >= s.n) {
        return;
    }
    let stride = select(2u, 3u, AMSGRAD);
    let k = i * stride;

    var p = param[i];
    var g = grad[i] * s.sign;
    if (L2) {
        g = fma(s.l2, p, g);
    }
    p = p * s.decay;
    let m_old = state[k];
    // m.lerp(g, 1 - beta1), as torch computes it.
    let m = fma(s.one_minus_beta1, g - m_old, m_old);
    let v = fma(s.beta2, state[k + 1u], (s.one_minus_beta2 * g) * g);
    state[k] = m;
    state[k + 1u] = v;
    var v_used = v;
    if (AMSGRAD) {
        let old = state[k + 2u];
        // Not max(): the CPU kernel's comparison, so NaN behaves the same.
        v_used = select(old, v, v > old);
        state[k + 2u] = v_used;
    }
    let denom = fma(sqrt(v_used), s.inv_bias_correction2_sqrt, s.eps);
    param[i] = fma(-s.step_size, m / denom, p);
}

// A copy kernel with the same access pattern shape, for the benchmark's
// bandwidth reference: reads and writes one f32 per element.
@group(0) @binding(0) var<storage, read> copy_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> copy_dst: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
    if (i >= arrayLength(&copy_dst)) {
        return;
    }
    copy_dst[i] = copy_src[i];
}
