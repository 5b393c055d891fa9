// radam: the fused Adam step (Kingma & Ba, Algorithm 1, as torch.optim.Adam/AdamW,
// and its variants: AdaMax, NAdam, RAdam, AMSGrad, downhill's momentum/Nesterov
// velocity, element and norm clipping, loss scaling), one invocation per element,
// the same formula and operation order as the Rust CPU kernel (rust/kernel.rs).
//
// The single source of the GPU kernel. It is embedded in the Rust extension
// (`radam._core.ADAM_WGSL`, `radam::ADAM_WGSL`) and compiled once per device
// by python/radam/gpu/_device.py.
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
//                       With STATE f32, one word per value (an f32's bits). With
//                       16-bit state (bf16 or f16), two values per u32 word, the
//                       first in the low half (little-endian, as the host's
//                       16-bit arrays): (m, v) fill one word, and (max_v,
//                       velocity) a second one, its high half zero when only one
//                       of them is used. Each element owns whole words, so no two
//                       invocations write the same word.
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
    round_key: u32,                 // stochastic rounding: the key of the dispatch's tensor
    round_first: u32,               // and the index in that tensor of element lo
    pad0: u32,
    pad1: u32,
    pad2: u32,
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
// How the state is stored: f32, or 16-bit values two per word, converted as
// rust/convert.rs does (widened exactly, NaN made quiet; rounded to nearest even
// once per store, on the bits, so every adapter gives the CPU's bits).
const STATE_F32: u32 = 0u;
const STATE_BF16: u32 = 1u;
const STATE_F16: u32 = 2u;
override STATE: u32 = 0u;
// 16-bit params (without master weights): the param buffer is f32 and holds their
// values exactly; each stored param is rounded to PARAM's format (STATE_* codes;
// STATE_F32: not rounded), as the CPU's staging stores a 16-bit param.
override PARAM: u32 = 0u;
// With a 16-bit PARAM: round stochastically (rust/quant/stochastic.rs), with random
// bits lowbias32(index in the tensor ^ round_key); one dispatch per tensor.
override STOCHASTIC: bool = false;

@group(0) @binding(0) var<uniform> s: Step;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<u32>;

// The CPU kernel's max (not WGSL's max()), so NaN behaves the same.
fn cpu_max(a: f32, b: f32) -> f32 {
    return select(b, a, a > b);
}

// -- 16-bit conversions, bit for bit those of rust/convert.rs --------------------------------

// bf16 bits (low 16 of h) to f32: the high half of an f32; a NaN comes back quiet.
fn bf16_to_f32(h: u32) -> f32 {
    let b = (h & 0xffffu) << 16u;
    return bitcast<f32>(select(b, b | 0x00400000u, (b & 0x7fffffffu) > 0x7f800000u));
}

// f32 to bf16 bits: adding 0x7fff plus the kept lowest bit rounds to nearest, ties
// to even; a NaN keeps its top payload bits and becomes quiet.
fn f32_to_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let rounded = (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
    let quiet_nan = (b >> 16u) | 0x40u;
    return select(rounded, quiet_nan, (b & 0x7fffffffu) > 0x7f800000u) & 0xffffu;
}

// f16 bits (low 16 of h) to f32, after F. Giesen's half_to_float: shift into place,
// rebias, and renormalize subnormals with one exact float subtraction.
fn f16_to_f32(h: u32) -> f32 {
    let shifted = (h & 0x7fffu) << 13u;
    let e = shifted & (0x7c00u << 13u);
    let normal = shifted + ((127u - 15u) << 23u);
    let inf_nan = (normal + ((128u - 16u) << 23u))
        | select(0u, 0x00400000u, shifted > (0x7c00u << 13u));
    let sub = bitcast<u32>(bitcast<f32>(normal + (1u << 23u)) - bitcast<f32>(113u << 23u));
    let bits = select(select(normal, sub, e == 0u), inf_nan, e == (0x7c00u << 13u));
    return bitcast<f32>(bits | ((h & 0x8000u) << 16u));
}

