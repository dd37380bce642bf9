//! Seeded randomness: a splitmix64 generator, a Zipf sampler and a normal
//! sampler. Small and ours, so a workload is a pure function of `--seed` and
//! the request's index, whatever version of a random crate is around.

use crate::units::{to_f64, to_u64_saturating};

/// Mixes a seed and an index into a well-spread 64-bit value (the splitmix64
/// finalizer), so request `i` of seed `s` draws from its own stream.
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea, Flood 2014): one add and a finalizer per value;
/// passes BigCrush, more than enough for picking cards and amounts.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        // 53 bits convert to `f64` exactly.
        to_f64(self.next_u64() >> 11) * (1.0 / to_f64(1u64 << 53))
    }

    /// A uniform value in `[0, n)` (Lemire's multiply-shift; the bias is
    /// under n / 2^64, far below anything a load test can see). `n` of 0
    /// gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        // The high half of a 64 x 64-bit product always fits 64 bits.
        u64::try_from((u128::from(self.next_u64()) * u128::from(n)) >> 64).unwrap_or(0)
    }

    /// A uniform index into something `len` long (see [`SplitMix64::below`]).
    pub fn index_below(&mut self, len: usize) -> usize {
        // usize is at most 64 bits on every target Rust supports, and the
        // index is below `len`, so neither fallback is ever taken.
        let index = self.below(u64::try_from(len).unwrap_or(u64::MAX));
        usize::try_from(index).unwrap_or(0)
    }

    /// A standard normal value (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Zipf-distributed ranks 1..=n with exponent `s`: rank k is drawn with
/// probability proportional to 1/k^s. Rejection-inversion (Hörmann and
/// Derflinger 1996), as in Apache Commons: constant time and no table, so a
/// million cards cost nothing to set up.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    /// A sampler over `n` ranks with exponent `s`; `None` unless `n >= 1`
    /// and `s` is finite and positive (use a uniform draw for `s = 0`).
    pub fn new(n: u64, s: f64) -> Option<Zipf> {
        if n == 0 || !s.is_finite() || s <= 0.0 {
            return None;
        }
        let n = to_f64(n);
        let h_integral_x1 = h_integral(1.5, s) - 1.0;
        let h_integral_n = h_integral(n + 0.5, s);
        let threshold = 2.0 - h_integral_inverse(h_integral(2.5, s) - h(2.0, s), s);
        Some(Zipf {
            n,
            s,
            h_integral_x1,
            h_integral_n,
            threshold,
        })
    }

    /// A rank in 1..=n.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = h_integral_inverse(u, self.s);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= h_integral(k + 0.5, self.s) - h(k, self.s) {
                // A whole number from 1 to n.
                return to_u64_saturating(k);
            }
        }
    }
}

fn h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

fn h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    helper2((1.0 - s) * log_x) * log_x
}

fn h_integral_inverse(x: f64, s: f64) -> f64 {
    let t = (x * (1.0 - s)).max(-1.0);
    (helper1(t) * x).exp()
}

/// ln(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(mix(1, 2), mix(2, 1));
        assert_ne!(mix(1, 0), mix(1, 1));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(3);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[usize::try_from(v).unwrap()] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn zipf_ranks_follow_the_power_law() {
        let zipf = Zipf::new(1000, 1.0).unwrap();
        let mut rng = SplitMix64::new(11);
        let mut counts = vec![0u32; 1001];
        let draws = 200_000;
        for _ in 0..draws {
            let k = zipf.sample(&mut rng);
            assert!((1..=1000).contains(&k));
            counts[usize::try_from(k).unwrap()] += 1;
        }
        // With s = 1, rank 1 is drawn twice as often as rank 2 and four
        // times as often as rank 4; H(1000) = 7.485, so rank 1 takes 13.4%.
        let ratio_2 = f64::from(counts[1]) / f64::from(counts[2]);
        let ratio_4 = f64::from(counts[1]) / f64::from(counts[4]);
        assert!((1.8..2.2).contains(&ratio_2), "{ratio_2}");
        assert!((3.6..4.4).contains(&ratio_4), "{ratio_4}");
        let share = f64::from(counts[1]) / f64::from(draws);
        assert!((0.125..0.143).contains(&share), "{share}");
        assert!(Zipf::new(0, 1.0).is_none());
        assert!(Zipf::new(10, 0.0).is_none());
    }

    #[test]
    fn normal_values_have_mean_zero_and_unit_spread() {
        let mut rng = SplitMix64::new(5);
        let n = 50_000u32;
        let values: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let mean = values.iter().sum::<f64>() / f64::from(n);
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((variance - 1.0).abs() < 0.03, "{variance}");
    }
}
