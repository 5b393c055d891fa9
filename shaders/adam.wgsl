// radam: the fused Adam step (Kingma & Ba, Algorithm 1, as torch.optim.Adam/AdamW,
// and its variants: AdaMax, NAdam, RAdam, AMSGrad, downhill's momentum/Nesterov
// velocity, element and norm clipping, loss scaling), one invocation per element,
// the same formula and operation order as the Rust CPU kernel (rust/kernel.rs).
//
// The single source of the GPU kernel. It is embedded in the Rust extension
// (`radam._core.ADAM_WGSL`, `radam::plumbing::ADAM_WGSL`) and compiled once per device
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
// dropped bits; a NaN made quiet. Overflow as round to nearest: infinity from the
// largest finite value plus half its gap (bits 0x7f7f8000) on, the largest below it.
fn f32_to_bf16_stochastic(x: f32, r: u32) -> u32 {
    let b = bitcast<u32>(x);
    let a = b & 0x7fffffffu;
    let up = select(0u, 1u, (r >> 16u) < (b & 0xffffu));
    let finite = min((a >> 16u) + up, 0x7f7fu);
    let magnitude = select(finite, 0x7f80u, a >= 0x7f7f8000u);
    let nan = a > 0x7f800000u;
    return select(magnitude | ((b >> 16u) & 0x8000u), (b >> 16u) | 0x40u, nan) & 0xffffu;
}

