//! The enclave's audit trail: every approval, refusal, released share or signature, key
//! generation and confirmation, as a hash-chained record. Pure: records, their encoding and
//! the chain's verification; `db` appends them (an approval's record in the same synced write
//! as the approval, before anything it allows leaves) and keeps the head of the chain, so that
//! an edited record breaks the chain and a truncated log no longer reaches the head.
//!
//! A record's bytes, integers little endian:
//!
//! ```text
//! seq (u64) || time (u64, seconds) || event (u8) || attempt (u32)
//! || len (u16) || subject || len (u16) || key || len (u16) || detail (UTF-8)
//! ```
//!
//! and its hash is `SHA-256("processor-audit-v1" || previous hash || bytes)`, the first
//! record's previous hash being all zeroes.

use bitcoin::hashes::{sha256, Hash, HashEngine};
use thiserror::Error;

const DOMAIN: &[u8] = b"processor-audit-v1";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key generation completed and its pair was sealed (subject: the set).
    KeyGenerated,
    /// A key pair was confirmed (subject: the set).
    KeyConfirmed,
    /// An attested acknowledgement was recorded (subject: the Serai block).
    PlansAcknowledged,
    /// A plan signing attempt was approved (subject: the plan id).
    PlanApproved,
    /// A plan's signature shares were released (subject: the plan id).
    PlanShared,
    /// A plan's signed transaction was released (subject: the plan id; detail: its txid).
    PlanSigned,
    /// A Batch signing attempt was approved (subject: the batch id).
    BatchApproved,
    /// A Batch's signature share was released (subject: the batch id).
    BatchShared,
    /// A signed Batch was released (subject: the batch id).
    BatchSigned,
    /// A request was refused (detail: the reason and why).
    Refused,
    /// A Batch Serai included was shown, its attestation verified (subject: the batch id).
    BatchIncluded,
    /// Every key pair was retired for a new sealing key (detail: how many).
    KeysRetired,
    /// Every key pair was sealed anew under another token's sealing key (detail: how many).
    KeysResealed,
    /// A lost share was repaired by its peers and sealed (subject: the set).
    KeyRepaired,
    /// A refresh's new shares were sealed, waiting for confirmation (subject: the set; detail:
    /// the attempt and the digest of the refreshed verification shares).
    KeyRefreshed,
    /// The refreshed shares replaced the old ones (subject: the set; detail: the epoch).
    RefreshConfirmed,
    /// The enclave's identity key was made and sealed.
    IdentityCreated,
}

impl Event {
    fn code(self) -> u8 {
        match self {
            Event::KeyGenerated => 1,
            Event::KeyConfirmed => 2,
            Event::PlansAcknowledged => 3,
            Event::PlanApproved => 4,
            Event::PlanShared => 5,
            Event::PlanSigned => 6,
            Event::BatchApproved => 7,
            Event::BatchShared => 8,
            Event::BatchSigned => 9,
            Event::Refused => 10,
            Event::BatchIncluded => 11,
            Event::KeysRetired => 12,
            Event::KeysResealed => 13,
            Event::KeyRepaired => 14,
            Event::KeyRefreshed => 15,
            Event::RefreshConfirmed => 16,
            Event::IdentityCreated => 17,
        }
    }

    fn from_code(code: u8) -> Option<Event> {
        Some(match code {
            1 => Event::KeyGenerated,
            2 => Event::KeyConfirmed,
            3 => Event::PlansAcknowledged,
            4 => Event::PlanApproved,
            5 => Event::PlanShared,
            6 => Event::PlanSigned,
            7 => Event::BatchApproved,
            8 => Event::BatchShared,
            9 => Event::BatchSigned,
            10 => Event::Refused,
            11 => Event::BatchIncluded,
            12 => Event::KeysRetired,
            13 => Event::KeysResealed,
            14 => Event::KeyRepaired,
            15 => Event::KeyRefreshed,
            16 => Event::RefreshConfirmed,
            17 => Event::IdentityCreated,
            _ => return None,
        })
    }

