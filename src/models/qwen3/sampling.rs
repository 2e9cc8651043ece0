//! Picking the next token from a row of logits: greedy, or temperature + top-p (nucleus) with a
//! seeded generator, so a run is reproducible.

/// How to pick a token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The highest logit (the lowest id on ties), as llama.cpp's greedy sampler.
    Greedy,
    /// Softmax at `temperature`, keep the smallest set of most likely tokens whose mass reaches
    /// `top_p`, draw from it.
    TopP {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Nucleus mass in `(0, 1]`.
        top_p: f32,
    },
}

/// A token sampler with its own random state (SplitMix64).
#[derive(Clone, Debug)]
pub struct Sampler {
    sampling: Sampling,
    state: u64,
}

/// Index of the largest value, the lowest index on ties; NaNs are skipped (0 where every value
/// is NaN). The device's argmax (`crate::kernels::argmax`) picks the same.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

impl Sampler {
    /// A sampler; `seed` fixes the draws of [`Sampling::TopP`].
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Self { sampling, state: seed }
    }

    /// Whether every draw is the argmax (no state, no need of the whole row on the host).
    pub fn is_greedy(&self) -> bool {
        match self.sampling {
            Sampling::Greedy => true,
            Sampling::TopP { temperature, .. } => temperature <= 0.0 || !temperature.is_finite(),
        }
    }

    /// A uniform draw in `[0, 1)`.
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next token id for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits) as u32,
            Sampling::TopP { temperature, top_p } => {
                if temperature <= 0.0 || !temperature.is_finite() {
                    return argmax(logits) as u32;
                }
                let max = logits[argmax(logits)];
                let mut probs: Vec<(usize, f32)> = logits
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| (i, ((v - max) / temperature).exp()))
                    .collect();
                let total: f32 = probs.iter().map(|p| p.1).sum();
                probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut kept = 0.0;
                let mut n = 0;
                for p in &probs {
                    kept += p.1 / total;
                    n += 1;
                    if kept >= top_p.clamp(0.0, 1.0) {
                        break;
                    }
                }
                let mass: f32 = probs[..n].iter().map(|p| p.1).sum();
                let mut r = self.uniform() * mass;
                for p in &probs[..n] {
                    if r < p.1 {
                        return p.0 as u32;
                    }
                    r -= p.1;
                }
                probs[n - 1].0 as u32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_is_seeded_and_stays_in_the_nucleus() {
        let logits = [0.0, 10.0, 9.5, -5.0, 1.0];
        let s = Sampling::TopP { temperature: 1.0, top_p: 0.9 };
        let draw = |seed| {
            let mut sm = Sampler::new(s, seed);
            (0..64).map(|_| sm.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(a.iter().all(|&t| t == 1 || t == 2), "{a:?}");
        assert!(a.contains(&1) && a.contains(&2));
    }
}