// f32 to f16 bits: normal results drop 13 bits (against the top 13 of r); below
// 2^-14 the dropped fraction of |x| * 2^24, taken to 32 bits, against all of r.
// Overflow as round to nearest: infinity from 65520 on, 65504 below it.
fn f32_to_f16_stochastic(x: f32, r: u32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    let up = select(0u, 1u, (r >> 19u) < (a & 0x1fffu));
    // (a >> 13) - ((127 - 15) << 10) as a wrapping u32, stopped at the largest.
    let normal = select(min((a >> 13u) + 0xfffe4000u + up, 0x7bffu), 0x7c00u, a >= 0x477ff000u);
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

// What every entry point takes: the builtins that place its invocation.
struct Place {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// The workgroup's index across a 2-D dispatch: x covers at most 65535
// workgroups, y the rest.
fn workgroup_index(at: Place) -> u32 {
    return at.wid.y * at.nwg.x + at.wid.x;
}

// The invocation's index across a 2-D dispatch of WORKGROUP_SIZE-wide workgroups.
fn invocation(at: Place) -> u32 {
    return workgroup_index(at) * WORKGROUP_SIZE + at.lid;
}

// One element's values before and after a step: its param and its state (m, v or
// AdaMax's u, AMSGrad's running max x, the momentum velocity w; those unused are 0).
struct Values {
    p: f32,
    m: f32,
    v: f32,
    x: f32,
    w: f32,
}

// The step of dispatch element i from its raw gradient `raw`: the same operations
// in the same order as rust/kernel.rs. Every state layout (f32, 16-bit, 8-bit blocks) loads
// `old` and stores the result in its own way around this one function.
fn update(raw: f32, old: Values, i: u32) -> Values {
    var out = old;
    var p = old.p;
    var g = raw;
    if (CLIP) {
        g = cpu_max(-s.clip, g);
        g = select(g, s.clip, g > s.clip);
    }
    g = g * s.grad_mul;
    if (L2) {
        g = fma(s.l2, p, g);
    }
    p = p * s.decay;
    // m.lerp(g, 1 - beta1), as torch computes it.
    out.m = fma(s.one_minus_beta1, g - old.m, old.m);
    var extra = 0.0;
    var direction: f32;
    if (RULE == RULE_ADAMAX) {
        out.v = cpu_max(s.beta2 * old.v, abs(g) + s.eps);
        // u == 0 only where every gradient so far was 0, so m is 0 too.
        direction = select(0.0, out.m / out.v, out.v > 0.0);
    } else {
        out.v = fma(s.beta2, old.v, (s.one_minus_beta2 * g) * g);
        if (RULE == RULE_UNADAPTED) {
            direction = out.m;
        } else {
            var v_used = out.v;
            if (AMSGRAD) {
                out.x = cpu_max(out.v, old.x);
                v_used = out.x;
            }
            let denom = fma(sqrt(v_used), s.inv_bias_correction2_sqrt, s.eps);
            if (RULE == RULE_NADAM) {
                extra = s.nadam_grad * (g / denom);
            }
            direction = out.m / denom;
        }
    }
    if (MOMENTUM) {
        let delta = fma(s.step_size, direction, extra);
        out.w = fma(s.momentum_keep, old.w, -(s.momentum_step * delta));
        out.p = round_param(p + out.w, i);
    } else {
        if (RULE == RULE_NADAM) {
            // Applied before the first-moment term, as torch does.
            p = p - extra;
        }
        out.p = round_param(fma(-s.step_size, direction, p), i);
    }
    return out;
}

// Step element i of the dispatch's float32 or 16-bit state with raw gradient `raw`,
// storing its state and param; returns the new param (adam_step and adam_step_rows).
fn step_element(i: u32, raw: f32) -> f32 {
    // Values per element, and the words they take (16-bit: two per word, padded).
    let stride = 2u + select(0u, 1u, AMSGRAD) + select(0u, 1u, MOMENTUM);
    let k = i * select((stride + 1u) / 2u, stride, STATE == STATE_F32);
    let kw = stride - 1u;
    // Each state value is widened when loaded and rounded once when stored, as
    // S::load / S::store in rust/kernel.rs.
    var old = Values(param[i], load_state(k, 0u), load_state(k, 1u), 0.0, 0.0);
    if (AMSGRAD) {
        old.x = load_state(k, 2u);
    }
    if (MOMENTUM) {
        old.w = load_state(k, kw);
    }
    let stepped = update(raw, old, i);
    store_f32(k, 0u, stepped.m);
    store_f32(k, 1u, stepped.v);
    store_word(k, 0u, stepped.m, stepped.v, true);
    if (AMSGRAD) {
        store_f32(k, 2u, stepped.x);
    }
    if (MOMENTUM) {
        store_f32(k, kw, stepped.w);
    }
    // 16-bit state: AMSGrad's max shares the second word with the velocity.
    if (AMSGRAD && MOMENTUM) {
        store_word(k, 1u, stepped.x, stepped.w, true);
    } else if (AMSGRAD) {
        store_word(k, 1u, stepped.x, 0.0, false);
    } else if (MOMENTUM) {
        store_word(k, 1u, stepped.w, 0.0, false);
    }
    param[i] = stepped.p;
    return stepped.p;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_step(at: Place) {
    let i = s.lo + invocation(at);
    if (i >= s.hi) {
        return;
    }
    step_element(i, grad[i]);
}

// -- 8-bit state (blockwise dynamic quantization, as rust/quant/codec.rs) -------------------
//
// The entry point adam_step_q8 steps the tensors whose state is 8-bit: one workgroup
// per Q8_GROUP_BLOCKS blocks of 256 consecutive elements of one tensor, 16 invocations
// of 16 elements to a block (so few invocations share each block's absmax, which they
// reduce with workgroup atomics).
// Each dispatch steps one tensor's part of a chunk, lo..hi, lo on a block boundary
// (the host lays every such tensor out from a block boundary). The state binding
// holds one record per block: for each used state value j (m, v, x, w as in
// adam_step), 64 words of codes (element 4i + b's code in byte b of word i, so the
// words viewed as bytes are the host's code array), then one absmax (f32 bits) per
// value. Decoding is values[code] * absmax; encoding takes the block's new absmax
// (its largest |value|, a NaN poisoning the block: absmax NaN, every code that of 0)
// and each value's code nearest to value * (1 / absmax), ties between two codes to
// the even one, decided on the float32 midpoints as bitsandbytes does. A block with
// infinities (and no NaN) keeps them, as rust/quant/codec.rs: absmax stored negated
// (-A, A its largest finite |value|), +inf at code 255, -inf at code 0, the finite
// values' codes under A kept off those; its code 255 decodes to +inf and the signed
// map's code 0 to -inf.

const Q8_BLOCK: u32 = 256u;
// Code words per block of one state value (4 codes to a word).
const Q8_LANES: u32 = 64u;
// Blocks per workgroup (the host's grid reads this line), and code words per
// invocation of each state value.
const Q8_GROUP_BLOCKS: u32 = 4u;
const Q8_WORDS: u32 = 4u;

// The two maps (signed for m and the velocity, unsigned for v and x): their 256
// values and 255 midpoints (values[k] + values[k + 1]) * 0.5, each padded to 256,
// signed first. Filled by the host from the Rust core's maps.
struct Maps {
    values: array<vec4<f32>, 128>,
    mids: array<vec4<f32>, 128>,
}
@group(0) @binding(4) var<uniform> maps: Maps;

// Per block q of the workgroup and state value j, at 4q + j: the largest finite |value|
// (bits), and 1 where the block holds an infinity, 2 where a NaN.
var<workgroup> q8_absmax: array<atomic<u32>, 16>;
var<workgroup> q8_nonfinite: array<atomic<u32>, 16>;
// The maps copied into workgroup memory (values, then midpoints), where lookups at
// different addresses across invocations do not serialize as a uniform's may.
var<workgroup> q8_maps: array<f32, 1024>;

// Invocation lid of a 64-wide workgroup's share of copying the maps into q8_maps
// (a workgroup barrier must follow before they are read).
fn copy_maps(lid: u32) {
    for (var k = 0u; k < 4u; k = k + 1u) {
        let row = lid * 4u + k;
        let v = select(maps.values[row % 128u], maps.mids[row % 128u], row >= 128u);
        for (var c = 0u; c < 4u; c = c + 1u) {
            q8_maps[row * 4u + c] = v[c];
        }
    }
}

fn map_value(book: u32, code: u32) -> f32 {
    return q8_maps[book * 256u + code];
}

fn map_mid(book: u32, k: u32) -> f32 {
    return q8_maps[512u + book * 256u + k];
}

// The code of 0: the signed map's middle, the unsigned map's first.
fn zero_code(book: u32) -> u32 {
    return select(0u, 127u, book == 0u);
}

// The map of state value j: signed for m (0) and the velocity (3).
fn book_of(j: u32) -> u32 {
    return select(1u, 0u, j == 0u || j == 3u);
}

// Whether the code of y is above k: y is past midpoint k, or on it where the upper
// code (k + 1) is even.
fn above_mid(book: u32, k: u32, y: f32) -> bool {
    let m = map_mid(book, k);
    return m < y || (m == y && (k & 1u) == 1u);
}

// Decade d's threshold: 10^(d - 7) * (1 + 3 / 2^d), past the midpoint below its first
// code (at most 1 + 1.8 / 2^d of 10^(d - 7) in both maps; for d = 0, the code of 0's
// midpoint) and short of the midpoint above it (at least 1 + 4.5 / 2^d); and 10^(6 - d).
const DECADE_THRESHOLDS = array<f32, 7>(4e-7, 2.5e-6, 1.75e-5, 1.375e-4, 1.1875e-3, 1.09375e-2, 1.046875e-1);
const DECADE_SCALES = array<f32, 7>(1e6, 1e5, 1e4, 1e3, 1e2, 1e1, 1.0);

// The code of y (not NaN): the number of midpoints below y, plus one where y is a
// midpoint whose upper code is even. Decade d (0..6) of a map holds n equal bins of
// [0.1, 1] * 10^(d - 6) (n = 2^(d+1) codes from code n - 1 unsigned, 2^d from
// 127 + n signed), each code's value in its bin; below decade 0 is the code of 0,
// above decade 6 the code of 1. An estimate by arithmetic, with no lookups, is the
// code of |y| or the one below it: the decade from comparisons with thresholds a
// little past each decade's first midpoint (where |y| lies between the two, the
// estimate is the last code of the decade below), the bin by a truncation biased
// down by a hundredth of a bin. One comparison with the midpoint above settles it.
// Negative y take the mirrored code (the signed map's negative half is the exact
// negation of its codes 127..254) or the code of 0 (unsigned). No transcendentals,
// no loops and one lookup: every invocation runs the same instructions.
fn nearest_code(book: u32, y: f32) -> u32 {
    let signed = book == 0u;
    let a = abs(y);
    // Decades reached (0..7), and 10^(6 - d) to scale |y| into [0.1, 1].
    var reached = 0u;
    var inv = 0.0;
    for (var k = 0u; k < 7u; k = k + 1u) {
        let past = a >= DECADE_THRESHOLDS[k];
        reached = reached + select(0u, 1u, past);
        inv = select(inv, DECADE_SCALES[k], past);
    }
    let d = max(reached, 1u) - 1u;
    let n = select(2u << d, 1u << d, signed);
    let u = (a * inv - 0.1) * (1.0 / 0.9);
    let j = u32(clamp(floor(u * f32(n) - 0.01), 0.0, f32(n - 1u)));
    var c = select(zero_code(book), select(n - 1u, 127u + n, signed) + j, reached > 0u);
    c = c + select(0u, 1u, above_mid(book, c, a));
    if (y < 0.0) {
        c = select(0u, 254u - min(c, 254u), signed);
    }
    return c;
}

// 1 / a rounded to nearest, for a normal, positive a whose reciprocal is normal,
// as the CPU's division gives it (WGSL's division may be off by 2.5 ulp): the
// quotient of the significands by long division, rounded on its remainder.
fn reciprocal(a: f32) -> f32 {
    let bits = bitcast<u32>(a);
    let mant = (bits & 0x7fffffu) | 0x800000u;
    let e = i32(bits >> 23u) - 127;
    if (mant == 0x800000u) {
        return ldexp(1.0, -e);
    }
    // q = floor(2^47 / mant), 2^23 <= q < 2^24, built a bit at a time.
    var r = 0x800000u;
    var q = 0u;
    for (var b = 0u; b < 24u; b = b + 1u) {
        r = r << 1u;
        q = q << 1u;
        if (r >= mant) {
            r = r - mant;
            q = q | 1u;
        }
    }
    // Round to nearest, ties to even (a tie cannot occur, but the rule costs nothing).
    if (2u * r > mant || (2u * r == mant && (q & 1u) == 1u)) {
        q = q + 1u;
    }
    // 1/a = 2^(-e-1) * (2^24 / mant) = q * 2^(-e-24); q <= 2^24 is exact in f32.
    return ldexp(f32(q), -e - 24);
}

const Q8_INFINITY: u32 = 0x7f800000u;

// A value decoded: values[code] * absmax, or an infinity at an end code of a
// block whose absmax has its sign bit set (values[255] is 1, the signed map's
// values[0] is -1).
fn decode_q8(book: u32, code: u32, absmax: f32) -> f32 {
    let bits = bitcast<u32>(absmax);
    let end = code == 255u || (code == 0u && book == 0u);
    let infinite = (bits >> 31u) == 1u && (bits & 0x7fffffffu) <= Q8_INFINITY && end;
    return map_value(book, code) * select(abs(absmax), bitcast<f32>(Q8_INFINITY), infinite);
}

// The factor and the scale by which a block's finite values are encoded (x * factor *
// scale): 1 and 1 / A (A its largest finite |x|, its bits `bits`); where 1 / A would
// leave the normal range, an exact power of two first, as the CPU does. Computed once
// per block and state value.
fn block_scale(bits: u32) -> vec2<f32> {
    if (bits == 0u) {
        return vec2<f32>(1.0, 0.0);
    }
    var factor = 1.0;
    if (bits < 0x00800000u) {
        factor = ldexp(1.0, 64);
    } else if (bits > 0x7e800000u) {
        factor = ldexp(1.0, -64);
    }
    return vec2<f32>(factor, reciprocal(bitcast<f32>(bits) * factor));
}

// Codes of 4 values x of an invocation, packed into one word, given their block's
// block_scale and what the block holds besides finite values (`nonfinite`, as
// q8_nonfinite).
fn encode4(book: u32, x: vec4<f32>, scaled: vec2<f32>, nonfinite: u32) -> u32 {
    if ((nonfinite & 2u) != 0u) {
        let zero = zero_code(book);
        return zero | (zero << 8u) | (zero << 16u) | (zero << 24u);
    }
    var word = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let y = select((x[b] * scaled.x) * scaled.y, 0.0, (bitcast<u32>(x[b]) & 0x7fffffffu) >= Q8_INFINITY);
        word = word | (nearest_code(book, y) << (8u * b));
    }
    if (nonfinite != 0u) {
        // Infinities at the end codes; the finite values kept off them.
        let lowest = select(0u, 1u, book == 0u);
        var kept = 0u;
        for (var b = 0u; b < 4u; b = b + 1u) {
            var c = clamp((word >> (8u * b)) & 0xffu, lowest, 254u);
            let xb = bitcast<u32>(x[b]);
            if ((xb & 0x7fffffffu) == Q8_INFINITY) {
                c = select(255u, 0u, (xb >> 31u) == 1u);
            }
            kept = kept | (c << (8u * b));
        }
        word = kept;
    }
    return word;
}

// The block's absmax as stored, from its largest finite |x| and what else it holds.
fn absmax_of(bits: u32, nonfinite: u32) -> f32 {
    if ((nonfinite & 2u) != 0u) {
        return bitcast<f32>(0x7fc00000u);
    }
    return bitcast<f32>(bits | select(0u, 0x80000000u, nonfinite != 0u));
}

// The largest finite |x| of 4 values, as bits.
fn abs_bits4(x: vec4<f32>, valid: vec4<bool>) -> u32 {
    var m = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let a = bitcast<u32>(x[b]) & 0x7fffffffu;
        m = max(m, select(0u, a, valid[b] && a < Q8_INFINITY));
    }
    return m;
}

// What else 4 values hold: 1 for an infinity, 2 for a NaN (as q8_nonfinite).
fn nonfinite4(x: vec4<f32>, valid: vec4<bool>) -> u32 {
    var f = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let a = bitcast<u32>(x[b]) & 0x7fffffffu;
        f = f | select(0u, select(1u, 2u, a > Q8_INFINITY), valid[b] && a >= Q8_INFINITY);
    }
    return f;
}