    /// How `audit` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Event::KeyGenerated => "key_generated",
            Event::KeyConfirmed => "key_confirmed",
            Event::PlansAcknowledged => "plans_acknowledged",
            Event::PlanApproved => "plan_approved",
            Event::PlanShared => "plan_shared",
            Event::PlanSigned => "plan_signed",
            Event::BatchApproved => "batch_approved",
            Event::BatchShared => "batch_shared",
            Event::BatchSigned => "batch_signed",
            Event::Refused => "refused",
            Event::BatchIncluded => "batch_included",
            Event::KeysRetired => "keys_retired",
            Event::KeysResealed => "keys_resealed",
            Event::KeyRepaired => "key_repaired",
            Event::KeyRefreshed => "key_refreshed",
            Event::RefreshConfirmed => "refresh_confirmed",
            Event::IdentityCreated => "identity_created",
        }
    }
}

/// One thing that happened, before it is numbered and chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What happened.
    pub event: Event,
    /// To what: a plan id, a batch id, a set, a Serai block (empty when unknown).
    pub subject: Vec<u8>,
    /// The signing attempt, or 0.
    pub attempt: u32,
    /// With which key (empty when none).
    pub key: Vec<u8>,
    /// Anything else: a refusal's reason, a transaction id.
    pub detail: String,
}

impl Entry {
    /// An entry without attempt, key or detail.
    pub fn new(event: Event, subject: impl Into<Vec<u8>>) -> Self {
        Entry {
            event,
            subject: subject.into(),
            attempt: 0,
            key: Vec::new(),
            detail: String::new(),
        }
    }
}

/// A numbered, timed entry in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its place in the chain, from 0.
    pub seq: u64,
    /// When (seconds since the epoch).
    pub time: u64,
    /// What.
    pub entry: Entry,
}

/// Where the chain ends: the last record's number and hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The next record's number.
    pub next: u64,
    /// The last record's hash (zeroes before any).
    pub hash: [u8; 32],
}

/// The chain does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AuditError {
    /// A record does not decode.
    #[error("record {0} is damaged")]
    Damaged(u64),
    /// A record is out of place: one was removed or inserted.
    #[error("record {found} where {expected} should be: records removed or inserted")]
    Gap {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// A record's hash is not its chain's: it, or one before it, was edited.
    #[error("record {0} does not chain: it or an earlier record was edited")]
    Edited(u64),
    /// The chain ends before the recorded head: records at its end were removed.
    #[error("the log ends at record {ends} but {next} records were written: truncated")]
    Truncated {
        /// Records present.
        ends: u64,
        /// Records written.
        next: u64,
    },
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.entry.subject.len() + self.entry.detail.len());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        out.push(self.entry.event.code());
        out.extend_from_slice(&self.entry.attempt.to_le_bytes());
        for field in [
            &self.entry.subject[..],
            &self.entry.key[..],
            self.entry.detail.as_bytes(),
        ] {
            let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(field.get(..usize::from(len)).unwrap_or(field));
        }
        out
    }

    /// Reads a record's bytes.
    ///
    /// # Errors
    /// They are not a record.
    pub fn decode(bytes: &[u8], seq_hint: u64) -> Result<Record, AuditError> {
        let damaged = || AuditError::Damaged(seq_hint);
        let (seq, rest) = bytes.split_first_chunk::<8>().ok_or_else(damaged)?;
        let (time, rest) = rest.split_first_chunk::<8>().ok_or_else(damaged)?;
        let (event, rest) = rest.split_first().ok_or_else(damaged)?;
        let (attempt, mut rest) = rest.split_first_chunk::<4>().ok_or_else(damaged)?;
        let mut field = || -> Result<Vec<u8>, AuditError> {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(damaged)?;
            let len = usize::from(u16::from_le_bytes(*len));
            let value = tail.get(..len).ok_or_else(damaged)?.to_vec();
            rest = tail.get(len..).ok_or_else(damaged)?;
            Ok(value)
        };
        let subject = field()?;
        let key = field()?;
        let detail = String::from_utf8(field()?).map_err(|_| damaged())?;
        if !rest.is_empty() {
            return Err(damaged());
        }
        Ok(Record {
            seq: u64::from_le_bytes(*seq),
            time: u64::from_le_bytes(*time),
            entry: Entry {
                event: Event::from_code(*event).ok_or_else(damaged)?,
                subject,
                attempt: u32::from_le_bytes(*attempt),
                key,
                detail,
            },
        })
    }

    /// This record's hash, after `previous`.
    pub fn hash(&self, previous: &[u8; 32]) -> [u8; 32] {
        let mut engine = sha256::Hash::engine();
        engine.input(DOMAIN);
        engine.input(previous);
        engine.input(&self.encode());
        sha256::Hash::from_engine(engine).to_byte_array()
    }
}

