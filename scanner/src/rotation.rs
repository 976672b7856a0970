//! Key rotation: the network's confirmed key pairs in confirmation order, and the stage of
//! each. Pure: the processor reads it from the store, changes it on `ConfirmKeyPair` and at
//! Serai blocks, and commits it with the message that changed it.
//!
//! The newest key is **active**: it pays every new burn, and its batch key signs the Batches of
//! blocks from its activation block on. Every older key is **forwarding**: it receives no new
//! payments, completes the payments already queued or planned on it, and once it owes nothing
//! sends every output worth spending to the active key's change address (a forwarding plan,
//! acknowledged and signed like any). A forwarding key **retires** once it is drained (nothing
//! pooled, owed or in flight) and `RETIRE_AFTER_BLOCKS` passed since its successor's
//! activation. A retired key is still scanned: anything that reaches it is forwarded.
//!
//! A validator leaving with a rotation holds the old key and not the new one: it records the
//! new key as not held, scans for it (so that its Batches stay those of its peers), and goes on
//! forwarding and signing for the old key until it retires; it schedules nothing and signs
//! nothing for a key it does not hold.
//!
//! Every change happens at a coordinator message every validator handles in the same order
//! (`ConfirmKeyPair`, a Serai block), from state every validator shares, so every validator
//! sees the same stages and makes the same plans.

use schema::{
    ids::Session,
    keys::{BatchKey, KeyPair, NetworkKey},
    protocol::may_retire,
};
use thiserror::Error;

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The newest key: pays new burns, signs new Batches.
    Active,
    /// Replaced: completes what it owes, then forwards what it holds to the active key.
    Forwarding,
    /// Drained and past `RETIRE_AFTER_BLOCKS`: still scanned, anything reaching it forwarded.
    Retired,
}

impl Stage {
    /// The stage's name, for logs.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Active => "active",
            Stage::Forwarding => "forwarding",
            Stage::Retired => "retired",
        }
    }

    /// The stage's code, as stored and as its gauge shows it: 0 active, 1 forwarding, 2
    /// retired.
    pub fn code(self) -> u8 {
        match self {
            Stage::Active => 0,
            Stage::Forwarding => 1,
            Stage::Retired => 2,
        }
    }

    fn of_code(code: u8) -> Option<Stage> {
        match code {
            0 => Some(Stage::Active),
            1 => Some(Stage::Forwarding),
            2 => Some(Stage::Retired),
            _ => None,
        }
    }
}

/// A confirmed key pair and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmedKey {
    /// The pair the chain voted in.
    pub pair: KeyPair,
    /// The session of the validator set that generated it.
    pub session: Session,
    /// Its activation block: the first block scanned for it, and the first whose Batch its batch
    /// key signs.
    pub activation: u64,
    /// Its stage.
    pub stage: Stage,
    /// Whether this validator's enclave holds it (a validator leaving with a rotation does not
    /// hold the new key).
    pub held: bool,
}

/// A `ConfirmKeyPair` the rotation cannot take. The coordinator relays the chain's votes in
/// order, so these mean a defect or a forged message: refused, nothing changes.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationError {
    /// One half of the pair is already confirmed with another other half.
    #[error("one half of the key pair was confirmed before, with another other half")]
    HalfReused,
    /// A network's first key is one this validator does not hold: there is no set it belongs
    /// to whose key it could forward.
    #[error("the network's first key is not held by this validator")]
    FirstNotHeld,
    /// The session is not after the newest key's: Serai confirms one key per session, in
    /// order.
    #[error("session {session} is not after the newest key's, {newest}")]
    SessionNotLater {
        /// The pair's session.
        session: u32,
        /// The newest key's.
        newest: u32,
    },
    /// The activation block is not after the newest key's.
    #[error("activation block {activation} is not after the newest key's, {newest}")]
    NotLater {
        /// The pair's activation block.
        activation: u64,
        /// The newest key's.
        newest: u64,
    },
}

/// What confirming a pair did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The pair is the new active key; the one before it (if any) forwards.
    Added,
    /// The pair was confirmed already (the message came again): nothing changed.
    Known,
}

/// The network's confirmed keys, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    keys: Vec<ConfirmedKey>,
}

/// Version of the stored format.
const VERSION: u8 = 1;
/// Bytes of one stored key: batch key, network key, session, activation, stage, held.
const KEY_LEN: usize = 32 + 33 + 4 + 8 + 1 + 1;

impl Rotation {
    /// The keys, oldest first.
    pub fn keys(&self) -> &[ConfirmedKey] {
        &self.keys
    }

    /// The active key (the newest), if any key is confirmed.
    pub fn active(&self) -> Option<&ConfirmedKey> {
        self.keys.last()
    }

