//! Lagrange interpolation over participant indices, and the check that a list of verification
//! shares is one threshold key's: what a repaired participant, holding none of them, checks
//! before it takes the list from its helpers.

use ciphersuite::{group::ff::Field, Ciphersuite};
use modular_frost::Participant;

/// Participants 1 to `n`.
pub fn participants(n: u16) -> impl Iterator<Item = Participant> {
    (1..=n).filter_map(Participant::new)
}

/// `λ_i(x)` over `set`: `Π_{j ∈ set, j ≠ i} (x − j) / (i − j)`, the weight of participant
/// `i`'s point when the polynomial through the points of `set` is evaluated at `x`.
///
/// `set` holds distinct indices (every caller checks it first), so no denominator is zero.
pub fn lagrange<F: Field + From<u64>>(i: Participant, set: &[Participant], x: u16) -> F {
    let i_f = F::from(u64::from(u16::from(i)));
    let x_f = F::from(u64::from(x));
    let (mut numerator, mut denominator) = (F::ONE, F::ONE);
    for &j in set.iter().filter(|&&j| j != i) {
        let j_f = F::from(u64::from(u16::from(j)));
        numerator *= x_f - j_f;
        denominator *= i_f - j_f;
    }
    Option::<F>::from(denominator.invert()).map_or(F::ZERO, |inverse| numerator * inverse)
}

/// Whether `shares` (the verification shares of participants 1, 2, …, in order) lie on one
/// polynomial of degree `t - 1` whose constant term is `group_key`: the points of the first `t`
/// give the polynomial, which must give the group key at 0 and every other share at its index.
pub fn one_key<C: Ciphersuite>(shares: &[C::G], t: u16, group_key: C::G) -> bool {
    let t = usize::from(t);
    if t == 0 || shares.len() < t || shares.len() > usize::from(u16::MAX) {
        return false;
    }
    let Ok(t16) = u16::try_from(t) else {
        return false;
    };
    let basis: Vec<Participant> = participants(t16).collect();
    let at = |x: u16| -> C::G {
        basis
            .iter()
            .zip(shares)
            .map(|(&k, &share)| share * lagrange::<C::F>(k, &basis, x))
            .sum()
    };
    at(0) == group_key
        && shares
            .iter()
            .enumerate()
            .skip(t)
            .all(|(index, &share)| u16::try_from(index + 1).is_ok_and(|m| at(m) == share))
}

#[cfg(test)]
mod tests {
    use ciphersuite::{group::ff::Field, Ciphersuite, Ristretto};
    use modular_frost::Participant;
    use rand_core::OsRng;

    use super::{lagrange, one_key};

    type F = <Ristretto as Ciphersuite>::F;
    type G = <Ristretto as Ciphersuite>::G;

    fn shares(coefficients: &[F], n: u16) -> Vec<G> {
        (1..=n)
            .map(|m| {
                let x = F::from(u64::from(m));
                let value = coefficients
                    .iter()
                    .rev()
                    .fold(F::ZERO, |acc, c| acc * x + c);
                Ristretto::generator() * value
            })
            .collect()
    }

    #[test]
    fn interpolation_finds_any_point_of_a_polynomial() {
        let coefficients: Vec<F> = (0..3).map(|_| F::random(&mut OsRng)).collect();
        let value = |x: u16| {
            let x = F::from(u64::from(x));
            coefficients
                .iter()
                .rev()
                .fold(F::ZERO, |acc, c| acc * x + c)
        };
        let set: Vec<Participant> = [2, 5, 7].into_iter().filter_map(Participant::new).collect();
        for x in [0, 1, 4, 9] {
            let interpolated: F = set
                .iter()
                .map(|&i| lagrange::<F>(i, &set, x) * value(u16::from(i)))
                .sum();
            assert_eq!(interpolated, value(x));
        }
    }

    #[test]
    fn shares_of_one_key_pass_and_any_other_list_does_not() {
        let coefficients: Vec<F> = (0..3).map(|_| F::random(&mut OsRng)).collect();
        let group_key = Ristretto::generator() * coefficients[0];
        let good = shares(&coefficients, 4);
        assert!(one_key::<Ristretto>(&good, 3, group_key));
        // Another constant term, a share moved, a polynomial of higher degree, too few shares.
        assert!(!one_key::<Ristretto>(
            &good,
            3,
            group_key + Ristretto::generator()
        ));
        let mut moved = good.clone();
        moved[3] += Ristretto::generator();
        assert!(!one_key::<Ristretto>(&moved, 3, group_key));
        let mut higher = coefficients.clone();
        higher.push(F::random(&mut OsRng));
        assert!(!one_key::<Ristretto>(&shares(&higher, 4), 3, group_key));
        assert!(!one_key::<Ristretto>(&good[..2], 3, group_key));
        assert!(!one_key::<Ristretto>(&good, 0, group_key));
    }
}