// f32 to f16 bits, after F. Giesen's float_to_half_fast3_rtne: round to nearest even
// (results below 2^-14 rounded by the float adder, with 0.5 added), overflow to
// infinity, NaN kept quiet with its top payload bits. Not pack2x16float, whose
// rounding and overflow WGSL leaves to the implementation.
fn f32_to_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    let denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23u;
    let sub = bitcast<u32>(bitcast<f32>(a) + bitcast<f32>(denorm_magic)) - denorm_magic;
    let odd = (a >> 13u) & 1u;
    // (15 - 127) << 23 as a wrapping u32.
    let rebias = 0xc8000000u;
    let normal = (a + rebias + 0xfffu + odd) >> 13u;
    let finite = select(normal, sub, a < (113u << 23u));
    let big = select(0x7c00u, 0x7e00u | ((a >> 13u) & 0x3ffu), a > 0x7f800000u);
    return (select(finite, big, a >= ((127u + 16u) << 23u)) | sign) & 0xffffu;
}

fn widen(h: u32) -> f32 {
    if (STATE == STATE_BF16) {
        return bf16_to_f32(h);
    }
    return f16_to_f32(h);
}

fn narrow(x: f32) -> u32 {
    if (STATE == STATE_BF16) {
        return f32_to_bf16(x);
    }
    return f32_to_f16(x);
}

// -- stochastic rounding, bit for bit rust/quant/stochastic.rs ------------------------------

// Chris Wellons' lowbias32 mixer (u32 products wrap, as Rust's wrapping_mul).
fn lowbias32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// f32 to bf16 bits, away from zero when the top 16 bits of r are below the 16
// dropped bits; a NaN made quiet.
fn f32_to_bf16_stochastic(x: f32, r: u32) -> u32 {
    let b = bitcast<u32>(x);
    let up = select(0u, 1u, (r >> 16u) < (b & 0xffffu));
    let nan = (b & 0x7fffffffu) > 0x7f800000u;
    return select((b >> 16u) + up, (b >> 16u) | 0x40u, nan) & 0xffffu;
}

// f32 to f16 bits: normal results drop 13 bits (against the top 13 of r); below
// 2^-14 the dropped fraction of |x| * 2^24, taken to 32 bits, against all of r.
fn f32_to_f16_stochastic(x: f32, r: u32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    let up = select(0u, 1u, (r >> 19u) < (a & 0x1fffu));
    // (a >> 13) - ((127 - 15) << 10) as a wrapping u32, stopped at infinity.
    let normal = min((a >> 13u) + 0xfffe4000u + up, 0x7c00u);
    let e = max(a >> 23u, 1u);
    let m = (a & 0x7fffffu) | select(0u, 0x800000u, (a >> 23u) != 0u);
    let dropped = 126u - e; // wraps for exponents past 126, as in Rust
    let whole = m >> min(dropped, 31u);
    let fraction = select(
        m >> (min(dropped - 32u, 31u)),
        m << ((32u - dropped) & 31u),
        dropped <= 32u,
    );
    let sub = whole + select(0u, 1u, r < fraction);
    let nan = 0x7e00u | ((a >> 13u) & 0x3ffu);
    let finite = select(sub, normal, a >= (113u << 23u));
    return (select(finite, nan, a > 0x7f800000u) | sign) & 0xffffu;
}

// A param as stored: rounded once to PARAM's 16-bit format (to nearest, or
// stochastically with the bits of element i of the dispatch), or as is.
fn round_param(x: f32, i: u32) -> f32 {
    if (STOCHASTIC && PARAM != STATE_F32) {
        let r = lowbias32((i - s.lo + s.round_first) ^ s.round_key);
        if (PARAM == STATE_BF16) {
            return bf16_to_f32(f32_to_bf16_stochastic(x, r));
        }
        return f16_to_f32(f32_to_f16_stochastic(x, r));
    }
    if (PARAM == STATE_BF16) {
        return bf16_to_f32(f32_to_bf16(x));
    }
    if (PARAM == STATE_F16) {
        return f16_to_f32(f32_to_f16(x));
    }
    return x;
}

// State value j of the element whose words start at k.
fn load_state(k: u32, j: u32) -> f32 {
    if (STATE == STATE_F32) {
        return bitcast<f32>(state[k + j]);
    }
    let w = state[k + j / 2u];
    return widen(select(w, w >> 16u, (j & 1u) == 1u));
}

// f32 state: value j, stored as soon as it is known (16-bit state: nothing).
fn store_f32(k: u32, j: u32, x: f32) {
    if (STATE == STATE_F32) {
        state[k + j] = bitcast<u32>(x);
    }
}

