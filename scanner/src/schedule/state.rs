//! The scheduler's state as bytes, for RocksDB: a small versioned format, written in full
//! after every change (one value per key) and read back exactly.
//!
//! Format, version 3 (integers little endian):
//!
//! ```text
//! u8 version | key (33) | u32 max_inputs | u32 max_outputs
//! u64 max_fee_rate | u16 max_fee_share_basis_points | i64 carried operating costs
//! u32 n, n outputs:  see below
//! u32 n, n payments: see below
//! u32 n, n groups:   u64 expected | u32 m, m payments
//! u32 n, n funded:   output | u32 m, m payments
//! u32 n, n claimed:  txid (32) | u32 vout
//! output: txid (32) | u32 vout | u8 kind (0 external, 1 branch, 2 change) | u64 amount
//! payment: u8 script length | script | u8 has data | (u16 length | data) | u64 amount
//! ```
//!
//! Versions 1 (without the caps, the carried costs, the funded branches and the claimed outputs)
//! and 2 (without the claimed outputs) are still read: the caps become the protocol's, and
//! nothing is carried, funded or claimed that the version does not hold.
//!
//! Reading checks every count against the bytes left before allocating, and every value's
//! domain, so a damaged database gives an error, never a panic or a huge allocation.

use std::collections::VecDeque;

use schema::{
    amount::Amount,
    hashes::TransactionId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, PlanInput},
    protocol::FeeCaps,
    transaction::FeeRate,
};
use thiserror::Error;

use crate::schedule::{BranchGroup, Carried, FundedBranch, Limits, Output, Scheduler};

const VERSION: u8 = 3;
const VERSION_2: u8 = 2;
const VERSION_1: u8 = 1;
/// Bytes of one encoded claimed output.
const CLAIMED_LEN: usize = 32 + 4;
/// Bytes of one encoded output.
const OUTPUT_LEN: usize = 32 + 4 + 1 + 8;
/// The fewest bytes one encoded payment takes (empty script, no data).
const MIN_PAYMENT_LEN: usize = 1 + 1 + 8;

/// The stored scheduler state is damaged or from an unknown version.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// A version this build does not read.
    #[error("unknown scheduler state version {0}")]
    UnknownVersion(u8),
    /// The bytes ended early.
    #[error("scheduler state truncated")]
    Truncated,
    /// A value outside its domain.
    #[error("scheduler state holds an invalid {0}")]
    Invalid(&'static str),
    /// Bytes after the state.
    #[error("{0} trailing bytes after the scheduler state")]
    TrailingBytes(usize),
}

/// The scheduler's state as bytes.
pub fn encode(scheduler: &Scheduler) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + scheduler.pool().len() * OUTPUT_LEN);
    out.push(VERSION);
    out.extend_from_slice(&scheduler.key().to_bytes());
    let limits = scheduler.limits();
    put_len(&mut out, limits.max_inputs);
    put_len(&mut out, limits.max_outputs);
    out.extend_from_slice(&limits.caps.max_fee_rate.0.to_le_bytes());
    out.extend_from_slice(&limits.caps.max_fee_share_basis_points.to_le_bytes());
    out.extend_from_slice(&scheduler.carried().0.to_le_bytes());
    put_len(&mut out, scheduler.pool().len());
    for output in scheduler.pool() {
        put_output(&mut out, output);
    }
    put_payments(&mut out, scheduler.queue().iter());
    put_len(&mut out, scheduler.branches().len());
    for group in scheduler.branches() {
        out.extend_from_slice(&group.expected.to_sat().to_le_bytes());
        put_payments(&mut out, group.payments.iter());
    }
    put_len(&mut out, scheduler.funded().len());
    for funded in scheduler.funded() {
        put_output(&mut out, &funded.output);
        put_payments(&mut out, funded.payments.iter());
    }
    put_len(&mut out, scheduler.claimed().len());
    for claimed in scheduler.claimed() {
        out.extend_from_slice(claimed.txid.as_bytes());
        out.extend_from_slice(&claimed.vout.to_le_bytes());
    }
    out
}

fn put_output(out: &mut Vec<u8>, output: &Output) {
    out.extend_from_slice(output.id.txid.as_bytes());
    out.extend_from_slice(&output.id.vout.to_le_bytes());
    out.push(match output.kind {
        OutputKind::External => 0,
        OutputKind::Branch => 1,
        OutputKind::Change => 2,
    });
    out.extend_from_slice(&output.amount.to_sat().to_le_bytes());
}

