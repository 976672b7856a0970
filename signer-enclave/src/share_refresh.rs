//! Refreshing every share of a key while the group key stays (proactive secret sharing): each
//! participant deals a random polynomial of degree `t - 1` whose constant term is zero, and
//! every share moves by the sum of all participants' polynomials at its index. The shares
//! after a refresh lie on a new polynomial with the same constant term, so a share stolen
//! before it does not combine with shares after it.
//!
//! A refresh takes the threshold and the set from the keys refreshed: nothing in a message can
//! change them (changing them is a new key generation; CVE-2025-58359 came from allowing it).
//! Every participant of the set takes part: a share left out would no longer fit the others.
//!
//! 1. `deal`: participant `i` draws `f_i` (coefficients `a_1 … a_{t-1}`, constant zero),
//!    commits to each coefficient (`a_k·G`) and sends every other participant `j` the value
//!    `f_i(j)`, masked (`pairwise`) under `i`'s fresh key and `j`'s; it keeps `f_i(i)`. The
//!    fresh keys are the session's own (each signed by its holder's identity, checked by the
//!    caller), never the shares: a thief of an old share who reads the traffic learns nothing
//!    of the new one.
//! 2. `apply`: participant `j` unmasks each `f_i(j)` and checks it against `f_i`'s
//!    commitments (a participant whose value does not fit is blamed), adds them all to its
//!    share, and moves every verification share by the commitments: `V_m += Σ_i f_i(m)·G`.

use std::collections::{BTreeMap, HashMap};

use ciphersuite::{
    group::{ff::Field, Group},
    Ciphersuite,
};
use modular_frost::{dkg::Interpolation, Participant, ThresholdKeys, ThresholdParams};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    pairwise::{mask, Context},
    polynomial::participants,
};

/// A refresh step that cannot be taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshError {
    /// A key of threshold 1 has no polynomial to move.
    #[error("a key of threshold 1 cannot be refreshed")]
    ThresholdOne,
    /// The contributions received are not exactly one from each other participant.
    #[error("the refresh's contributions are not one from each other participant: {0:?}")]
    Contributions(Vec<u16>),
    /// A participant's commitments are not `t - 1`, or its value does not fit them.
    #[error("participant {} dealt a value that does not fit its commitments", u16::from(*.0))]
    Blame(Participant),
    /// The refreshed keys do not hold together (cannot happen when the checks above passed).
    #[error("the refreshed keys are inconsistent")]
    Inconsistent,
}

/// What a participant deals: its commitments, and each other participant's masked value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dealt<C: Ciphersuite> {
    /// `a_k·G` for `k` in `1..t`.
    pub commitments: Vec<C::G>,
    /// `f_i(j)`, masked, for every other participant `j`.
    pub masked: BTreeMap<Participant, C::F>,
}

/// What a participant keeps of its own deal until `apply`.
pub struct Kept<C: Ciphersuite> {
    own: Zeroizing<C::F>,
    commitments: Vec<C::G>,
}

impl<C: Ciphersuite> Clone for Kept<C> {
    fn clone(&self) -> Self {
        Kept {
            own: self.own.clone(),
            commitments: self.commitments.clone(),
        }
    }
}

/// Every other participant's fresh key for this session.
pub type Peers<C> = BTreeMap<Participant, <C as Ciphersuite>::G>;

/// What `apply` takes from another participant: its commitments and its masked value for us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<C: Ciphersuite> {
    /// The dealer's commitments.
    pub commitments: Vec<C::G>,
    /// `f_i(j)`, masked, for us.
    pub masked: C::F,
}