// 16-bit state: word w, the values `low` and (when `both`) `high`, each rounded once
// (f32 state: nothing).
fn store_word(k: u32, w: u32, low: f32, high: f32, both: bool) {
    if (STATE != STATE_F32) {
        state[k + w] = narrow(low) | select(0u, narrow(high) << 16u, both);
    }
}

// The invocation's index across a 2-D dispatch: x covers at most 65535
// workgroups, y the rest.
fn invocation(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = s.lo + invocation(wid, nwg, lid);
    if (i >= s.hi) {
        return;
    }
    // Values per element, and the words they take (16-bit: two per word, padded).
    let stride = 2u + select(0u, 1u, AMSGRAD) + select(0u, 1u, MOMENTUM);
    let k = i * select((stride + 1u) / 2u, stride, STATE == STATE_F32);

    // The same operations in the same order as rust/kernel.rs; each state value is
    // widened when loaded and rounded once when stored, as S::load / S::store there.
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
    let m_old = load_state(k, 0u);
    // m.lerp(g, 1 - beta1), as torch computes it.
    let m = fma(s.one_minus_beta1, g - m_old, m_old);
    store_f32(k, 0u, m);
    // AMSGrad's max: 16-bit state stores it with the velocity, so it is stored back
    // unchanged where the rule does not update it.
    var v_max = 0.0;
    if (AMSGRAD && STATE != STATE_F32) {
        v_max = load_state(k, 2u);
    }
    var extra = 0.0;
    var direction: f32;
    if (RULE == RULE_ADAMAX) {
        let u = cpu_max(s.beta2 * load_state(k, 1u), abs(g) + s.eps);
        store_f32(k, 1u, u);
        store_word(k, 0u, m, u, true);
        // u == 0 only where every gradient so far was 0, so m is 0 too.
        direction = select(0.0, m / u, u > 0.0);
    } else {
        let v = fma(s.beta2, load_state(k, 1u), (s.one_minus_beta2 * g) * g);
        store_f32(k, 1u, v);
        store_word(k, 0u, m, v, true);
        if (RULE == RULE_UNADAPTED) {
            direction = m;
        } else {
            var v_used = v;
            if (AMSGRAD) {
                v_used = cpu_max(v, load_state(k, 2u));
                v_max = v_used;
                store_f32(k, 2u, v_max);
            }
            let denom = fma(sqrt(v_used), s.inv_bias_correction2_sqrt, s.eps);
            if (RULE == RULE_NADAM) {
                extra = s.nadam_grad * (g / denom);
            }
            direction = m / denom;
        }
    }
    if (MOMENTUM) {
        let kv = stride - 1u;
        let delta = fma(s.step_size, direction, extra);
        let vel = fma(s.momentum_keep, load_state(k, kv), -(s.momentum_step * delta));
        store_f32(k, kv, vel);
        if (AMSGRAD) {
            store_word(k, 1u, v_max, vel, true);
        } else {
            store_word(k, 1u, vel, 0.0, false);
        }
        param[i] = round_param(p + vel, i);
    } else {
        if (AMSGRAD) {
            store_word(k, 1u, v_max, 0.0, false);
        }
        if (RULE == RULE_NADAM) {
            // Applied before the first-moment term, as torch does.
            p = p - extra;
        }
        param[i] = round_param(fma(-s.step_size, direction, p), i);
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
    let i = invocation(wid, nwg, lid);
    if (i >= arrayLength(&copy_dst)) {
        return;
    }
    copy_dst[i] = copy_src[i];
}

// The 16-bit conversions alone, for the tests (tests/test_gpu.py compares them with
// NumPy's and ml_dtypes' on every 16-bit value and every rounding boundary): per
// input word x, f32 -> bf16 and f32 -> f16 of bitcast<f32>(x), then the f32 bits of
// bf16 -> f32 and f16 -> f32 of x's low half.
@group(0) @binding(0) var<storage, read> conv_in: array<u32>;
@group(0) @binding(1) var<storage, read_write> conv_out: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn convert16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = invocation(wid, nwg, lid);
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
fn round16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = invocation(wid, nwg, lid);
    if (2u * i + 1u >= arrayLength(&conv_in)) {
        return;
    }
    let x = bitcast<f32>(conv_in[2u * i]);
    let r = conv_in[2u * i + 1u];
    conv_out[3u * i] = f32_to_bf16_stochastic(x, r);
    conv_out[3u * i + 1u] = f32_to_f16_stochastic(x, r);
    conv_out[3u * i + 2u] = lowbias32(r);
}