/// Reads a scheduler back.
///
/// # Errors
/// The bytes are not a state this build wrote.
pub fn decode(bytes: &[u8]) -> Result<Scheduler, StateError> {
    let mut reader = Reader(bytes);
    let version = reader.u8()?;
    if ![VERSION, VERSION_2, VERSION_1].contains(&version) {
        return Err(StateError::UnknownVersion(version));
    }
    let key = NetworkKey::from_slice(reader.take(33)?).map_err(|_| StateError::Invalid("key"))?;
    let max_inputs = reader.usize()?;
    let max_outputs = reader.usize()?;
    let (caps, carried) = if version == VERSION_1 {
        (FeeCaps::PROTOCOL, Carried::default())
    } else {
        let caps = FeeCaps {
            max_fee_rate: FeeRate(u64::from_le_bytes(reader.array()?)),
            max_fee_share_basis_points: u16::from_le_bytes(reader.array()?),
        };
        (caps, Carried(i64::from_le_bytes(reader.array()?)))
    };
    let limits = Limits {
        max_inputs,
        max_outputs,
        caps,
    };
    let count = reader.len(OUTPUT_LEN)?;
    let mut pool = Vec::with_capacity(count);
    for _ in 0..count {
        pool.push(read_output(&mut reader)?);
    }
    let queue = read_payments(&mut reader)?
        .into_iter()
        .collect::<VecDeque<_>>();
    let count = reader.len(8 + 4)?;
    let mut branches = Vec::with_capacity(count);
    for _ in 0..count {
        let expected = reader.amount()?;
        branches.push(BranchGroup {
            expected,
            payments: read_payments(&mut reader)?,
        });
    }
    let mut funded = Vec::new();
    if version != VERSION_1 {
        let count = reader.len(OUTPUT_LEN + 4)?;
        funded.reserve(count);
        for _ in 0..count {
            funded.push(FundedBranch {
                output: read_output(&mut reader)?,
                payments: read_payments(&mut reader)?,
            });
        }
    }
    let mut claimed = Vec::new();
    if version == VERSION {
        let count = reader.len(CLAIMED_LEN)?;
        claimed.reserve(count);
        for _ in 0..count {
            claimed.push(OutputId {
                txid: TransactionId(reader.array()?),
                vout: u32::from_le_bytes(reader.array()?),
            });
        }
    }
    if !reader.0.is_empty() {
        return Err(StateError::TrailingBytes(reader.0.len()));
    }
    Ok(
        Scheduler::from_parts(key, limits, pool, queue, branches, funded, carried)
            .claiming(claimed),
    )
}

/// Lengths in the state are counts of things held in memory, far below `u32::MAX`.
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_payments<'a>(out: &mut Vec<u8>, payments: impl ExactSizeIterator<Item = &'a Payment>) {
    put_len(out, payments.len());
    for payment in payments {
        let script = payment.address.script().as_bytes();
        // Payment scripts are standard address scripts: at most 42 bytes.
        out.push(u8::try_from(script.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(script);
        match &payment.data {
            Some(data) => {
                // Payment data is bounded by `MAX_DATA_LEN` (512) on the wire.
                out.push(1);
                out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_le_bytes());
                out.extend_from_slice(data);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&payment.amount.to_sat().to_le_bytes());
    }
}

fn read_output(reader: &mut Reader<'_>) -> Result<Output, StateError> {
    let txid = TransactionId::from_slice(reader.take(32)?).map_err(|_| StateError::Truncated)?;
    let vout = reader.u32()?;
    let kind = match reader.u8()? {
        0 => OutputKind::External,
        1 => OutputKind::Branch,
        2 => OutputKind::Change,
        _ => return Err(StateError::Invalid("output kind")),
    };
    Ok(PlanInput {
        id: OutputId { txid, vout },
        kind,
        amount: reader.amount()?,
    })
}

fn read_payments(reader: &mut Reader<'_>) -> Result<Vec<Payment>, StateError> {
    let count = reader.len(MIN_PAYMENT_LEN)?;
    let mut payments = Vec::with_capacity(count);
    for _ in 0..count {
        let script_len = usize::from(reader.u8()?);
        let address = PaymentAddress::from_bytes(reader.take(script_len)?)
            .map_err(|_| StateError::Invalid("payment address"))?;
        let data = match reader.u8()? {
            0 => None,
            1 => {
                let len = usize::from(u16::from_le_bytes(reader.array()?));
                Some(reader.take(len)?.to_vec())
            }
            _ => return Err(StateError::Invalid("payment data flag")),
        };
        payments.push(Payment {
            address,
            data,
            amount: reader.amount()?,
        });
    }
    Ok(payments)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < len {
            return Err(StateError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        self.take(N)?.try_into().map_err(|_| StateError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn usize(&mut self) -> Result<usize, StateError> {
        usize::try_from(self.u32()?).map_err(|_| StateError::Invalid("length"))
    }

    fn amount(&mut self) -> Result<Amount, StateError> {
        Amount::from_sat(u64::from_le_bytes(self.array()?))
            .map_err(|_| StateError::Invalid("amount"))
    }

    /// A count of items of at least `item_len` bytes each, refused if the bytes left cannot
    /// hold that many.
    fn len(&mut self, item_len: usize) -> Result<usize, StateError> {
        let count = self.usize()?;
        if count.saturating_mul(item_len.max(1)) > self.0.len() {
            return Err(StateError::Truncated);
        }
        Ok(count)
    }
}