/// Step 1: deals a polynomial with a zero constant term, each value masked under `fresh`
/// (our fresh key's secret) and the receiver's fresh key in `peers`.
///
/// # Errors
/// The key's threshold is 1, or `peers` is not every other participant's.
pub fn deal<C: Ciphersuite, R: RngCore + CryptoRng>(
    keys: &ThresholdKeys<C>,
    session: &[u8; 32],
    fresh: &C::F,
    peers: &Peers<C>,
    rng: &mut R,
) -> Result<(Kept<C>, Dealt<C>), RefreshError> {
    let params = keys.params();
    if params.t() < 2 {
        return Err(RefreshError::ThresholdOne);
    }
    everyone_else(params, peers)?;
    let coefficients: Vec<Zeroizing<C::F>> = (1..params.t())
        .map(|_| Zeroizing::new(C::F::random(&mut *rng)))
        .collect();
    let commitments: Vec<C::G> = coefficients.iter().map(|a| C::generator() * **a).collect();
    let evaluate = |at: Participant| {
        let x = C::F::from(u64::from(u16::from(at)));
        let mut value = Zeroizing::new(C::F::ZERO);
        for a in coefficients.iter().rev() {
            *value = (*value + **a) * x;
        }
        value
    };
    let me = params.i();
    let mut masked = BTreeMap::new();
    for (&to, &key) in peers {
        let context = Context {
            session,
            from: me,
            to,
        };
        masked.insert(to, *evaluate(to) + *mask::<C>(fresh, key, context));
    }
    let dealt = Dealt {
        commitments: commitments.clone(),
        masked,
    };
    Ok((
        Kept {
            own: evaluate(me),
            commitments,
        },
        dealt,
    ))
}

/// Step 2: the refreshed keys, from every other participant's deal, unmasked with `fresh`
/// and the dealers' fresh keys in `peers`.
///
/// # Errors
/// `peers` or `received` is not every other participant's, or a deal does not fit its
/// commitments (`Blame`, the lowest such participant).
pub fn apply<C: Ciphersuite>(
    keys: &ThresholdKeys<C>,
    session: &[u8; 32],
    kept: Kept<C>,
    fresh: &C::F,
    peers: &Peers<C>,
    received: &BTreeMap<Participant, Received<C>>,
) -> Result<ThresholdKeys<C>, RefreshError> {
    let params = keys.params();
    let me = params.i();
    everyone_else(params, peers)?;
    everyone_else(params, received)?;
    let degree = usize::from(params.t()) - 1;
    let share = keys.original_secret_share();
    let mut refreshed = Zeroizing::new(**share + *kept.own);
    for ((&from, dealt), key) in received.iter().zip(peers.values()) {
        let context = Context {
            session,
            from,
            to: me,
        };
        let value = Zeroizing::new(dealt.masked - *mask::<C>(fresh, *key, context));
        if dealt.commitments.len() != degree
            || C::generator() * *value != evaluate_commitments::<C>(&dealt.commitments, me)
        {
            return Err(RefreshError::Blame(from));
        }
        *refreshed += *value;
    }
    let all: Vec<&[C::G]> = received
        .values()
        .map(|dealt| dealt.commitments.as_slice())
        .chain([kept.commitments.as_slice()])
        .collect();
    let verification_shares: HashMap<Participant, C::G> = participants(params.n())
        .map(|m| {
            let moved: C::G = all.iter().map(|c| evaluate_commitments::<C>(c, m)).sum();
            (m, keys.original_verification_share(m) + moved)
        })
        .collect();
    let ours = verification_shares.get(&me).copied();
    if ours != Some(C::generator() * *refreshed) {
        return Err(RefreshError::Inconsistent);
    }
    let new = ThresholdKeys::new(
        params,
        Interpolation::Lagrange,
        refreshed,
        verification_shares,
    )
    .map_err(|_| RefreshError::Inconsistent)?;
    if new.group_key() != keys.group_key() {
        return Err(RefreshError::Inconsistent);
    }
    Ok(new)
}

/// `f(m)·G` from the commitments to `f`'s coefficients `1..t` (constant term zero).
fn evaluate_commitments<C: Ciphersuite>(commitments: &[C::G], m: Participant) -> C::G {
    let x = C::F::from(u64::from(u16::from(m)));
    commitments
        .iter()
        .rev()
        .fold(C::G::identity(), |acc, c| (acc + c) * x)
}

/// That `map` holds exactly every participant but us.
fn everyone_else<V>(
    params: ThresholdParams,
    map: &BTreeMap<Participant, V>,
) -> Result<(), RefreshError> {
    let me = params.i();
    if map
        .keys()
        .copied()
        .eq(participants(params.n()).filter(|&p| p != me))
    {
        Ok(())
    } else {
        Err(RefreshError::Contributions(
            map.keys().map(|p| u16::from(*p)).collect(),
        ))
    }
}
