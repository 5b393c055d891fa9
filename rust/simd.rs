//! Run-time SIMD dispatch, in the manner of orjson: the kernel body is
//! compiled once per instruction set inside a `#[target_feature]` function,
//! and the best level the CPU supports is chosen once, at run time. The
//! crate itself is built for the baseline ISA.

// TODO(lints): cleaned on branch codec/unify
#![allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::any::Any;
use std::sync::OnceLock;

use crate::convert::Store;
use crate::element::Float;
use crate::kernel::{update, with_variants, Coeffs, Slices};

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable code; also what non-x86, non-ARM targets run.
    Scalar,
    /// aarch64 NEON (128-bit).
    Neon,
    /// x86_64 AVX2 with FMA (256-bit).
    Avx2,
    /// x86_64 AVX-512F (512-bit).
    Avx512,
}

impl SimdLevel {
    /// Every level, from the narrowest to the widest.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// The level's name as `radam.simd_level()` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2+fma",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best supported level, detected once.
    pub fn detect() -> SimdLevel {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            Self::ALL
                .into_iter()
                .rev()
                .find(|level| level.is_supported())
                .unwrap_or(SimdLevel::Scalar)
        })
    }

    /// Every level this CPU supports (for tests that compare them).
    pub fn supported() -> Vec<SimdLevel> {
        Self::ALL.into_iter().filter(|l| l.is_supported()).collect()
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel body, instantiated inside a function compiled for one instruction set.
macro_rules! level_kernel {
    ($name:ident, $($feature:literal),+) => {
        /// # Safety
        /// The CPU must support the named target features.
        #[target_feature($(enable = $feature),+)]
        unsafe fn $name<T: Float, S: Store<T>, const F: u32>(c: &Coeffs<T>, s: Slices<'_, T, S>) {
            update::<T, S, F>(c, s)
        }
    };
}

#[cfg(target_arch = "x86_64")]
level_kernel!(update_avx512, "avx512f", "avx2", "fma");
#[cfg(target_arch = "x86_64")]
level_kernel!(update_avx2, "avx2", "fma");
#[cfg(target_arch = "aarch64")]
level_kernel!(update_neon, "neon");

fn update_scalar<T: Float, S: Store<T>, const F: u32>(c: &Coeffs<T>, s: Slices<'_, T, S>) {
    update::<T, S, F>(c, s)
}

/// A kernel for one element type, variant and SIMD level, chosen once per piece.
pub type KernelFn<T, S = T> = fn(&Coeffs<T>, Slices<'_, T, S>);

fn pick_level<T: Float, S: Store<T>, const F: u32>(level: SimdLevel) -> KernelFn<T, S> {
    match level {
        // SAFETY (all arms): a `KernelFn` is only picked for a level that
        // `is_supported()` said the CPU runs (checked by `kernel_for`).
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => |c, s| unsafe { update_avx512::<T, S, F>(c, s) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => |c, s| unsafe { update_avx2::<T, S, F>(c, s) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => |c, s| unsafe { update_neon::<T, S, F>(c, s) },
        _ => update_scalar::<T, S, F>,
    }
}

/// Instantiate `pick_level` for the listed variants.
macro_rules! pick_variant {
    ($level:expr, $variant:expr, $($f:expr),+) => {
        match $variant {
            $(v if v == $f => pick_level::<T, S, { $f }>($level),)+
            // Unreachable: `StepScalars::coeffs` only builds the variants listed.
            _ => {
                debug_assert!(false, "variant {} is not compiled", $variant);
                pick_level::<T, S, 0>($level)
            }
        }
    };
}

/// The kernel for `coeffs`' variant at `level`, or the scalar one if the CPU lacks `level`.
pub(crate) fn kernel_for<T: Float, S: Store<T>>(
    level: SimdLevel,
    coeffs: &Coeffs<T>,
) -> KernelFn<T, S> {
    let level = if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    };
    with_variants!(pick_variant!(level, coeffs.variant,))
}

/// The kernel that reads and writes `S`-stored state (bfloat16 or float16) in
/// its loop, for compute type `T`, where there is one: f32 has branch-free
/// conversions to and from both (`convert.rs`); other types stage 16-bit
/// state through blocks instead. Whether `T` is f32 is decided when this is
/// compiled (the downcast is of a type, not a value), so it costs nothing.
pub(crate) fn fused_16bit_kernel<T: Float, S: Store<f32>>(
    level: SimdLevel,
    coeffs: &Coeffs<T>,
) -> Option<KernelFn<T, S>> {
    let coeffs: &Coeffs<f32> = (coeffs as &dyn Any).downcast_ref()?;
    let kernel: KernelFn<f32, S> = kernel_for(level, coeffs);
    (&kernel as &dyn Any)
        .downcast_ref::<KernelFn<T, S>>()
        .copied()
}
