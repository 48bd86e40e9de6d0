//! Int8 linear layers for the packed encoder (`model.precision = "int8"`), on AVX-512 VNNI.
//!
//! Why: the f32 packed encoder spends ~78% of its time in GEMMs that already run at ~88% of
//! this CPU's f32 FMA rate (BENCHMARKS.md), so f32 has little left. `vpdpbusd` does 64
//! u8·i8 multiply-adds per instruction against 16 f32 FMAs.
//!
//! The scheme is the usual dynamic quantisation of BERT-family encoders, with SmoothQuant's
//! per-input-channel factors `m_k` (chosen by the caller, see `PackedBert::quantize`; the
//! product is unchanged: `x·wᵀ = (x / m)·(w · m)ᵀ`):
//!
//! - weights, once at load: `w · m` quantised symmetrically per output channel,
//!   `w_nk · m_k ≈ q_w · s_w[n]` with `q_w` in [-127, 127];
//! - activations, on every call: `x / m` quantised symmetrically per row (per token),
//!   `x_rk / m_k ≈ (q_x - 128) · s_x[r]` with `q_x` in [1, 255] (`vpdpbusd` multiplies
//!   unsigned by signed bytes, so the row is shifted by 128 and the shift taken out again with
//!   the weights' column sums);
//! - `out[r][n] = (Σ_k q_x·q_w − 128·Σ_k q_w) · s_w[n] · s_x[r]`, the sum exact in i32 (at most
//!   255·127·k, < 2³¹ for k < 66,000).
//!
//! The weights are stored for the kernel: blocks of 16 output channels, and within a block,
//! for each group of 4 inputs, the 16 channels' 4 bytes side by side (one 64-byte vector per
//! (block, group), what `vpdpbusd` takes). The kernel computes tiles of up to 6 rows × 64
//! channels in 24 vector accumulators; tiles of (row block, 64-channel panel) go to the rayon
//! pool. [`reference`] is the same arithmetic in plain scalar Rust: the tests hold the kernel
//! to it bit for bit, and `tests/model.rs` holds the int8 encoder to the f32 one.

use rayon::prelude::*;

use super::packed::SharedMut;

/// Output channels per kernel vector.
const LANES: usize = 16;
/// Vectors (of 16 channels) per tile: 64 channels.
const PANEL: usize = 4;
/// Rows per tile: 6 × 4 accumulators + 4 weight vectors + 1 broadcast fit the 32 registers.
const TILE_ROWS: usize = 6;
/// Rows per rayon task (a multiple of [`TILE_ROWS`]).
const ROW_BLOCK: usize = 96;
/// Rows per task of the activation quantisation.
const QUANT_ROWS: usize = 32;

/// What this CPU has of the features the int8 kernels need, for messages that say why they
/// did not run (`avx512f yes, avx512bw yes, avx512vnni no`).
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let yes = |on: bool| if on { "yes" } else { "no" };
        format!(
            "avx512f {}, avx512bw {}, avx512vnni {}",
            yes(is_x86_feature_detected!("avx512f")),
            yes(is_x86_feature_detected!("avx512bw")),
            yes(is_x86_feature_detected!("avx512vnni"))
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "not an x86-64 CPU".to_owned()
    }
}

/// Whether this CPU runs the int8 kernels (AVX-512 F and BW, and VNNI).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Why a `[n x k]` weight cannot be quantised for the kernel, or `None`.
pub fn unsupported_shape(n: usize, k: usize) -> Option<String> {
    if n == 0 || k == 0 || !n.is_multiple_of(LANES) || !k.is_multiple_of(LANES) {
        return Some(format!(
            "a {n} x {k} weight (int8 needs both sizes to be non-zero multiples of {LANES})"
        ));
    }
    if k >= 65_536 {
        return Some(format!("{k} inputs (the i32 sums could overflow)"));
    }
    None
}

/// A linear layer's weight quantised per output channel, in the kernel's layout.
pub struct QWeight {
    n: usize,
    k: usize,
    /// `[n/16][k/4][16][4]` (see the module docs).
    packed: Vec<i8>,
    /// Per output channel: the weight scale.
    scales: Vec<f32>,
    /// Per output channel: `128 · Σ_k q_w`, taken from the sums to undo the activations' shift.
    shift: Vec<i32>,
    /// Per input channel: `1 / m_k`, applied to the activations before they are quantised.
    inv_smooth: Vec<f32>,
}

