//! Zipf-distributed ranks: a few merchants produce most of the traffic, as on a
//! real marketplace. Sampling is a binary search in a precomputed CDF.

use rand::Rng;

/// Ranks `0..n` with P(rank k) proportional to 1 / (k + 1)^s.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A distribution over `n` ranks with exponent `s` (`s = 0` is uniform).
    /// `n = 0` is treated as one rank; a negative or non-finite `s` as 0.
    pub fn new(n: usize, s: f64) -> Self {
        let n = n.max(1);
        let s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// Probability of `rank` (0 outside the range).
    pub fn probability(&self, rank: usize) -> f64 {
        match rank {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            r if r < self.cdf.len() => self.cdf[r] - self.cdf[r - 1],
            _ => 0.0,
        }
    }

    /// Draws a rank in `0..len()`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        let idx = self.cdf.partition_point(|&c| c < u);
        idx.min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn probabilities_sum_to_one_and_decrease() {
        let z = Zipf::new(100, 1.1);
        let sum: f64 = (0..100).map(|k| z.probability(k)).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        assert!(z.probability(0) > z.probability(1));
        assert!(z.probability(1) > z.probability(50));
        assert_eq!(z.probability(100), 0.0);
    }

    #[test]
    fn samples_are_skewed_towards_low_ranks() {
        let z = Zipf::new(1000, 1.1);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Rank 0 has probability ~0.15 for n = 1000, s = 1.1.
        let top = f64::from(counts[0]) / 100_000.0;
        assert!((top - z.probability(0)).abs() < 0.01, "top share {top}");
        let top10: u32 = counts[..10].iter().sum();
        let bottom500: u32 = counts[500..].iter().sum();
        assert!(top10 > 2 * bottom500, "top10 {top10} bottom500 {bottom500}");
    }

    #[test]
    fn zero_exponent_is_uniform_and_degenerate_inputs_work() {
        let z = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((z.probability(k) - 0.25).abs() < 1e-12);
        }
        let one = Zipf::new(0, f64::NAN);
        assert_eq!(one.len(), 1);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(one.sample(&mut rng), 0);
    }
}