    /// The confirmed key whose network key is `key`.
    pub fn get(&self, key: &NetworkKey) -> Option<&ConfirmedKey> {
        self.keys
            .iter()
            .find(|confirmed| confirmed.pair.network_key == *key)
    }

    /// The confirmed key whose network key is `key`, if this validator holds it.
    pub fn held(&self, key: &NetworkKey) -> Option<&ConfirmedKey> {
        self.get(key).filter(|confirmed| confirmed.held)
    }

    /// Whether `key` is the batch key of a confirmed pair this validator holds.
    pub fn holds_batch_key(&self, key: &BatchKey) -> bool {
        self.keys
            .iter()
            .any(|confirmed| confirmed.held && confirmed.pair.batch_key == *key)
    }

    /// The key pair whose batch key signs the Batch of the block at `height`: the newest
    /// activated at or before it.
    pub fn signing_batches_at(&self, height: u64) -> Option<&ConfirmedKey> {
        self.keys
            .iter()
            .rev()
            .find(|confirmed| confirmed.activation <= height)
    }

    /// What confirming `pair` of `session`, activated at `activation`, would do, without doing
    /// it: whether it is known already, or refused (`confirm` refuses the same, and a first
    /// key not held).
    ///
    /// # Errors
    /// See `RotationError`.
    pub fn admits(
        &self,
        pair: KeyPair,
        session: Session,
        activation: u64,
    ) -> Result<Confirmed, RotationError> {
        if let Some(known) = self.keys.iter().find(|confirmed| {
            confirmed.pair.network_key == pair.network_key
                || confirmed.pair.batch_key == pair.batch_key
        }) {
            return if known.pair == pair {
                Ok(Confirmed::Known)
            } else {
                Err(RotationError::HalfReused)
            };
        }
        match self.keys.last() {
            Some(newest) if session <= newest.session => Err(RotationError::SessionNotLater {
                session: session.0,
                newest: newest.session.0,
            }),
            Some(newest) if activation <= newest.activation => Err(RotationError::NotLater {
                activation,
                newest: newest.activation,
            }),
            _ => Ok(Confirmed::Added),
        }
    }

    /// Confirms `pair` of `session`, activated at `activation` and `held` by this validator
    /// or not: it becomes the active key, and the active key before it forwards. A network's
    /// first key must be held (the processor never asks otherwise).
    ///
    /// # Errors
    /// See `RotationError`; nothing changes then.
    pub fn confirm(
        &mut self,
        pair: KeyPair,
        session: Session,
        activation: u64,
        held: bool,
    ) -> Result<Confirmed, RotationError> {
        if self.admits(pair, session, activation)? == Confirmed::Known {
            return Ok(Confirmed::Known);
        }
        if self.keys.is_empty() && !held {
            return Err(RotationError::FirstNotHeld);
        }
        if let Some(newest) = self.keys.last_mut() {
            newest.stage = Stage::Forwarding;
        }
        self.keys.push(ConfirmedKey {
            pair,
            session,
            activation,
            stage: Stage::Active,
            held,
        });
        Ok(Confirmed::Added)
    }

