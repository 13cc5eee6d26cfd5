//! How evenly the kernel spread load: imbalance and a chi-square test
//! against the uniform distribution.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub total: u64,
    pub members: usize,
    pub min: u64,
    pub max: u64,
    /// max / mean: 1.0 is perfectly even.
    pub imbalance: f64,
    /// Pearson's chi-square statistic against an even split.
    pub chi_square: f64,
    /// Probability of a split at least this uneven if the choice were
    /// uniform at random (degrees of freedom: members - 1).
    pub p_value: f64,
}

impl Spread {
    pub fn of(counts: &[u64]) -> Self {
        let total: u64 = counts.iter().sum();
        let k = counts.len();
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        if k == 0 || total == 0 {
            return Self {
                total,
                members: k,
                min,
                max,
                imbalance: 0.0,
                chi_square: 0.0,
                p_value: 1.0,
            };
        }
        let mean = total as f64 / k as f64;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2) / mean)
            .sum();
        let p_value = if k > 1 {
            chi_square_sf(chi_square, (k - 1) as f64)
        } else {
            1.0
        };
        Self {
            total,
            members: k,
            min,
            max,
            imbalance: max as f64 / mean,
            chi_square,
            p_value,
        }
    }
}

/// Survival function of the chi-square distribution with `df` degrees of
/// freedom: P(X >= x) = Q(df/2, x/2).
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x): a power series for P below
/// x < a + 1, a continued fraction (modified Lentz) above.
fn gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-14;
    const ITERATIONS: usize = 500;
    let prefix = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut sum, mut term, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..ITERATIONS {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * EPS {
                break;
            }
        }
        (1.0 - sum * prefix).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..ITERATIONS {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < EPS {
                break;
            }
        }
        (prefix * h).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn chi_square_tail_matches_tables() {
        // Critical values at p = 0.05 for 1, 2 and 10 degrees of freedom.
        assert!(close(chi_square_sf(3.841_458_820_694_124, 1.0), 0.05));
        assert!(close(chi_square_sf(5.991_464_547_107_979, 2.0), 0.05));
        assert!(close(chi_square_sf(18.307_038_053_275_146, 10.0), 0.05));
        // df = 2 has the closed form exp(-x/2).
        assert!(close(chi_square_sf(1.0, 2.0), (-0.5f64).exp()));
        assert_eq!(chi_square_sf(0.0, 3.0), 1.0);
    }

    #[test]
    fn spread_of_even_and_skewed_counts() {
        let even = Spread::of(&[100, 100, 100]);
        assert_eq!(
            (even.imbalance, even.chi_square, even.p_value),
            (1.0, 0.0, 1.0)
        );
        let skewed = Spread::of(&[300, 0, 0]);
        assert!(close(skewed.imbalance, 3.0));
        assert!(skewed.p_value < 1e-100);
        let empty = Spread::of(&[]);
        assert_eq!(empty.p_value, 1.0);
    }
}
