// radam: the fused Adam step (Kingma & Ba, Algorithm 1, as torch.optim.Adam/AdamW,
// and its variants: AdaMax, NAdam, RAdam, AMSGrad, downhill's momentum/Nesterov
// velocity, element and norm clipping, loss scaling), one invocation per element,
// the same formula and operation order as the Rust CPU kernel (rust/kernel.rs).
//
// The single source of the GPU kernel. It is embedded in the Rust extension
// (`radam._core.ADAM_WGSL`, `radam::ADAM_WGSL`) and compiled once per device
// by python/radam/gpu.py.
//
// Layout of one dispatch (one chunk of one parameter group, or with norm
// clipping one tensor's part of a chunk):
//   binding 0  `s`      the step's scalars, computed on the host in f64 (by
//                       rust/scalars.rs through radam._core.step_scalars) and
//                       rounded once to f32 (no pow per element), plus the range
//                       [lo, hi) of elements of the chunk this dispatch steps;
//                       bound with a dynamic offset, one slot per dispatch;
//   binding 1  `param`  the chunk's params, updated in place;
//   binding 2  `grad`   the chunk's gradients;
//   binding 3  `state`  the chunk's optimizer state, interleaved per element:
//                       m, v (AdaMax: u), then AMSGrad's running max of v, then
//                       the momentum velocity, each only when used. Three
//                       storage buffers per stage whatever the options, so
//                       every variant runs on adapters that allow fewer than five.
// A chunk is at most max_storage_buffer_binding_size bytes of each binding; the
// host binds chunks at offsets aligned to min_storage_buffer_offset_alignment.

struct Step {
    step_size: f32,                 // the multiple of the direction (see rust/scalars.rs)
    inv_bias_correction2_sqrt: f32, // 1 / sqrt(1 - beta2^t), or 1, or downhill's constant
    one_minus_beta1: f32,           // 1 - beta1 * lambda^(t-1)
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    l2: f32,                        // L2 coefficient (used when L2 is true)
    decay: f32,                     // decoupled decay factor 1 - lr*wd (else 1)
    grad_mul: f32,                  // sign * norm-clipping factor / grad_scale
    clip: f32,                      // raw gradients clamped to +-clip (when CLIP is true)
    nadam_grad: f32,                // NAdam's multiple of g / denom
    momentum_keep: f32,             // momentum, or momentum^2 for Nesterov
    momentum_step: f32,             // 1, or 1 + momentum for Nesterov
    lo: u32,                        // first element of the chunk this dispatch steps
    hi: u32,                        // one past its last
    pad0: u32,
}

// The update rule (rust/kernel.rs's flags::RULE), chosen on the host per step.
const RULE_ADAM: u32 = 0u;      // m / (sqrt(v) * a + eps): Adam, efficient form, rectified RAdam
const RULE_ADAMAX: u32 = 1u;    // m / u, u the infinity norm
const RULE_NADAM: u32 = 2u;     // Adam's direction plus NAdam's gradient term
const RULE_UNADAPTED: u32 = 3u; // m alone: RAdam while its rectification is undefined

// Chosen once per pipeline: no per-element variant switch beyond a constant.
override AMSGRAD: bool = false;
override MOMENTUM: bool = false;
override L2: bool = false;
override CLIP: bool = false;
override RULE: u32 = 0u;
override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> s: Step;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

// The CPU kernel's max (not WGSL's max()), so NaN behaves the same.
fn cpu_max(a: f32, b: f32) -> f32 {
    return select(b, a, a > b);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // 2-D dispatch: x covers at most 65535 workgroups, y the rest.
    let i = s.lo + (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
    if (i >= s.hi) {
        return;
    }
    let stride = 2u + select(0u, 1u, AMSGRAD) + select(0u, 1u, MOMENTUM);
    let k = i * stride;

    // The same operations in the same order as rust/kernel.rs.
    var p = param[i];
    var g = grad[i];
    if (CLIP) {
        g = cpu_max(-s.clip, g);
        g = select(g, s.clip, g > s.clip);
    }
    g = g * s.grad_mul;
    if (L2) {
        g = fma(s.l2, p, g);
    }
    p = p * s.decay;
    let m_old = state[k];
    // m.lerp(g, 1 - beta1), as torch computes it.
    let m = fma(s.one_minus_beta1, g - m_old, m_old);
    state[k] = m;
    var extra = 0.0;
    var direction: f32;
    if (RULE == RULE_ADAMAX) {
        let u = cpu_max(s.beta2 * state[k + 1u], abs(g) + s.eps);
        state[k + 1u] = u;
        // u == 0 only where every gradient so far was 0, so m is 0 too.
        direction = select(0.0, m / u, u > 0.0);
    } else {
        let v = fma(s.beta2, state[k + 1u], (s.one_minus_beta2 * g) * g);
        state[k + 1u] = v;
        if (RULE == RULE_UNADAPTED) {
            direction = m;
        } else {
            var v_used = v;
            if (AMSGRAD) {
                v_used = cpu_max(v, state[k + 2u]);
                state[k + 2u] = v_used;
            }
            let denom = fma(sqrt(v_used), s.inv_bias_correction2_sqrt, s.eps);
            if (RULE == RULE_NADAM) {
                extra = s.nadam_grad * (g / denom);
            }
            direction = m / denom;
        }
    }
    if (MOMENTUM) {
        let kv = k + stride - 1u;
        let delta = fma(s.step_size, direction, extra);
        let vel = fma(s.momentum_keep, state[kv], -(s.momentum_step * delta));
        state[kv] = vel;
        param[i] = p + vel;
    } else {
        if (RULE == RULE_NADAM) {
            // Applied before the first-moment term, as torch does.
            p = p - extra;
        }
        param[i] = fma(-s.step_size, direction, p);
    }
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
