//! Secrets that cross the coordinator from one enclave to another, readable by those two
//! only: a one-time pad in the scalar field, hashed from the Diffie-Hellman secret of a key of
//! each end and a context naming the session, the sender and the receiver.
//!
//! The keys are ones each end can trust: a share of a key both hold, named by its
//! verification share from the key generation; a repaired enclave's fresh key, signed by its
//! registered identity and attested; or a refresh participant's fresh key, signed by its
//! attested identity. A relayed point meets a secret only once its signature or attestation
//! is checked (save the verification shares a repaired enclave is sent, which its one-time
//! fresh secret meets and which only the outcome checks), so nothing a relay sends is an
//! oracle. A mask hides a value that is uniformly random or
//! masked by one (a part of an additive split, a polynomial evaluation), and a context is used
//! for one value within a session (a step replayed after a restart reuses its contexts, which
//! shows only the difference of two random values), so a relay learns nothing; it can only
//! change a value, which the receiver's check against a verification share or commitment then
//! refuses.

use ciphersuite::{group::GroupEncoding, Ciphersuite};
use modular_frost::Participant;
use zeroize::{Zeroize, Zeroizing};

/// The hash-to-field domain of every mask. Changing it makes old and new enclaves disagree.
const DOMAIN: &[u8] = b"serai-processor/pairwise-mask/v1";

/// Who a masked value goes from and to, within one session of one curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    /// The session (a repair or a refresh), unique to its attempt.
    pub session: &'a [u8; 32],
    /// The sender.
    pub from: Participant,
    /// The receiver.
    pub to: Participant,
}

/// The mask between the holder of `ours` and the holder of the secret of `theirs`, for one
/// value: the same from both ends (`mask(a, b·G) == mask(b, a·G)`).
pub fn mask<C: Ciphersuite>(ours: &C::F, theirs: C::G, context: Context<'_>) -> Zeroizing<C::F> {
    let mut shared = (theirs * *ours).to_bytes();
    let mut message = Zeroizing::new(Vec::with_capacity(96));
    message.extend_from_slice(C::ID);
    message.extend_from_slice(shared.as_ref());
    shared.as_mut().zeroize();
    message.extend_from_slice(context.session);
    message.extend_from_slice(&u16::from(context.from).to_le_bytes());
    message.extend_from_slice(&u16::from(context.to).to_le_bytes());
    Zeroizing::new(C::hash_to_F(DOMAIN, &message))
}

#[cfg(test)]
mod tests {
    use ciphersuite::{group::ff::Field, Ciphersuite, Ristretto};
    use modular_frost::{curve::Secp256k1, Participant};
    use rand_core::OsRng;

    use super::{mask, Context};

    fn symmetric<C: Ciphersuite>() {
        let (a, b) = (C::F::random(&mut OsRng), C::F::random(&mut OsRng));
        let session = [7; 32];
        let p = |i| Participant::new(i).unwrap_or_else(|| unreachable!());
        let context = Context {
            session: &session,
            from: p(1),
            to: p(2),
        };
        let ours = mask::<C>(&a, C::generator() * b, context);
        assert_eq!(*ours, *mask::<C>(&b, C::generator() * a, context));
        // Another direction, session or key gives another mask.
        let back = Context {
            from: p(2),
            to: p(1),
            ..context
        };
        assert_ne!(*ours, *mask::<C>(&a, C::generator() * b, back));
        let other = [8; 32];
        let elsewhere = Context {
            session: &other,
            ..context
        };
        assert_ne!(*ours, *mask::<C>(&a, C::generator() * b, elsewhere));
        assert_ne!(*ours, *mask::<C>(&a, C::generator() * a, context));
    }

    #[test]
    fn both_ends_derive_the_same_mask_and_nothing_else_does() {
        symmetric::<Ristretto>();
        symmetric::<Secp256k1>();
    }
}