@compute @workgroup_size(64)
fn adam_step_q8(at: Place) {
    let lid = at.lid;
    // Block q of the workgroup; this invocation's code words in it, r * Q8_WORDS on.
    let q = lid / (Q8_LANES / Q8_WORDS);
    let r = lid % (Q8_LANES / Q8_WORDS);
    // The block's first element in the chunk; every invocation reaches the barriers.
    let first = s.lo + (workgroup_index(at) * Q8_GROUP_BLOCKS + q) * Q8_BLOCK;
    let block = first / Q8_BLOCK;
    let used = 2u + select(0u, 1u, AMSGRAD) + select(0u, 1u, MOMENTUM);
    // State values j present: m, v, then x (AMSGRAD), then w (MOMENTUM); the slot
    // each takes in the record.
    let base = block * used * (Q8_LANES + 1u);
    let slot_x = 2u;
    let slot_w = used - 1u;
    if (lid < 4u * Q8_GROUP_BLOCKS) {
        atomicStore(&q8_absmax[lid], 0u);
        atomicStore(&q8_nonfinite[lid], 0u);
    }
    copy_maps(lid);
    workgroupBarrier();
    let live = first < s.hi;
    // The new state values, per code word and state value: [w][j].
    var kept: array<array<vec4<f32>, 4>, Q8_WORDS>;
    if (live) {
        var scales: vec4<f32>;
        for (var j = 0u; j < used; j = j + 1u) {
            scales[j] = bitcast<f32>(state[base + used * Q8_LANES + j]);
        }
        var largest = vec4<u32>(0u);
        var nonfinite = vec4<u32>(0u);
        for (var w = 0u; w < Q8_WORDS; w = w + 1u) {
            let word = r * Q8_WORDS + w;
            var words: vec4<u32>;
            for (var j = 0u; j < used; j = j + 1u) {
                words[j] = state[base + j * Q8_LANES + word];
            }
            var fresh: array<Values, 4>;
            var valid: vec4<bool>;
            for (var b = 0u; b < 4u; b = b + 1u) {
                let i = first + 4u * word + b;
                valid[b] = i < s.hi;
                var decoded: vec4<f32>;
                for (var j = 0u; j < used; j = j + 1u) {
                    let code = (words[j] >> (8u * b)) & 0xffu;
                    decoded[j] = decode_q8(book_of_slot(j, used), code, scales[j]);
                }
                if (valid[b]) {
                    var old = Values(param[i], decoded[0], decoded[1], 0.0, 0.0);
                    if (AMSGRAD) {
                        old.x = decoded[slot_x];
                    }
                    if (MOMENTUM) {
                        old.w = decoded[slot_w];
                    }
                    fresh[b] = update(grad[i], old, i);
                    param[i] = fresh[b].p;
                } else {
                    fresh[b] = Values(0.0, 0.0, 0.0, 0.0, 0.0);
                }
            }
            for (var j = 0u; j < used; j = j + 1u) {
                let values = slot_values(fresh, j, used);
                kept[w][j] = values;
                largest[j] = max(largest[j], abs_bits4(values, valid));
                nonfinite[j] = nonfinite[j] | nonfinite4(values, valid);
            }
        }
        for (var j = 0u; j < used; j = j + 1u) {
            atomicMax(&q8_absmax[4u * q + j], largest[j]);
            atomicOr(&q8_nonfinite[4u * q + j], nonfinite[j]);
        }
    }
    workgroupBarrier();
    if (live) {
        for (var j = 0u; j < used; j = j + 1u) {
            let bits = atomicLoad(&q8_absmax[4u * q + j]);
            let nonfinite = atomicLoad(&q8_nonfinite[4u * q + j]);
            let book = book_of_slot(j, used);
            let scaled = block_scale(bits);
            for (var w = 0u; w < Q8_WORDS; w = w + 1u) {
                state[base + j * Q8_LANES + r * Q8_WORDS + w] = encode4(book, kept[w][j], scaled, nonfinite);
            }
            if (r == 0u) {
                state[base + used * Q8_LANES + j] = bitcast<u32>(absmax_of(bits, nonfinite));
            }
        }
    }
}