impl std::fmt::Debug for QWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QWeight")
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

/// `round(x · inv)` clamped to ±127: the quantisation of both weights and activations (ties to
/// even, as `vcvtps2dq` rounds under the default MXCSR).
fn quantize(x: f32, inv: f32) -> i32 {
    ((x * inv).round_ties_even() as i32).clamp(-127, 127)
}

impl QWeight {
    /// Quantises a row-major `[n x k]` weight (PyTorch's `[out x in]`) with the per-input-channel
    /// factors `smooth` (`m_k`, positive and finite; all ones for plain dynamic quantisation).
    ///
    /// # Panics
    /// If the shape is unsupported ([`unsupported_shape`]), `w` is not `n·k` long or `smooth`
    /// not `k`, or a factor is not positive and finite.
    pub fn new(w: &[f32], n: usize, k: usize, smooth: &[f32]) -> Self {
        assert!(unsupported_shape(n, k).is_none() && w.len() == n * k && smooth.len() == k);
        assert!(smooth.iter().all(|m| m.is_finite() && *m > 0.0));
        let w: Vec<f32> = w
            .chunks_exact(k)
            .flat_map(|row| row.iter().zip(smooth).map(|(v, m)| v * m))
            .collect();
        let groups = k / 4;
        let mut packed = vec![0i8; n * k];
        let mut scales = Vec::with_capacity(n);
        let mut shift = Vec::with_capacity(n);
        for (channel, row) in w.chunks_exact(k).enumerate() {
            let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if absmax > 0.0 { 127.0 / absmax } else { 0.0 };
            scales.push(absmax / 127.0);
            let (block, lane) = (channel / LANES, channel % LANES);
            let mut sum = 0i32;
            for (i, &v) in row.iter().enumerate() {
                let q = quantize(v, inv);
                sum += q;
                let (group, byte) = (i / 4, i % 4);
                packed[((block * groups + group) * LANES + lane) * 4 + byte] = q as i8;
            }
            shift.push(128 * sum);
        }
        Self {
            n,
            k,
            packed,
            scales,
            shift,
            inv_smooth: smooth.iter().map(|m| 1.0 / m).collect(),
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The quantised weight of `(channel, input)`.
    fn q(&self, channel: usize, input: usize) -> i32 {
        let (block, lane) = (channel / LANES, channel % LANES);
        let (group, byte) = (input / 4, input % 4);
        i32::from(self.packed[((block * (self.k / 4) + group) * LANES + lane) * 4 + byte])
    }
}

/// The quantised activations of one call, reused across calls (never shrunk).
#[derive(Default)]
pub struct Quantized {
    /// `[rows x k]`, shifted by 128.
    q: Vec<u8>,
    /// Per row: the activation scale.
    scales: Vec<f32>,
}

/// Quantises one row, divided channel by channel by the smoothing factors (times `inv_smooth`),
/// into `q` (shifted by 128) and returns its scale.
fn quantize_row_scalar(x: &[f32], inv_smooth: &[f32], q: &mut [u8]) -> f32 {
    let absmax = x
        .iter()
        .zip(inv_smooth)
        .fold(0f32, |m, (v, s)| m.max((v * s).abs()));
    if absmax <= 0.0 || !absmax.is_finite() {
        q.fill(128);
        return 0.0;
    }
    let inv = 127.0 / absmax;
    for ((o, &v), s) in q.iter_mut().zip(x).zip(inv_smooth) {
        *o = (quantize(v * s, inv) + 128) as u8;
    }
    absmax / 127.0
}

/// `out[rows x n] = x[rows x k] · wᵀ` (dequantised; `out` is overwritten, not read), with the
/// activations quantised into `scratch`.
///
/// # Panics
/// If the CPU does not run the kernels ([`supported`]) or the slices are too short.
pub fn linear(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &QWeight,
    scratch: &mut Quantized,
    out: &mut [f32],
) {
    assert!(supported(), "int8 kernels need AVX-512 VNNI");
    assert!(k == w.k && x.len() >= rows * k && out.len() >= rows * w.n);
    if rows == 0 {
        return;
    }
    if scratch.q.len() < rows * k {
        scratch.q.resize(rows * k, 0);
    }
    scratch.scales.resize(rows, 0.0);
    let (q, scales) = (&mut scratch.q[..rows * k], &mut scratch.scales[..]);
    q.par_chunks_mut(QUANT_ROWS * k)
        .zip(scales.par_chunks_mut(QUANT_ROWS))
        .zip(x[..rows * k].par_chunks(QUANT_ROWS * k))
        .for_each(|((q, scales), x)| {
            for ((q, s), x) in q
                .chunks_exact_mut(k)
                .zip(scales.iter_mut())
                .zip(x.chunks_exact(k))
            {
                // SAFETY: `supported()` was checked above; k is a multiple of 16.
                *s = unsafe { avx512::quantize_row(x, &w.inv_smooth, q) };
            }
        });

    let n = w.n;
    let panels = n.div_ceil(PANEL * LANES);
    let blocks = rows.div_ceil(ROW_BLOCK);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let (q, scales) = (&scratch.q[..rows * k], &scratch.scales[..rows]);
    (0..blocks * panels).into_par_iter().for_each(|task| {
        let (block, panel) = (task / panels, task % panels);
        let first_vector = panel * PANEL;
        let vectors = PANEL.min(n / LANES - first_vector);
        let end = rows.min((block + 1) * ROW_BLOCK);
        let mut row = block * ROW_BLOCK;
        while row < end {
            let tile_rows = TILE_ROWS.min(end - row);
            // SAFETY: `supported()` holds; the tile reads rows [row, row + tile_rows) of `q`
            // and `scales` and channels [16·first_vector, 16·(first_vector + vectors)) of
            // `w`, all in bounds (asserted above), and writes the same rows × channels of
            // `out`, a region no other task writes (tasks are distinct (block, panel) pairs).
            unsafe {
                avx512::tile(
                    tile_rows,
                    vectors,
                    &q[row * k..],
                    k,
                    w,
                    first_vector,
                    &scales[row..],
                    out_ptr.get().add(row * n + first_vector * LANES),
                    n,
                );
            }
            row += tile_rows;
        }
    });
}

/// [`linear`] in plain scalar Rust: the same quantisation and integer sums, the same f32
/// operations in the same order, so the kernel must match it bit for bit.
pub fn reference(x: &[f32], rows: usize, k: usize, w: &QWeight, out: &mut [f32]) {
    assert!(k == w.k && x.len() >= rows * k && out.len() >= rows * w.n);
    let mut q = vec![0u8; k];
    for r in 0..rows {
        let scale = quantize_row_scalar(&x[r * k..][..k], &w.inv_smooth, &mut q);
        for channel in 0..w.n {
            let sum: i32 = (0..k).map(|i| i32::from(q[i]) * w.q(channel, i)).sum();
            let v = (sum - w.shift[channel]) as f32;
            out[r * w.n + channel] = v * w.scales[channel] * scale;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{LANES, QWeight, quantize_row_scalar};

    /// [`quantize_row_scalar`] for `k` a multiple of 16.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW; `x`, `inv_smooth` and `q` have the same length.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(x: &[f32], inv_smooth: &[f32], q: &mut [u8]) -> f32 {
        debug_assert!(x.len() == q.len() && x.len() == inv_smooth.len());
        debug_assert!(x.len().is_multiple_of(LANES));
        let mut m = _mm512_setzero_ps();
        for (xs, ss) in x.chunks_exact(LANES).zip(inv_smooth.chunks_exact(LANES)) {
            // SAFETY: 16 floats each.
            let v = unsafe {
                _mm512_mul_ps(_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(ss.as_ptr()))
            };
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
        }
        let absmax = _mm512_reduce_max_ps(m);
        if absmax <= 0.0 || !absmax.is_finite() {
            // All zeros, or a NaN/infinity the scalar path handles the same way.
            return quantize_row_scalar(x, inv_smooth, q);
        }
        let inv = _mm512_set1_ps(127.0 / absmax);
        let (lo, hi) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
        let shift = _mm512_set1_epi32(128);
        for ((xs, ss), qs) in x
            .chunks_exact(LANES)
            .zip(inv_smooth.chunks_exact(LANES))
            .zip(q.chunks_exact_mut(LANES))
        {
            // SAFETY: 16 floats in, 16 bytes out.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(ss.as_ptr()));
                let v = _mm512_mul_ps(v, inv);
                let i = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), lo), hi);
                let b = _mm512_cvtepi32_epi8(_mm512_add_epi32(i, shift));
                _mm_storeu_si128(qs.as_mut_ptr().cast(), b);
            }
        }
        absmax / 127.0
    }

    /// One tile: `rows` (1..=6) rows × `vectors` (1..=4) groups of 16 channels from
    /// `first_vector`, written to `out` (row stride `ldo` floats).
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI; `q` holds `rows` rows of `k` bytes, `scales` `rows` floats, the
    /// channels exist in `w`, and `out` is valid for the tile's writes.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(
        rows: usize,
        vectors: usize,
        q: &[u8],
        k: usize,
        w: &QWeight,
        first_vector: usize,
        scales: &[f32],
        out: *mut f32,
        ldo: usize,
    ) {
        macro_rules! dispatch {
            (@rows ($($r:literal),*) $cs:tt) => {
                match rows {
                    $($r => dispatch!(@cols $r $cs),)*
                    _ => unreachable!("tile rows"),
                }
            };
            (@cols $r:literal ($($c:literal),*)) => {
                match vectors {
                    // SAFETY: forwarded from this function's contract.
                    $($c => unsafe { kernel::<$r, $c>(q, k, w, first_vector, scales, out, ldo) },)*
                    _ => unreachable!("tile vectors"),
                }
            };
            ($($r:literal),*; $($c:literal),*) => {
                dispatch!(@rows ($($r),*) ($($c),*))
            };
        }
        dispatch!(1, 2, 3, 4, 5, 6; 1, 2, 3, 4)
    }

    /// # Safety
    /// As [`tile`], for `R` rows and `C` vectors.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const R: usize, const C: usize>(
        q: &[u8],
        k: usize,
        w: &QWeight,
        first_vector: usize,
        scales: &[f32],
        out: *mut f32,
        ldo: usize,
    ) {
        let groups = k / 4;
        debug_assert!(q.len() >= (R - 1) * k + k && scales.len() >= R);
        debug_assert!((first_vector + C) * LANES <= w.n);
        // SAFETY (whole body): the caller guarantees the features and the bounds above; every
        // pointer below stays inside `q`, `w.packed`, `w.shift`, `w.scales` or the tile of
        // `out`.
        unsafe {
            let a = q.as_ptr();
            let wp = w.packed.as_ptr().add(first_vector * groups * 64);
            let mut acc = [[_mm512_setzero_si512(); C]; R];
            for g in 0..groups {
                let mut wv = [_mm512_setzero_si512(); C];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(wp.add((c * groups + g) * 64).cast());
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(a.add(r * k + g * 4).cast::<i32>().read_unaligned());
                    for (acc_rc, v) in acc_r.iter_mut().zip(&wv) {
                        *acc_rc = _mm512_dpbusd_epi32(*acc_rc, av, *v);
                    }
                }
            }
            for c in 0..C {
                let channel = (first_vector + c) * LANES;
                let shift = _mm512_loadu_si512(w.shift.as_ptr().add(channel).cast());
                let ws = _mm512_loadu_ps(w.scales.as_ptr().add(channel));
                for (r, acc_r) in acc.iter().enumerate() {
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc_r[c], shift));
                    let v = _mm512_mul_ps(_mm512_mul_ps(v, ws), _mm512_set1_ps(scales[r]));
                    _mm512_storeu_ps(out.add(r * ldo + c * LANES), v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) unsafe fn quantize_row(_: &[f32], _: &[f32], _: &mut [u8]) -> f32 {
        unreachable!("int8 kernels are x86_64 only")
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        _: usize,
        _: usize,
        _: &[u8],
        _: usize,
        _: &super::QWeight,
        _: usize,
        _: &[f32],
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("int8 kernels are x86_64 only")
    }
}

#[cfg(test)]
mod tests;
