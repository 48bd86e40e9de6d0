//! The packed encoder's element-wise kernels: exact GELU, bias + residual + LayerNorm, softmax,
//! and the dot/axpy loops of attention.
//!
//! The crate is built for baseline x86_64 (SSE2 only), so a plainly written loop is vectorised
//! 4 floats wide with separate multiplies and adds. Each kernel here is therefore written once,
//! as plain Rust generic over `FMA` (whether `a * b + c` may be one fused instruction), and
//! instantiated three times: inside `#[target_feature(enable = "avx512f,avx2,fma")]` and
//! `#[target_feature(enable = "avx2,fma")]` functions, where LLVM vectorises the same loops 16
//! or 8 wide with FMAs, and as a portable fallback. [`Kernels::detect`] picks the widest the CPU
//! runs (`is_x86_feature_detected!`) and the choice is a plain function-pointer
//! table, so the hot loops never re-check it. Non-x86 targets get the portable table only.
//!
//! `exp` and `erf` are branch-free polynomial approximations (so they vectorise; `f32::exp` and
//! libm's `erf` are scalar calls): `exp` is a Cephes-style range reduction with a degree-6
//! polynomial (max relative error 8e-8 measured, under one f32 ulp) and `erf` is the rational
//! approximation Eigen uses for `float` (max absolute error 4e-7 measured: a few f32 ulps near
//! ±1, where GELU is x or 0 anyway). Both are held to
//! libm/std over dense ranges by the tests below, and the encoder as a whole to PyTorch by
//! `tests/model.rs`.

/// `a * b + c`, fused when `FMA` (only ever true inside an `fma` target-feature function, where
/// `mul_add` is one instruction; elsewhere it would be a libm call per element).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp(x)`, branch-free; inputs are clamped to [-87.3, 88.7] (the f32 range without denormals
/// or infinity), which is all softmax needs.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published.
pub(crate) fn exp_approx<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest (Cephes).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a branch or
    // a rounding instruction SSE2 lacks.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let n = madd::<FMA>(x, LOG2E, ROUND) - ROUND;
    let r = madd::<FMA>(n, -LN2_HI, x);
    let r = madd::<FMA>(n, -LN2_LO, r);
    // Cephes expf polynomial for e^r - 1 - r on [-ln2/2, ln2/2].
    let mut p = 1.987_569_150_0e-4_f32;
    p = madd::<FMA>(p, r, 1.398_199_950_7e-3);
    p = madd::<FMA>(p, r, 8.333_451_907_3e-3);
    p = madd::<FMA>(p, r, 4.166_579_589_4e-2);
    p = madd::<FMA>(p, r, 1.666_666_545_9e-1);
    p = madd::<FMA>(p, r, 5.000_000_120_1e-1);
    let e = madd::<FMA>(p, r * r, r) + 1.0;
    // 2^n through the exponent bits; n is in [-126, 128) after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

/// `erf(x)`, branch-free: Eigen's rational approximation for `float` (odd numerator of degree
/// 13 over an even denominator of degree 8, on x clamped to [-4, 4] where erf is ±1 in f32).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Eigen's coefficients, as published.
pub(crate) fn erf_approx<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_258_013_06e-10_f32;
    p = madd::<FMA>(x2, p, 2.770_681_424_959_02e-8);
    p = madd::<FMA>(x2, p, -2.101_024_020_825_08e-6);
    p = madd::<FMA>(x2, p, -5.692_506_394_623_46e-5);
    p = madd::<FMA>(x2, p, -7.349_906_303_268_55e-4);
    p = madd::<FMA>(x2, p, -2.954_599_808_540_25e-3);
    p = madd::<FMA>(x2, p, -1.609_603_332_624_15e-2);
    let p = x * p;
    let mut q = -1.456_607_184_649_96e-5_f32;
    q = madd::<FMA>(x2, q, -2.133_740_552_789_05e-4);
    q = madd::<FMA>(x2, q, -1.682_826_974_382_03e-3);
    q = madd::<FMA>(x2, q, -7.373_329_167_204_68e-3);
    q = madd::<FMA>(x2, q, -1.426_473_905_141_89e-2);
    // Rounded in f32 the ratio can overshoot ±1 by an ulp or two near |x| ≈ 3.6; erf never does.
    (p / q).clamp(-1.0, 1.0)
}