/// A stored record: its bytes and the hash stored with them.
pub type Stored = (Vec<u8>, [u8; 32]);

/// Verifies a chain of stored records (each its bytes and its stored hash, in order) against
/// the recorded head; returns the records.
///
/// # Errors
/// A record is damaged, missing, edited, or the chain ends before the head.
pub fn verify(
    stored: impl IntoIterator<Item = Stored>,
    head: Head,
) -> Result<Vec<Record>, AuditError> {
    let mut previous = [0u8; 32];
    let mut records = Vec::new();
    for (expected, (bytes, hash)) in (0u64..).zip(stored) {
        let record = Record::decode(&bytes, expected)?;
        if record.seq != expected {
            return Err(AuditError::Gap {
                expected,
                found: record.seq,
            });
        }
        if record.hash(&previous) != hash {
            return Err(AuditError::Edited(expected));
        }
        previous = hash;
        records.push(record);
    }
    let ends = u64::try_from(records.len()).unwrap_or(u64::MAX);
    if ends != head.next || previous != head.hash {
        return Err(AuditError::Truncated {
            ends,
            next: head.next,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn chain(count: u64) -> (Vec<Stored>, Head) {
        let mut previous = [0u8; 32];
        let mut stored = Vec::new();
        for seq in 0..count {
            let record = Record {
                seq,
                time: 1_700_000_000 + seq,
                entry: Entry {
                    event: Event::PlanApproved,
                    subject: vec![u8::try_from(seq).unwrap(); 32],
                    attempt: 2,
                    key: vec![7; 33],
                    detail: "fee rate 10".into(),
                },
            };
            let hash = record.hash(&previous);
            stored.push((record.encode(), hash));
            previous = hash;
        }
        (
            stored,
            Head {
                next: count,
                hash: previous,
            },
        )
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tampering_is_caught() {
        let (stored, head) = chain(5);
        assert_eq!(verify(stored.clone(), head).unwrap().len(), 5);

        // An edited field.
        let mut edited = stored.clone();
        let at = edited[2].0.len() - 1;
        edited[2].0[at] ^= 1;
        assert_eq!(verify(edited, head), Err(AuditError::Edited(2)));
        // An edited record with its hash recomputed: the next one no longer chains.
        let mut rewritten = stored.clone();
        let mut record = Record::decode(&rewritten[2].0, 2).unwrap();
        record.entry.detail = "fee rate 1000".into();
        rewritten[2] = (record.encode(), record.hash(&stored[1].1));
        assert_eq!(verify(rewritten, head), Err(AuditError::Edited(3)));
        // A record removed from the middle, and from the end.
        let mut removed = stored.clone();
        removed.remove(1);
        assert_eq!(
            verify(removed, head),
            Err(AuditError::Gap {
                expected: 1,
                found: 2
            })
        );
        let mut truncated = stored.clone();
        truncated.pop();
        assert_eq!(
            verify(truncated, head),
            Err(AuditError::Truncated { ends: 4, next: 5 })
        );
        // Damaged bytes.
        let mut damaged = stored;
        damaged[0].0.truncate(10);
        assert_eq!(verify(damaged, head), Err(AuditError::Damaged(0)));
    }
}