    /// Retires `key` if it forwards, is `drained` (holds, owes and has in flight nothing) and
    /// `RETIRE_AFTER_BLOCKS` passed by network block `now` since its successor's activation.
    /// Returns whether it retired now.
    pub fn retire_if_done(&mut self, key: &NetworkKey, drained: bool, now: u64) -> bool {
        let Some(index) = self
            .keys
            .iter()
            .position(|confirmed| confirmed.pair.network_key == *key)
        else {
            return false;
        };
        let Some(successor) = self.keys.get(index + 1).map(|next| next.activation) else {
            return false;
        };
        match self.keys.get_mut(index) {
            Some(confirmed) if confirmed.stage == Stage::Forwarding && drained => {
                if may_retire(successor, now) {
                    confirmed.stage = Stage::Retired;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// The stored form: `u8 version | u32 count (LE) | count × (batch key (32) | network key
    /// (33) | session (u32 LE) | activation (u64 LE) | stage (u8: 0 active, 1 forwarding, 2
    /// retired) | held (u8: 0 or 1))`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.keys.len() * KEY_LEN);
        out.push(VERSION);
        out.extend_from_slice(
            &u32::try_from(self.keys.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for confirmed in &self.keys {
            out.extend_from_slice(&confirmed.pair.batch_key.0);
            out.extend_from_slice(&confirmed.pair.network_key.to_bytes());
            out.extend_from_slice(&confirmed.session.0.to_le_bytes());
            out.extend_from_slice(&confirmed.activation.to_le_bytes());
            out.push(confirmed.stage.code());
            out.push(u8::from(confirmed.held));
        }
        out
    }

    /// Reads the stored form back; `None` if it is damaged: a wrong length or version, a key
    /// that is not a key, or stages or activations no rotation reaches (only the newest key
    /// active, sessions and activations increasing, the first key held).
    pub fn decode(bytes: &[u8]) -> Option<Rotation> {
        let (&version, rest) = bytes.split_first()?;
        let (count, mut rest) = rest.split_first_chunk::<4>()?;
        let count = usize::try_from(u32::from_le_bytes(*count)).ok()?;
        if version != VERSION || rest.len() != count.checked_mul(KEY_LEN)? {
            return None;
        }
        let mut keys = Vec::with_capacity(count);
        while let Some((batch, tail)) = rest.split_first_chunk::<32>() {
            let (network, tail) = tail.split_first_chunk::<33>()?;
            let (session, tail) = tail.split_first_chunk::<4>()?;
            let (activation, tail) = tail.split_first_chunk::<8>()?;
            let (&stage, tail) = tail.split_first()?;
            let (&held, tail) = tail.split_first()?;
            keys.push(ConfirmedKey {
                pair: KeyPair {
                    batch_key: BatchKey(*batch),
                    network_key: NetworkKey::from_slice(network).ok()?,
                },
                session: Session(u32::from_le_bytes(*session)),
                activation: u64::from_le_bytes(*activation),
                stage: Stage::of_code(stage)?,
                held: match held {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            });
            rest = tail;
        }
        let last = keys.len().checked_sub(1);
        let consistent = keys
            .iter()
            .enumerate()
            .all(|(index, confirmed)| (confirmed.stage == Stage::Active) == (Some(index) == last))
            && keys
                .windows(2)
                .all(|pair| matches!(pair, [a, b] if a.activation < b.activation && a.session < b.session))
            && keys.first().is_none_or(|first| first.held);
        consistent.then_some(Rotation { keys })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use schema::protocol::RETIRE_AFTER_BLOCKS;

    use super::*;

    fn pair(byte: u8) -> KeyPair {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let secret = bitcoin::secp256k1::SecretKey::from_slice(&[byte; 32]).unwrap();
        let public = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &secret);
        KeyPair {
            batch_key: BatchKey([byte; 32]),
            network_key: NetworkKey::from_slice(&public.serialize()).unwrap(),
        }
    }

    fn stages(rotation: &Rotation) -> Vec<Stage> {
        rotation.keys().iter().map(|key| key.stage).collect()
    }

    #[test]
    fn a_new_key_becomes_active_and_the_one_before_forwards() {
        let mut rotation = Rotation::default();
        assert_eq!(
            rotation.confirm(pair(1), Session(1), 10, true),
            Ok(Confirmed::Added)
        );
        assert_eq!(stages(&rotation), [Stage::Active]);
        assert_eq!(
            rotation.confirm(pair(2), Session(2), 20, true),
            Ok(Confirmed::Added)
        );
        assert_eq!(stages(&rotation), [Stage::Forwarding, Stage::Active]);
        assert_eq!(
            rotation.confirm(pair(3), Session(3), 30, true),
            Ok(Confirmed::Added)
        );
        assert_eq!(
            stages(&rotation),
            [Stage::Forwarding, Stage::Forwarding, Stage::Active]
        );
        assert_eq!(rotation.active().map(|key| key.pair), Some(pair(3)));
    }

    #[test]
    fn batches_are_signed_by_the_key_activated_at_or_before_their_block() {
        let mut rotation = Rotation::default();
        let signing = |rotation: &Rotation, height| {
            rotation
                .signing_batches_at(height)
                .map(|key| key.pair.batch_key)
        };
        assert_eq!(signing(&rotation, 10), None);
        rotation.confirm(pair(1), Session(1), 10, true).unwrap();
        rotation.confirm(pair(2), Session(2), 20, false).unwrap();
        assert_eq!(signing(&rotation, 9), None);
        assert_eq!(signing(&rotation, 10), Some(pair(1).batch_key));
        assert_eq!(signing(&rotation, 19), Some(pair(1).batch_key));
        assert_eq!(signing(&rotation, 20), Some(pair(2).batch_key));
        // A validator leaving with the rotation holds only the old batch key.
        assert!(rotation.holds_batch_key(&pair(1).batch_key));
        assert!(!rotation.holds_batch_key(&pair(2).batch_key));
        assert!(!rotation.holds_batch_key(&pair(3).batch_key));
        assert!(rotation.held(&pair(2).network_key).is_none());
        assert!(rotation.get(&pair(2).network_key).is_some());
    }

    #[test]
    fn a_confirmation_again_changes_nothing_and_a_bad_one_is_refused() {
        let mut rotation = Rotation::default();
        rotation.confirm(pair(1), Session(1), 10, true).unwrap();
        rotation.confirm(pair(2), Session(2), 20, true).unwrap();
        let before = rotation.clone();
        assert_eq!(
            rotation.confirm(pair(1), Session(1), 10, true),
            Ok(Confirmed::Known)
        );
        assert_eq!(
            rotation.confirm(pair(2), Session(2), 99, true),
            Ok(Confirmed::Known)
        );
        let mixed = KeyPair {
            batch_key: pair(3).batch_key,
            network_key: pair(1).network_key,
        };
        assert_eq!(
            rotation.confirm(mixed, Session(3), 30, true),
            Err(RotationError::HalfReused)
        );
        assert_eq!(
            Rotation::default().confirm(pair(3), Session(3), 30, false),
            Err(RotationError::FirstNotHeld)
        );
        assert_eq!(
            rotation.confirm(pair(3), Session(3), 20, true),
            Err(RotationError::NotLater {
                activation: 20,
                newest: 20
            })
        );
        assert_eq!(
            rotation.confirm(pair(3), Session(2), 30, true),
            Err(RotationError::SessionNotLater {
                session: 2,
                newest: 2
            })
        );
        assert_eq!(rotation, before);
    }

    #[test]
    fn a_drained_key_retires_exactly_retire_after_blocks_past_its_successor() {
        let mut rotation = Rotation::default();
        rotation.confirm(pair(1), Session(1), 10, true).unwrap();
        let old = pair(1).network_key;
        // The only key is active: it never retires.
        assert!(!rotation.retire_if_done(&old, true, 1_000));
        rotation.confirm(pair(2), Session(2), 20, true).unwrap();
        let due = 20 + RETIRE_AFTER_BLOCKS;
        assert!(!rotation.retire_if_done(&old, true, due - 1));
        assert!(!rotation.retire_if_done(&old, false, due));
        assert_eq!(stages(&rotation), [Stage::Forwarding, Stage::Active]);
        assert!(rotation.retire_if_done(&old, true, due));
        assert_eq!(stages(&rotation), [Stage::Retired, Stage::Active]);
        // Once.
        assert!(!rotation.retire_if_done(&old, true, due + 1));
        assert!(!rotation.retire_if_done(&pair(2).network_key, true, due + 100));
    }

    #[test]
    fn the_stored_form_reads_back_and_damage_is_refused() {
        let mut rotation = Rotation::default();
        assert_eq!(Rotation::decode(&rotation.encode()), Some(rotation.clone()));
        rotation.confirm(pair(1), Session(1), 10, true).unwrap();
        rotation.confirm(pair(2), Session(2), 20, true).unwrap();
        rotation.retire_if_done(&pair(1).network_key, true, 1_000);
        let bytes = rotation.encode();
        assert_eq!(Rotation::decode(&bytes), Some(rotation));
        // Cut, lengthened, another version, a count beyond the bytes.
        assert_eq!(Rotation::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Rotation::decode(&[&bytes[..], &[0]].concat()), None);
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(Rotation::decode(&version), None);
        let mut count = bytes.clone();
        count[1] = 0xff;
        assert_eq!(Rotation::decode(&count), None);
        // The older key active too, or no key active: no rotation reaches either.
        let stage = 1 + 4 + KEY_LEN - 2;
        let mut two_active = bytes.clone();
        two_active[stage] = 0;
        assert_eq!(Rotation::decode(&two_active), None);
        let mut none_active = bytes.clone();
        none_active[stage + KEY_LEN] = 1;
        assert_eq!(Rotation::decode(&none_active), None);
        // A held flag that is no flag; a first key not held.
        let flag = 1 + 4 + KEY_LEN - 1;
        let mut flag_byte = bytes.clone();
        flag_byte[flag] = 2;
        assert_eq!(Rotation::decode(&flag_byte), None);
        let mut first_not_held = bytes.clone();
        first_not_held[flag] = 0;
        assert_eq!(Rotation::decode(&first_not_held), None);
        // Activations not increasing.
        let mut rotation = Rotation::default();
        rotation.confirm(pair(1), Session(1), 10, true).unwrap();
        rotation.confirm(pair(2), Session(2), 20, true).unwrap();
        let mut bytes = rotation.encode();
        let second = 1 + 4 + KEY_LEN + 32 + 33 + 4;
        bytes[second..second + 8].copy_from_slice(&10_u64.to_le_bytes());
        assert_eq!(Rotation::decode(&bytes), None);
    }
}