/// `x + bias`, then exact GELU (`x/2 (1 + erf(x/√2))`, BERT's "gelu"), in place over rows of
/// `bias.len()`.
#[inline(always)]
fn bias_gelu_body<const FMA: bool>(rows: &mut [f32], bias: &[f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            let v = *x + b;
            let half = 0.5 * v;
            *x = madd::<FMA>(half, erf_approx::<FMA>(v * FRAC_1_SQRT_2), half);
        }
    }
}

/// `LayerNorm(x + bias + residual)` per row, written into `residual` (the hidden state the
/// next layer reads). Two passes over each row (mean, then variance of the centred values, as
/// PyTorch computes it), all in L1.
#[inline(always)]
fn add_layer_norm_body<const FMA: bool>(
    x: &mut [f32],
    bias: &[f32],
    residual: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = bias.len();
    let inv_width = 1.0 / width as f32;
    for (row, res) in x
        .chunks_exact_mut(width)
        .zip(residual.chunks_exact_mut(width))
    {
        let mut sum = [0f32; 8];
        for ((xs, bs), rs) in row
            .chunks_exact_mut(8)
            .zip(bias.chunks_exact(8))
            .zip(res.chunks_exact(8))
        {
            for l in 0..8 {
                xs[l] = xs[l] + bs[l] + rs[l];
                sum[l] += xs[l];
            }
        }
        let mean = sum.iter().sum::<f32>() * inv_width;
        let mut var = [0f32; 8];
        for xs in row.chunks_exact(8) {
            for l in 0..8 {
                let d = xs[l] - mean;
                var[l] = madd::<FMA>(d, d, var[l]);
            }
        }
        let rstd = 1.0 / (var.iter().sum::<f32>() * inv_width + eps).sqrt();
        for (((out, xv), g), b) in res.iter_mut().zip(row.iter()).zip(gamma).zip(beta) {
            *out = madd::<FMA>((xv - mean) * rstd, *g, *b);
        }
    }
}

/// LayerNorm in place per row (the embeddings' sum).
#[inline(always)]
fn layer_norm_body<const FMA: bool>(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    let inv_width = 1.0 / width as f32;
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().sum::<f32>() * inv_width;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() * inv_width;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = madd::<FMA>((*v - mean) * rstd, *g, *b);
        }
    }
}

