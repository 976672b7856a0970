//! Identifiers of networks, validator sets, key generations, participants, messages, Serai
//! blocks and batches (PROTOCOL.md section 1).

use core::fmt;

use crate::error::ValueError;

/// The external networks Serai knows. A processor serves exactly one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkId {
    /// The Serai chain itself.
    Serai,
    /// Bitcoin.
    Bitcoin,
    /// Ethereum.
    Ethereum,
    /// Monero.
    Monero,
}

impl NetworkId {
    /// Every network, in discriminant order.
    pub const ALL: [NetworkId; 4] = [
        NetworkId::Serai,
        NetworkId::Bitcoin,
        NetworkId::Ethereum,
        NetworkId::Monero,
    ];

    /// The one-byte code used wherever a network is hashed or packed into bytes (batch sign
    /// ids, batch messages, attestations). Fixed forever: changing it changes signed bytes.
    pub const fn code(self) -> u8 {
        match self {
            NetworkId::Serai => 0,
            NetworkId::Bitcoin => 1,
            NetworkId::Ethereum => 2,
            NetworkId::Monero => 3,
        }
    }

    /// The network for a code from `code`.
    pub fn from_code(code: u8) -> Result<Self, ValueError> {
        NetworkId::ALL
            .into_iter()
            .find(|network| network.code() == code)
            .ok_or(ValueError {
                what: "network id",
                reason: "unknown network code",
            })
    }
}

/// A validator-set session: the chain's counter of set rotations for a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Session(pub u32);

/// The validators managing one network during one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorSet {
    /// Which rotation.
    pub session: Session,
    /// Which network.
    pub network: NetworkId,
}

/// The attempt number of a key generation or a signing session. A new attempt starts afresh
/// (new polynomial, new nonces) and replaces the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

/// One distributed key generation attempt for a validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGenId {
    /// The set generating keys.
    pub set: ValidatorSet,
    /// Which attempt.
    pub attempt: Attempt,
}

/// A participant in a threshold protocol. Participants are numbered from 1, so 0 cannot be
/// constructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Participant(u16);

impl Participant {
    /// A participant, refusing 0.
    pub fn new(index: u16) -> Result<Self, ValueError> {
        if index == 0 {
            return Err(ValueError {
                what: "participant",
                reason: "participants are numbered from 1",
            });
        }
        Ok(Participant(index))
    }

    /// The 1-based index.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A t-of-n threshold and our place in it. Always `1 <= t <= n` and `1 <= i <= n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThresholdParams {
    t: u16,
    n: u16,
    i: Participant,
}

impl ThresholdParams {
    /// Threshold parameters, refusing a threshold of 0, a threshold above n, or a participant
    /// outside 1..=n.
    pub fn new(t: u16, n: u16, i: Participant) -> Result<Self, ValueError> {
        let what = "threshold parameters";
        if t == 0 {
            return Err(ValueError {
                what,
                reason: "threshold is 0",
            });
        }
        if t > n {
            return Err(ValueError {
                what,
                reason: "threshold exceeds participant count",
            });
        }
        if i.get() > n {
            return Err(ValueError {
                what,
                reason: "participant index exceeds participant count",
            });
        }
        Ok(ThresholdParams { t, n, i })
    }

    /// Signers needed.
    pub const fn t(&self) -> u16 {
        self.t
    }

    /// Participants in all.
    pub const fn n(&self) -> u16 {
        self.n
    }

    /// Our own index.
    pub const fn i(&self) -> Participant {
        self.i
    }
}

/// The coordinator's number for a message. Strictly increasing per processor; a processor
/// that sees an id go backwards halts its link instead of handling anything twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// The number of a Serai block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeraiBlockNumber(pub u64);

/// A Batch's sequential id within its network: never reused, never skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u32);

/// Seconds since the Unix epoch, as the Serai chain reports its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeraiTime(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_codes_round_trip_and_unknown_codes_fail() {
        for network in NetworkId::ALL {
            assert_eq!(NetworkId::from_code(network.code()), Ok(network));
        }
        assert!(NetworkId::from_code(4).is_err());
        assert!(NetworkId::from_code(255).is_err());
    }

    #[test]
    fn participant_zero_is_refused() {
        assert!(Participant::new(0).is_err());
        assert_eq!(Participant::new(1).map(Participant::get), Ok(1));
    }

    #[test]
    fn threshold_params_are_checked() {
        let p = |i| Participant::new(i).unwrap();
        assert!(ThresholdParams::new(3, 4, p(4)).is_ok());
        assert!(ThresholdParams::new(4, 4, p(1)).is_ok());
        assert!(ThresholdParams::new(0, 4, p(1)).is_err());
        assert!(ThresholdParams::new(5, 4, p(1)).is_err());
        assert!(ThresholdParams::new(3, 4, p(5)).is_err());
    }
}