// The state value in record slot j: m, v, then x where AMSGRAD, then w where MOMENTUM.
fn slot_of(j: u32, used: u32) -> u32 {
    if (j < 2u) {
        return j;
    }
    if (MOMENTUM && j == used - 1u) {
        return 3u;
    }
    return 2u;
}

fn book_of_slot(j: u32, used: u32) -> u32 {
    return book_of(slot_of(j, used));
}

// Slot j's new values of the invocation's 4 elements.
fn slot_values(v: array<Values, 4>, j: u32, used: u32) -> vec4<f32> {
    var out: vec4<f32>;
    let which = slot_of(j, used);
    for (var b = 0u; b < 4u; b = b + 1u) {
        let e = v[b];
        out[b] = select(select(select(e.w, e.x, which == 2u), e.v, which == 1u), e.m, which == 0u);
    }
    return out;
}

// -- row-sparse (lazy) steps: radam.RowSparse, as rust/rows.rs ------------------------------
//
// The entry point adam_step_rows steps only the named rows of one tensor of float32 or
// 16-bit state: one invocation per element of its coalesced gradient (the rows named,
// each once, ascending, with their values summed on the host as the CPU sums them).
// Bind group 0 is adam_step's, its slot a per-tensor dispatch (lo..hi of the chunk,
// round_first the index in the tensor of element lo); the grads binding goes unread.
// Bind group 1 is one buffer, bound at its exact size (one storage binding more than
// adam_step, four in all): the number of rows, the rows, then their values (f32
// bits), so a row's length is the values' count over the rows'. Each value is replaced
// by its element's new param, which the host reads back instead of the whole table.
// An element outside this dispatch's chunk is left to the dispatch of its own chunk.

@group(1) @binding(0) var<storage, read_write> rows: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_step_rows(at: Place) {
    let e = invocation(at);
    let named = rows[0];
    let first_value = 1u + named;
    let n = arrayLength(&rows) - first_value;
    if (e >= n) {
        return;
    }
    let row_len = n / named;
    // The element's index in its tensor (the host keeps tensors under 2^32 elements).
    let t = rows[1u + e / row_len] * row_len + e % row_len;
    if (t < s.round_first || t - s.round_first >= s.hi - s.lo) {
        return;
    }
    let k = first_value + e;
    rows[k] = bitcast<u32>(step_element(s.lo + (t - s.round_first), bitcast<f32>(rows[k])));
}
