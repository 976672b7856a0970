//! Repairing a lost share from `t` others without anyone learning the key, a helper's share
//! or the repaired share (Laing and Stinson's repairable threshold scheme; ZF's `frost-core`
//! `repairable` module computes the same). With helpers `H` (`t` of them, never the repaired
//! participant `r`) and `s_i` helper `i`'s share:
//!
//! 1. `split`: helper `i` computes `δ_i = λ_i(r)·s_i`, its share's term when `r`'s share is
//!    interpolated over `H`, splits it into `t` random parts summing to `δ_i`, keeps one and
//!    sends every other helper one, masked under the two helpers' shares (`pairwise`).
//! 2. `gather`: helper `j` adds the parts it was sent to the one it kept (`σ_j`) and sends the
//!    sum to `r`, masked under its share and `r`'s fresh key, which the coordinator attested.
//! 3. `recover`: `r` unmasks and adds every `σ_j`: `Σ σ_j = Σ δ_i = s_r`, and checks it
//!    against its verification share before anything uses it.
//!
//! `r` holds no verification shares (its database is lost), so every helper sends the ones it
//! holds; `r` takes them only if every helper sent the same list, it lies on one polynomial of
//! degree `t - 1` whose constant term is the attested group key, and the recovered share
//! matches. A relay inventing the list would need the discrete logarithms of `t + 1` of its
//! points (every helper's, to make the masks `r` removes, and `r`'s, to pass the check) while
//! the group key leaves only `t - 1` free.

use std::collections::{BTreeMap, HashMap};

use ciphersuite::{group::ff::Field, Ciphersuite};
use modular_frost::{dkg::Interpolation, Participant, ThresholdKeys, ThresholdParams};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    pairwise::{mask, Context},
    polynomial::{lagrange, one_key, participants},
};

/// A repair step that cannot be taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairError {
    /// The repaired participant or the helpers do not fit the key or this step.
    #[error("the repair's participants do not fit: {0}")]
    Participants(String),
    /// The parts or answers received are not exactly one from each other helper.
    #[error("the repair's messages are not one from each helper: {0}")]
    Messages(String),
    /// The helpers sent different verification shares.
    #[error("the helpers hold different verification shares")]
    SharesDiffer,
    /// The verification shares are not one key of this shape with the attested group key.
    #[error("the verification shares are not those of the attested key")]
    NotTheKey,
    /// The recovered share does not match its verification share: a helper or the relay
    /// changed a value.
    #[error("the recovered share does not match its verification share")]
    Mismatch,
}

/// Who is repaired and who helps, as the coordinator attested it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    repaired: Participant,
    helpers: Vec<Participant>,
}

