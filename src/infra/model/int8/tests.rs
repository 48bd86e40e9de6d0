use super::*;

/// SplitMix64, for reproducible test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.unit() * scale).collect()
    }
}

/// `x · wᵀ` in f64, the exact product the int8 layer approximates.
fn exact(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; rows * n];
    for r in 0..rows {
        for c in 0..n {
            out[r * n + c] = (0..k)
                .map(|i| f64::from(x[r * k + i]) * f64::from(w[c * k + i]))
                .sum();
        }
    }
    out
}

fn require_kernels() -> bool {
    if supported() {
        return true;
    }
    // Not silent: the kernels cannot run here, and the server falls back to f32 (checked by
    // `tests/model.rs` against the real model); what this machine did test is the reference.
    eprintln!(
        "SKIPPED (CPU): the int8 kernel needs AVX-512 F, BW and VNNI ({}); only its scalar \
         reference was run",
        super::cpu_features()
    );
    false
}

#[test]
fn kernel_matches_the_scalar_reference_bit_for_bit() {
    if !require_kernels() {
        return;
    }
    let mut rng = Rng(7);
    let mut scratch = Quantized::default();
    // Tiles of every height (1..=6 rows, and blocks past ROW_BLOCK) and panels of every width
    // (16..64 channels, and a partial last panel).
    for (case, &(n, k)) in [
        (16, 16),
        (32, 48),
        (48, 64),
        (64, 32),
        (80, 384),
        (1152, 384),
        (384, 1536),
    ]
    .iter()
    .enumerate()
    {
        let w = rng.vec(n * k, 0.2);
        // Half the cases with smoothing factors in [0.25, 4).
        let smooth: Vec<f32> = (0..k)
            .map(|_| {
                if case % 2 == 0 {
                    1.0
                } else {
                    2f32.powf(rng.unit() * 2.0)
                }
            })
            .collect();
        let qw = QWeight::new(&w, n, k, &smooth);
        for rows in [1, 2, 3, 4, 5, 6, 7, 13, 97, 200] {
            if n * k > 100_000 && rows > 13 {
                continue; // the scalar reference is slow on the model's shapes
            }
            let x = rng.vec(rows * k, 3.0);
            let mut fast = vec![f32::NAN; rows * n];
            let mut slow = vec![f32::NAN; rows * n];
            linear(&x, rows, k, &qw, &mut scratch, &mut fast);
            reference(&x, rows, k, &qw, &mut slow);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "n {n} k {k} rows {rows}: output {i} is {a}, the reference {b}"
                );
            }
        }
    }
}

#[test]
fn quantised_product_is_close_to_the_exact_one() {
    let mut rng = Rng(11);
    let (rows, k, n) = (9, 384, 64);
    let w = rng.vec(n * k, 0.1);
    let mut x = rng.vec(rows * k, 1.0);
    // An outlier in one row, as LayerNorm outputs have: that row's resolution drops, the
    // others' must not.
    x[3 * k + 5] = 40.0;
    let qw = QWeight::new(&w, n, k, &vec![1.0; k]);
    let mut out = vec![0f32; rows * n];
    reference(&x, rows, k, &qw, &mut out);
    let want = exact(&x, rows, k, &w, n);
    for r in 0..rows {
        let (mut err, mut norm) = (0f64, 0f64);
        for c in 0..n {
            let e = f64::from(out[r * n + c]) - want[r * n + c];
            err += e * e;
            norm += want[r * n + c] * want[r * n + c];
        }
        let relative = (err / norm).sqrt();
        let bound = if r == 3 { 0.15 } else { 0.02 };
        assert!(relative < bound, "row {r}: relative error {relative}");
    }
    if require_kernels() {
        let mut fast = vec![0f32; rows * n];
        linear(&x, rows, k, &qw, &mut Quantized::default(), &mut fast);
        assert_eq!(fast, out);
    }
}

#[test]
fn zero_rows_and_zero_channels_give_zeros() {
    let (rows, k, n) = (3, 32, 32);
    let mut w = Rng(3).vec(n * k, 0.5);
    w[5 * k..6 * k].fill(0.0); // channel 5 is all zeros
    let mut x = Rng(4).vec(rows * k, 1.0);
    x[k..2 * k].fill(0.0); // row 1 is all zeros
    let qw = QWeight::new(&w, n, k, &vec![1.0; k]);
    let mut out = vec![f32::NAN; rows * n];
    reference(&x, rows, k, &qw, &mut out);
    assert!(out[n..2 * n].iter().all(|v| *v == 0.0), "zero row");
    assert!((0..rows).all(|r| out[r * n + 5] == 0.0), "zero channel");
    assert!(out.iter().all(|v| v.is_finite()));
    if require_kernels() {
        let mut fast = vec![f32::NAN; rows * n];
        linear(&x, rows, k, &qw, &mut Quantized::default(), &mut fast);
        assert_eq!(fast, out);
    }
}

#[test]
fn shapes_the_kernel_cannot_take_are_named() {
    assert!(unsupported_shape(384, 384).is_none());
    assert!(unsupported_shape(1536, 384).is_none());
    for (n, k) in [(0, 16), (16, 0), (20, 16), (16, 20), (16, 65_536)] {
        let reason = unsupported_shape(n, k).expect("unsupported");
        assert!(reason.contains(&format!("{k}")), "{reason}");
    }
}

#[test]
fn smoothing_rescues_channels_next_to_an_outlier_channel() {
    // Every token has one huge channel, as transformer activations do: alone, it sets each
    // row's scale and the other channels get a level or two; divided out by its smoothing
    // factor (and multiplied into the weights), the product is kept to the usual int8 error.
    let mut rng = Rng(23);
    let (rows, k, n) = (16, 384, 64);
    let mut w = rng.vec(n * k, 0.1);
    // The outlier channel's weights are small, so the other channels carry the product.
    for row in w.chunks_exact_mut(k) {
        row[7] *= 0.01;
    }
    let mut x = rng.vec(rows * k, 1.0);
    for row in x.chunks_exact_mut(k) {
        row[7] += 60.0;
    }
    let want = exact(&x, rows, k, &w, n);
    let error = |smooth: &[f32]| {
        let qw = QWeight::new(&w, n, k, smooth);
        let mut out = vec![0f32; rows * n];
        reference(&x, rows, k, &qw, &mut out);
        let (mut err, mut norm) = (0f64, 0f64);
        for (o, e) in out.iter().zip(&want) {
            err += (f64::from(*o) - e).powi(2);
            norm += e * e;
        }
        (err / norm).sqrt()
    };
    let plain = error(&vec![1.0; k]);
    let mut smooth = vec![1.0; k];
    smooth[7] = 60.0;
    let smoothed = error(&smooth);
    assert!(plain > 0.1, "the outlier should hurt plain int8: {plain}");
    assert!(smoothed < 0.02, "smoothed error {smoothed} (plain {plain})");
}

#[test]
fn factors_that_are_not_positive_and_finite_are_refused() {
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let mut smooth = vec![1.0; 16];
        smooth[3] = bad;
        let refused = std::panic::catch_unwind(|| QWeight::new(&[0.5; 256], 16, 16, &smooth));
        assert!(refused.is_err(), "factor {bad} was taken");
    }
}