/// `exp(x - max)` in place, returning the sum (the caller scales by its inverse).
#[inline(always)]
fn softmax_body<const FMA: bool>(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = exp_approx::<FMA>(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Keys are processed in blocks of this many (one AVX-512 vector).
pub(crate) const KEY_BLOCK: usize = 16;

/// One attention row: `scores[j] = scale * q · k_j`, softmax, then `out = Σ_j p_j v_j`.
///
/// `kt` is K transposed (`[d x stride]`, one row per dimension, `stride` = the key count
/// rounded up to [`KEY_BLOCK`]), so a block of 16 keys' scores accumulates in one vector
/// register over the `d` dimensions (no horizontal sums, no scalar tail for a 14-token line);
/// `scores` is `stride` long and only its first `len` entries (the real keys) enter the softmax.
/// `v` is `[len x d]`; the output accumulates the same way, 16 dimensions per register.
#[inline(always)]
fn attend_body<const FMA: bool>(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    scale: f32,
    len: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    let stride = scores.len();
    // Each block of keys keeps its scores in one register across all d dimensions.
    for (block, s) in scores.chunks_exact_mut(KEY_BLOCK).enumerate() {
        let mut acc = [0f32; KEY_BLOCK];
        for (qd, row) in q.iter().zip(kt.chunks_exact(stride)) {
            let k = &row[block * KEY_BLOCK..][..KEY_BLOCK];
            for l in 0..KEY_BLOCK {
                acc[l] = madd::<FMA>(*qd, k[l], acc[l]);
            }
        }
        for l in 0..KEY_BLOCK {
            s[l] = acc[l] * scale;
        }
    }
    softmax_body::<FMA>(&mut scores[..len]);
    let scores = &scores[..len];
    // Likewise each block of output dimensions stays in a register across all keys.
    let mut blocks = out.chunks_exact_mut(KEY_BLOCK);
    for (block, o) in blocks.by_ref().enumerate() {
        let mut acc = [0f32; KEY_BLOCK];
        for (p, vj) in scores.iter().zip(v.chunks_exact(d)) {
            let x = &vj[block * KEY_BLOCK..][..KEY_BLOCK];
            for l in 0..KEY_BLOCK {
                acc[l] = madd::<FMA>(*p, x[l], acc[l]);
            }
        }
        o.copy_from_slice(&acc);
    }
    let tail = blocks.into_remainder();
    let from = d - tail.len();
    tail.fill(0.0);
    for (p, vj) in scores.iter().zip(v.chunks_exact(d)) {
        for (o, x) in tail.iter_mut().zip(&vj[from..]) {
            *o = madd::<FMA>(*p, *x, *o);
        }
    }
}

/// Lanes of one dot-product accumulator block: four independent 16-float accumulators, so
/// consecutive FMAs do not wait on each other.
const DOT_LANES: usize = 64;

/// `out_t[j * rows + r] = x_r · w_j` for every row `x_r` of `x` (`rows` rows of `k`) and every
/// row `w_j` of `w` (rows of `k`): a linear layer for a handful of rows, each weight row read
/// once and used for every input row while it is in L1. Sums are blocked in [`DOT_LANES`]
/// partial sums (plain loops over fixed-size arrays, which vectorise without reassociation).
#[inline(always)]
fn dots_body<const FMA: bool>(x: &[f32], k: usize, w: &[f32], out_t: &mut [f32]) {
    let rows = x.len() / k;
    let blocked = k - k % DOT_LANES;
    for (wrow, out) in w.chunks_exact(k).zip(out_t.chunks_exact_mut(rows)) {
        for (xrow, o) in x.chunks_exact(k).zip(out.iter_mut()) {
            let mut acc = [0f32; DOT_LANES];
            for (xs, ws) in xrow[..blocked]
                .chunks_exact(DOT_LANES)
                .zip(wrow[..blocked].chunks_exact(DOT_LANES))
            {
                for l in 0..DOT_LANES {
                    acc[l] = madd::<FMA>(xs[l], ws[l], acc[l]);
                }
            }
            let mut sum = 0f32;
            for (a, b) in xrow[blocked..].iter().zip(&wrow[blocked..]) {
                sum = madd::<FMA>(*a, *b, sum);
            }
            // Halve the partial sums pairwise: vector adds, where `acc.iter().sum()` is 64
            // dependent scalar adds (a float sum may not be reordered), about as long as the
            // multiply-adds themselves for a 384-wide row.
            let mut width = DOT_LANES / 2;
            while width > 0 {
                for l in 0..width {
                    acc[l] += acc[l + width];
                }
                width /= 2;
            }
            *o = acc[0] + sum;
        }
    }
}

/// Instantiates every kernel body under one set of target features.
macro_rules! kernel_set {
    ($module:ident, $fma:literal $(, $feature:literal)?) => {
        mod $module {
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn bias_gelu(rows: &mut [f32], bias: &[f32]) {
                super::bias_gelu_body::<$fma>(rows, bias)
            }
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn add_layer_norm(
                x: &mut [f32],
                bias: &[f32],
                residual: &mut [f32],
                gamma: &[f32],
                beta: &[f32],
                eps: f32,
            ) {
                super::add_layer_norm_body::<$fma>(x, bias, residual, gamma, beta, eps)
            }
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
                super::layer_norm_body::<$fma>(x, gamma, beta, eps)
            }
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn attend(
                q: &[f32],
                kt: &[f32],
                v: &[f32],
                scale: f32,
                len: usize,
                scores: &mut [f32],
                out: &mut [f32],
            ) {
                super::attend_body::<$fma>(q, kt, v, scale, len, scores, out)
            }
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn dots(x: &[f32], k: usize, w: &[f32], out_t: &mut [f32]) {
                super::dots_body::<$fma>(x, k, w, out_t)
            }
            #[cfg(test)]
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn exp_slice(x: &mut [f32]) {
                for v in x.iter_mut() {
                    *v = super::exp_approx::<$fma>(*v);
                }
            }
            #[cfg(test)]
            $(#[target_feature(enable = $feature)])?
            pub(super) unsafe fn erf_slice(x: &mut [f32]) {
                for v in x.iter_mut() {
                    *v = super::erf_approx::<$fma>(*v);
                }
            }
        }
    };
}

kernel_set!(portable, false);
#[cfg(target_arch = "x86_64")]
kernel_set!(avx2, true, "avx2,fma");
#[cfg(target_arch = "x86_64")]
kernel_set!(avx512, true, "avx512f,avx2,fma");

/// `residual = LayerNorm(x + bias + residual)`: x, bias, residual, gamma, beta, eps.
type AddLayerNorm = unsafe fn(&mut [f32], &[f32], &mut [f32], &[f32], &[f32], f32);
/// One attention row: q, keys transposed, values, scale, key count, scores scratch, output.
type Attend = unsafe fn(&[f32], &[f32], &[f32], f32, usize, &mut [f32], &mut [f32]);

/// The kernels for this CPU: a table of function pointers chosen once.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    name: &'static str,
    bias_gelu: unsafe fn(&mut [f32], &[f32]),
    add_layer_norm: AddLayerNorm,
    layer_norm: unsafe fn(&mut [f32], &[f32], &[f32], f32),
    attend: Attend,
    dots: unsafe fn(&[f32], usize, &[f32], &mut [f32]),
    #[cfg(test)]
    exp_slice: unsafe fn(&mut [f32]),
    #[cfg(test)]
    erf_slice: unsafe fn(&mut [f32]),
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernels {
    /// The widest set this CPU runs: AVX-512F, else AVX2 + FMA, else portable.
    pub(crate) fn detect() -> Self {
        Self::available()[0]
    }

    /// Every set this CPU runs, widest first (the tests check them all).
    pub(crate) fn available() -> Vec<Self> {
        let mut sets = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            sets.push(Self {
                name: "avx512f",
                bias_gelu: avx512::bias_gelu,
                add_layer_norm: avx512::add_layer_norm,
                layer_norm: avx512::layer_norm,
                attend: avx512::attend,
                dots: avx512::dots,
                #[cfg(test)]
                exp_slice: avx512::exp_slice,
                #[cfg(test)]
                erf_slice: avx512::erf_slice,
            });
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            sets.push(Self {
                name: "avx2+fma",
                bias_gelu: avx2::bias_gelu,
                add_layer_norm: avx2::add_layer_norm,
                layer_norm: avx2::layer_norm,
                attend: avx2::attend,
                dots: avx2::dots,
                #[cfg(test)]
                exp_slice: avx2::exp_slice,
                #[cfg(test)]
                erf_slice: avx2::erf_slice,
            });
        }
        sets.push(Self::portable());
        sets
    }

    /// The fallback for any CPU.
    pub(crate) fn portable() -> Self {
        Self {
            name: "portable",
            bias_gelu: portable::bias_gelu,
            add_layer_norm: portable::add_layer_norm,
            layer_norm: portable::layer_norm,
            attend: portable::attend,
            dots: portable::dots,
            #[cfg(test)]
            exp_slice: portable::exp_slice,
            #[cfg(test)]
            erf_slice: portable::erf_slice,
        }
    }

    /// Which instruction set the kernels use.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    // SAFETY (all below): the table holds the portable kernels, or kernels compiled for
    // features that `available` saw on this CPU.

    /// `x + bias`, then exact GELU, in place over rows of `bias.len()`.
    pub(crate) fn bias_gelu(&self, rows: &mut [f32], bias: &[f32]) {
        unsafe { (self.bias_gelu)(rows, bias) }
    }

    /// `residual = LayerNorm(x + bias + residual)` per row of `bias.len()`; `x` is clobbered.
    pub(crate) fn add_layer_norm(
        &self,
        x: &mut [f32],
        bias: &[f32],
        residual: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        debug_assert_eq!(bias.len() % 8, 0, "rows are processed 8 floats at a time");
        unsafe { (self.add_layer_norm)(x, bias, residual, gamma, beta, eps) }
    }

    /// LayerNorm in place per row of `gamma.len()`.
    pub(crate) fn layer_norm(&self, x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        unsafe { (self.layer_norm)(x, gamma, beta, eps) }
    }

    /// One query row of attention over `len` keys; `kt` is K transposed, `[d x stride]`, and
    /// `scores` is `stride` long, a multiple of [`KEY_BLOCK`] (see [`attend_body`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        scale: f32,
        len: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        assert!(
            scores.len().is_multiple_of(KEY_BLOCK)
                && len <= scores.len()
                && kt.len() == q.len() * scores.len()
                && v.len() >= len * q.len()
        );
        unsafe { (self.attend)(q, kt, v, scale, len, scores, out) }
    }

    /// `out_t[j * rows + r] = x_r · w_j` (see [`dots_body`]): x is `rows` rows of `k`, w whole
    /// rows of `k`, out_t `rows` per row of w.
    pub(crate) fn dots(&self, x: &[f32], k: usize, w: &[f32], out_t: &mut [f32]) {
        assert!(
            k > 0
                && x.len().is_multiple_of(k)
                && w.len().is_multiple_of(k)
                && out_t.len() == (x.len() / k) * (w.len() / k)
        );
        unsafe { (self.dots)(x, k, w, out_t) }
    }

    /// [`exp_approx`] over a slice (for the tests).
    #[cfg(test)]
    pub(crate) fn exp_slice(&self, x: &mut [f32]) {
        unsafe { (self.exp_slice)(x) }
    }

    /// [`erf_approx`] over a slice (for the tests).
    #[cfg(test)]
    pub(crate) fn erf_slice(&self, x: &mut [f32]) {
        unsafe { (self.erf_slice)(x) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<Kernels> {
        Kernels::available()
    }

    /// A dense grid over [lo, hi].
    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * (i as f32 / n as f32))
            .collect()
    }

    #[test]
    fn erf_matches_libm_within_5e_7_absolute() {
        let xs = grid(-6.0, 6.0, 1_200_000);
        for k in tables() {
            let mut got = xs.clone();
            k.erf_slice(&mut got);
            let worst = xs
                .iter()
                .zip(&got)
                .map(|(x, g)| (f64::from(*g) - libm::erf(f64::from(*x))).abs())
                .fold(0f64, f64::max);
            // Measured: 4.2e-7 portable, 3.3e-7 with FMA (a few f32 ulps near ±1, where an ulp
            // is 6e-8); GELU multiplies it by x/2, far below the encoder's 1e-4 tolerance.
            eprintln!("{k:?}: max |erf error| {worst:e}");
            assert!(worst <= 5e-7, "{k:?}: max |erf error| {worst:e}");
        }
    }

    #[test]
    fn exp_matches_std_within_1_5e_7_relative() {
        // Softmax feeds x - max <= 0; the positive side is checked too.
        let xs = grid(-87.0, 88.0, 1_750_000);
        for k in tables() {
            let mut got = xs.clone();
            k.exp_slice(&mut got);
            let worst = xs
                .iter()
                .zip(&got)
                .map(|(x, g)| {
                    let want = f64::from(*x).exp();
                    ((f64::from(*g) - want) / want).abs()
                })
                .fold(0f64, f64::max);
            // Measured: 8.3e-8 (under one f32 ulp, 1.2e-7 relative).
            eprintln!("{k:?}: max relative exp error {worst:e}");
            assert!(worst <= 1.5e-7, "{k:?}: max relative exp error {worst:e}");
        }
    }

    #[test]
    fn exp_of_very_negative_inputs_is_tiny_not_nan() {
        for k in tables() {
            let mut x = [-1e30, -1000.0, -100.0, f32::MIN];
            k.exp_slice(&mut x);
            assert!(
                x.iter().all(|v| v.is_finite() && *v >= 0.0 && *v < 1e-37),
                "{x:?}"
            );
        }
    }

    #[test]
    fn layer_norm_and_gelu_match_a_plain_f64_computation() {
        let width = 384;
        let x: Vec<f32> = (0..2 * width)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let bias: Vec<f32> = (0..width).map(|i| (i % 5) as f32 * 0.1).collect();
        let residual: Vec<f32> = (0..2 * width).map(|i| (i % 3) as f32 - 1.0).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 1.0 + (i % 7) as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..width).map(|i| (i % 11) as f32 * 0.02).collect();
        for k in tables() {
            let mut got_x = x.clone();
            let mut got = residual.clone();
            k.add_layer_norm(&mut got_x, &bias, &mut got, &gamma, &beta, 1e-12);
            for r in 0..2 {
                let s: Vec<f64> = (0..width)
                    .map(|i| f64::from(x[r * width + i] + bias[i] + residual[r * width + i]))
                    .collect();
                let mean = s.iter().sum::<f64>() / width as f64;
                let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                for i in 0..width {
                    let want = (s[i] - mean) / (var + 1e-12).sqrt() * f64::from(gamma[i])
                        + f64::from(beta[i]);
                    let diff = (f64::from(got[r * width + i]) - want).abs();
                    assert!(diff < 1e-5, "{k:?}: layer norm [{r},{i}] off by {diff}");
                }
            }
            let mut gelu = x.clone();
            k.bias_gelu(&mut gelu, &bias);
            for (i, g) in gelu.iter().enumerate() {
                let v = f64::from(x[i] + bias[i % width]);
                let want = 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
                let diff = (f64::from(*g) - want).abs();
                assert!(
                    diff < 1e-6 * v.abs().max(1.0),
                    "{k:?}: gelu({v}) off by {diff}"
                );
            }
        }
    }
}