impl Repair {
    /// A repair of `repaired` by `helpers`, which must be distinct and exclude `repaired`;
    /// they are kept in ascending order.
    ///
    /// # Errors
    /// `Participants`, saying which rule is broken.
    pub fn new(repaired: Participant, mut helpers: Vec<Participant>) -> Result<Self, RepairError> {
        helpers.sort_unstable();
        if helpers.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(RepairError::Participants("a helper is named twice".into()));
        }
        if helpers.contains(&repaired) {
            return Err(RepairError::Participants(format!(
                "participant {} cannot help repair itself",
                u16::from(repaired)
            )));
        }
        if helpers.is_empty() {
            return Err(RepairError::Participants("no helpers".into()));
        }
        Ok(Repair { repaired, helpers })
    }

    /// The participant repaired.
    pub fn repaired(&self) -> Participant {
        self.repaired
    }

    /// The helpers, ascending.
    pub fn helpers(&self) -> &[Participant] {
        &self.helpers
    }

    /// Exactly `t` helpers, everyone within `1..=n`.
    fn fits(&self, t: u16, n: u16) -> Result<(), RepairError> {
        if self.helpers.len() != usize::from(t) {
            return Err(RepairError::Participants(format!(
                "{} helpers for a key of threshold {t}",
                self.helpers.len()
            )));
        }
        if let Some(outside) = self
            .helpers
            .iter()
            .chain([&self.repaired])
            .find(|p| u16::from(**p) > n)
        {
            return Err(RepairError::Participants(format!(
                "participant {} of a key of {n}",
                u16::from(*outside)
            )));
        }
        Ok(())
    }

    /// That `keys` belong to one of the helpers.
    fn helper(&self, keys: &ThresholdKeys<impl Ciphersuite>) -> Result<Participant, RepairError> {
        let params = keys.params();
        self.fits(params.t(), params.n())?;
        let me = params.i();
        if !self.helpers.contains(&me) {
            return Err(RepairError::Participants(format!(
                "participant {} is not a helper",
                u16::from(me)
            )));
        }
        Ok(me)
    }

    /// That `received` holds one value from each helper but `me`.
    fn check_one_from_each_helper<V>(
        &self,
        me: Option<Participant>,
        received: &BTreeMap<Participant, V>,
    ) -> Result<(), RepairError> {
        let expected = self.helpers.iter().filter(|&&p| Some(p) != me);
        if !received.keys().eq(expected) {
            return Err(RepairError::Messages(format!(
                "from {:?}",
                received.keys().map(|p| u16::from(*p)).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}

/// Masked values by the participant they come from or go to.
pub type Masked<C> = BTreeMap<Participant, <C as Ciphersuite>::F>;

/// The part of `δ_i` a helper keeps between `split` and `gather`.
pub struct Kept<C: Ciphersuite>(Zeroizing<C::F>);

/// Step 1, at a helper: the masked parts of `δ_i` for each other helper, and the part kept.
///
/// # Errors
/// `keys` are not a helper's of a key this repair fits.
pub fn split<C: Ciphersuite, R: RngCore + CryptoRng>(
    keys: &ThresholdKeys<C>,
    repair: &Repair,
    session: &[u8; 32],
    rng: &mut R,
) -> Result<(Kept<C>, Masked<C>), RepairError> {
    let me = repair.helper(keys)?;
    let share = keys.original_secret_share();
    let weight: C::F = lagrange(me, &repair.helpers, u16::from(repair.repaired));
    let mut kept = Zeroizing::new(weight * **share);
    let mut sent = BTreeMap::new();
    for &to in repair.helpers.iter().filter(|&&p| p != me) {
        let part = Zeroizing::new(C::F::random(&mut *rng));
        *kept -= *part;
        let context = Context {
            session,
            from: me,
            to,
        };
        let pad = mask::<C>(share, keys.original_verification_share(to), context);
        sent.insert(to, *part + *pad);
    }
    Ok((Kept(kept), sent))
}

/// Step 2, at a helper: `σ_j` from the parts the other helpers sent, masked for the repaired
/// participant under its attested fresh key.
///
/// # Errors
/// `keys` are not a helper's, or `received` is not one part from each other helper.
pub fn gather<C: Ciphersuite>(
    keys: &ThresholdKeys<C>,
    repair: &Repair,
    session: &[u8; 32],
    kept: Kept<C>,
    received: &Masked<C>,
    repaired_key: C::G,
) -> Result<C::F, RepairError> {
    let me = repair.helper(keys)?;
    repair.check_one_from_each_helper(Some(me), received)?;
    let share = keys.original_secret_share();
    let mut sum = kept.0;
    for (&from, masked) in received {
        let context = Context {
            session,
            from,
            to: me,
        };
        *sum += *masked - *mask::<C>(share, keys.original_verification_share(from), context);
    }
    let context = Context {
        session,
        from: me,
        to: repair.repaired,
    };
    Ok(*sum + *mask::<C>(share, repaired_key, context))
}

/// What a helper sends the repaired participant: its masked `σ_j`, and the verification
/// shares it holds (of participants 1 to n, in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<C: Ciphersuite> {
    /// `σ_j`, masked.
    pub masked: C::F,
    /// Every participant's verification share.
    pub verification_shares: Vec<C::G>,
}

/// Step 3, at the repaired participant: its keys, from every helper's answer, with the fresh
/// key's secret `ephemeral` and the attested `group_key`.
///
/// # Errors
/// The answers are not one from each helper, the helpers hold different verification shares
/// or ones not of `group_key`, or the recovered share does not match.
pub fn recover<C: Ciphersuite>(
    ephemeral: &C::F,
    repair: &Repair,
    session: &[u8; 32],
    group_key: C::G,
    answers: &BTreeMap<Participant, Answer<C>>,
) -> Result<ThresholdKeys<C>, RepairError> {
    repair.check_one_from_each_helper(None, answers)?;
    let mut lists = answers.values().map(|answer| &answer.verification_shares);
    let shares = lists
        .next()
        .ok_or_else(|| RepairError::Messages("no answers".into()))?;
    if lists.any(|other| other != shares) {
        return Err(RepairError::SharesDiffer);
    }
    let t = u16::try_from(repair.helpers.len()).map_err(|_| RepairError::NotTheKey)?;
    let n = u16::try_from(shares.len()).map_err(|_| RepairError::NotTheKey)?;
    repair.fits(t, n)?;
    let params = ThresholdParams::new(t, n, repair.repaired)
        .map_err(|error| RepairError::Participants(error.to_string()))?;
    if !one_key::<C>(shares, t, group_key) {
        return Err(RepairError::NotTheKey);
    }
    let by_participant: HashMap<Participant, C::G> =
        participants(n).zip(shares.iter().copied()).collect();
    let share_of = |p: Participant| {
        by_participant
            .get(&p)
            .copied()
            .ok_or(RepairError::NotTheKey)
    };
    let mut secret = Zeroizing::new(C::F::ZERO);
    for (&from, answer) in answers {
        let context = Context {
            session,
            from,
            to: repair.repaired,
        };
        *secret += answer.masked - *mask::<C>(ephemeral, share_of(from)?, context);
    }
    if C::generator() * *secret != share_of(repair.repaired)? {
        return Err(RepairError::Mismatch);
    }
    let keys = ThresholdKeys::new(params, Interpolation::Lagrange, secret, by_participant)
        .map_err(|_| RepairError::NotTheKey)?;
    if keys.group_key() != group_key {
        return Err(RepairError::NotTheKey);
    }
    Ok(keys)
}
