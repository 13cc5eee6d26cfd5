//! How evenly the kernel spread load: imbalance and a chi-square test
//! against the uniform distribution.
//!
//! The unit counted must be independent draws: the reuseport hash chooses
//! once per flow (4-tuple), so every datagram of one source lands on the
//! same socket. Counting datagrams would multiply the statistic by the
//! datagrams per flow; callers count flows.

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
    /// Probability of a split at least this uneven (by the chi-square
    /// statistic) if the choice were uniform at random: exact (multinomial)
    /// when `exact`, else from the chi-square distribution with
    /// members - 1 degrees of freedom.
    pub p_value: f64,
    pub exact: bool,
}

impl Spread {
    /// The spread with the chi-square approximation of the p-value: cheap
    /// enough for every dashboard frame.
    pub fn of(counts: &[u64]) -> Self {
        Self::with(counts, false)
    }

    /// The spread with the exact (multinomial) p-value where the outcomes
    /// can be enumerated: for scenario verdicts, where small counts make
    /// the approximation too loose.
    pub fn exact(counts: &[u64]) -> Self {
        Self::with(counts, true)
    }

    fn with(counts: &[u64], try_exact: bool) -> Self {
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
                exact: try_exact,
            };
        }
        let mean = total as f64 / k as f64;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2) / mean)
            .sum();
        let exact = if try_exact {
            exact_p_value(counts)
        } else {
            None
        };
        let p_value = match exact {
            Some(p) => p,
            None if k > 1 => chi_square_sf(chi_square, (k - 1) as f64),
            None => 1.0,
        };
        Self {
            total,
            members: k,
            min,
            max,
            imbalance: max as f64 / mean,
            chi_square,
            p_value,
            exact: exact.is_some(),
        }
    }
}

/// Largest number of outcomes enumerated for an exact p-value.
const EXACT_OUTCOMES: usize = 200_000;

/// Every way to split `n` flows over `k` members, with its probability
/// under a uniform choice and its chi-square statistic; `None` when there
/// are more than [`EXACT_OUTCOMES`].
fn outcomes(k: usize, n: u64) -> Option<Vec<(f64, f64)>> {
    if k == 0 {
        return None;
    }
    // C(n + k - 1, k - 1) outcomes; stop counting once past the limit.
    let mut count = 1f64;
    for i in 1..k {
        count = count * (n as f64 + i as f64) / i as f64;
    }
    if count > EXACT_OUTCOMES as f64 {
        return None;
    }
    let ln_fact: Vec<f64> = (0..=n)
        .scan(0f64, |acc, i| {
            if i > 0 {
                *acc += (i as f64).ln();
            }
            Some(*acc)
        })
        .collect();
    let mean = n as f64 / k as f64;
    let ln_base = ln_fact[n as usize] - n as f64 * (k as f64).ln();
    let mut out = Vec::with_capacity(count as usize);
    let mut split = vec![0u64; k];
    fn walk(
        i: usize,
        left: u64,
        split: &mut [u64],
        ln_fact: &[f64],
        ln_base: f64,
        mean: f64,
        out: &mut Vec<(f64, f64)>,
    ) {
        if i + 1 == split.len() {
            split[i] = left;
            let ln_p = ln_base - split.iter().map(|&c| ln_fact[c as usize]).sum::<f64>();
            let chi: f64 = split
                .iter()
                .map(|&c| (c as f64 - mean).powi(2) / mean)
                .sum();
            out.push((chi, ln_p.exp()));
            return;
        }
        for c in 0..=left {
            split[i] = c;
            walk(i + 1, left - c, split, ln_fact, ln_base, mean, out);
        }
    }
    walk(0, n, &mut split, &ln_fact, ln_base, mean, &mut out);
    Some(out)
}

/// Tolerance when comparing chi-square statistics of two outcomes: equal
/// splits up to permutation must count as equally uneven.
const CHI_EPS: f64 = 1e-9;

/// The exact p-value of `counts` under a uniform multinomial: the
/// probability of all splits whose chi-square statistic is at least the
/// observed one.
pub fn exact_p_value(counts: &[u64]) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    let k = counts.len();
    if k < 2 || n == 0 {
        return None;
    }
    let mean = n as f64 / k as f64;
    let observed: f64 = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2) / mean)
        .sum();
    let all = outcomes(k, n)?;
    let p: f64 = all
        .iter()
        .filter(|(chi, _)| *chi >= observed - CHI_EPS)
        .map(|(_, p)| p)
        .sum();
    Some(p.clamp(0.0, 1.0))
}

/// The probability that a fair split of `n` flows over `k` members passes
/// the test `p_value > alpha`: what a scenario's verdict stability rests
/// on. `None` when the outcomes are too many to enumerate.
pub fn pass_probability(k: usize, n: u64, alpha: f64) -> Option<f64> {
    let mut all = outcomes(k, n)?;
    // From the most uneven down: each outcome's p-value is the running sum
    // of the probabilities of outcomes at least as uneven.
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut fail = 0f64;
    let mut i = 0;
    while i < all.len() {
        // Outcomes with the same statistic share one p-value.
        let mut j = i;
        let mut tied = 0f64;
        while j < all.len() && all[j].0 >= all[i].0 - CHI_EPS {
            tied += all[j].1;
            j += 1;
        }
        if fail + tied > alpha {
            break;
        }
        fail += tied;
        i = j;
    }
    Some(1.0 - fail)
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

    #[test]
    fn exact_p_value_agrees_with_the_chi_square_tail_for_many_flows() {
        // The audit's case: per-source counts [20, 37, 33] are a plausible
        // fair split; per-datagram counts (x4) are not.
        let per_flow = Spread::exact(&[20, 37, 33]);
        assert!(per_flow.exact);
        assert!(
            per_flow.p_value > 0.05 && per_flow.p_value < 0.1,
            "{per_flow:?}"
        );
        let approx = chi_square_sf(per_flow.chi_square, 2.0);
        assert!(
            (per_flow.p_value - approx).abs() < 0.02,
            "{per_flow:?} {approx}"
        );
        // Two members, 4 flows: P(split at least as uneven as 4:0) = 2/16.
        assert!(close(exact_p_value(&[4, 0]).unwrap_or(0.0), 0.125));
        assert!(close(exact_p_value(&[2, 2]).unwrap_or(0.0), 1.0));
    }

    #[test]
    fn a_fair_split_passes_at_the_documented_rate() {
        // Two members, 4 flows, alpha 0.2: only 4:0 and 0:4 (p = 0.125)
        // fail, so a fair split passes with 1 - 2/16.
        let p = pass_probability(2, 4, 0.2).unwrap_or(0.0);
        assert!(close(p, 1.0 - 0.125), "{p}");
        // A discrete test never rejects a fair split more often than alpha.
        for (k, n, alpha) in [(3, 30, 0.01), (3, 90, 1e-3), (3, 300, 1e-4)] {
            let p = pass_probability(k, n, alpha).unwrap_or(0.0);
            assert!(p >= 1.0 - alpha, "k {k} n {n} alpha {alpha}: {p}");
        }
    }
}
