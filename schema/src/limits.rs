//! Every bound a decoder enforces, in one place, with the reason for its value.
//!
//! An encoder refuses to produce what a decoder would refuse to read, so a value that
//! encodes is a value every peer accepts. Bounds that follow from one another are derived
//! here from the protocol parameters (`protocol`) and from what the Serai chain can emit, and
//! the compile-time assertions at the bottom tie them together: the largest plan the scheduler
//! makes fits every blob and message its signing causes, and the largest Serai block fits one
//! message.

use crate::protocol::{MAX_INPUTS, MAX_KEY_SHARES, MAX_OUTPUTS};

/// Largest encoded message a decoder reads. The largest legitimate messages are signing rounds
/// of `MAX_PARTICIPANTS` blobs of `MAX_BLOB_LEN` bytes (5.2 MB) and a Serai block with
/// `MAX_BURNS` burns of the longest address and data (5.6 MB); 8 MiB leaves room for Cap'n
/// Proto's framing (asserted below).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Cap'n Proto traversal limit, in 8-byte words. A message without amplification (the same
/// pointer read twice) traverses at most its own size; twice that leaves room for a reader
/// that reads a field more than once.
pub const TRAVERSAL_LIMIT_WORDS: usize = 2 * MAX_MESSAGE_BYTES / 8;

/// Cap'n Proto nesting limit. The deepest path in the schema (envelope, message, group,
/// Serai block, burn list, burn, data union) is 8 levels.
pub const NESTING_LIMIT: i32 = 16;

/// Most key shares in a validator set, so the most entries in a participant map.
pub const MAX_PARTICIPANTS: usize = MAX_KEY_SHARES as usize;

/// Bytes of one input's FROST preprocess in a plan's preprocess blob: two 33-byte nonce
/// commitments (modular-frost's Schnorr over secp256k1; the enclave's tests check the number).
pub const PREPROCESS_BYTES_PER_INPUT: usize = 66;

/// Bytes of one input's FROST signature share in a plan's share blob: one scalar.
pub const SHARE_BYTES_PER_INPUT: usize = 32;

/// The largest key generation blob: both keys' PedPoP commitments for a threshold of
/// `MAX_PARTICIPANTS` (about 10 KB; the enclave's tests check the largest set fits) or one
/// participant's encrypted shares.
pub const MAX_KEY_GEN_BLOB_LEN: usize = 16 * 1024;

/// Bytes of one point of each key: a Ristretto point (32) and a compressed secp256k1 point
/// (33). Repairs and refreshes carry both keys' points side by side.
pub const KEY_POINTS_BYTES: usize = 32 + 33;

/// Bytes of one scalar of each key (32 and 32): a masked value of a repair or refresh.
pub const KEY_SCALARS_BYTES: usize = 32 + 32;

/// A helper's answer to a repaired participant: both masked sums, the participant count
/// (u16) and both keys' verification shares of every participant.
pub const REPAIR_ANSWER_LEN: usize = KEY_SCALARS_BYTES + 2 + MAX_PARTICIPANTS * KEY_POINTS_BYTES;

/// One participant's refresh deal for another: both masked values, the commitment count (u16)
/// and both keys' commitments to the `t - 1` coefficients of its polynomial.
pub const REFRESH_DEAL_LEN: usize =
    KEY_SCALARS_BYTES + 2 + (MAX_PARTICIPANTS - 1) * KEY_POINTS_BYTES;

/// Largest opaque protocol blob (a DKG commitment or share, a signing preprocess or share, a
/// blame proof): a key generation blob, or the preprocess of a plan of `MAX_INPUTS` inputs,
/// whichever is larger.
pub const MAX_BLOB_LEN: usize = max(
    MAX_KEY_GEN_BLOB_LEN,
    PREPROCESS_BYTES_PER_INPUT * MAX_INPUTS,
);

/// The Serai chain's block length (`serai_primitives::BLOCK_SIZE`, 1 MiB) available to normal
/// transactions such as burns (`NORMAL_DISPATCH_RATIO`, 75%).
pub const SERAI_BLOCK_NORMAL_BYTES: usize = 1024 * 1024 / 4 * 3;

/// A lower bound on the encoded size of one burn on the Serai chain: a signed transaction's
/// signer (32) and sr25519 signature (64), the call's pallet and call index (2), and the
/// shortest `OutInstructionWithBalance` (empty address 1, no data 1, coin 1, amount 8).
pub const MIN_SERAI_BURN_BYTES: usize = 32 + 64 + 2 + 1 + 1 + 1 + 8;

/// Most burns in one Serai block: as many as the block can hold, so that no Serai block is
/// ever refused as malformed (its burns would never be paid).
pub const MAX_BURNS: usize = SERAI_BLOCK_NORMAL_BYTES / MIN_SERAI_BURN_BYTES;

/// Longest address in a burn: Serai's `MAX_ADDRESS_LEN`, so that every burn the chain accepts
/// decodes here (one the scanner cannot pay is reported and dropped, not the whole block).
pub const MAX_ADDRESS_LEN: usize = 196;

/// Longest instruction data carried by a burn or a payment (Serai's `MAX_DATA_LEN`).
pub const MAX_DATA_LEN: usize = 512;

/// Longest output script a payment may pay: a version-16 witness program of 40 bytes plus
/// its two-byte header. Every standard address type fits.
pub const MAX_SCRIPT_LEN: usize = 42;

/// Most plan ids in one `SubstrateBlockAck` or `PlansAcknowledged`: the replacements of stuck
/// plans and the scheduler's new plans of one Serai block together.
pub const MAX_PLANS_PER_BLOCK: usize = 4096;

/// Most replacements of stuck plans proposed for one Serai block; more stuck plans wait for the
/// next block, still counted as stuck.
pub const MAX_REPLACEMENTS_PER_BLOCK: usize = 256;

/// Most new plans the scheduler makes for one Serai block (more outputs wait for the next):
/// what `MAX_PLANS_PER_BLOCK` leaves after the replacements.
pub const MAX_SCHEDULED_PER_BLOCK: usize = MAX_PLANS_PER_BLOCK - MAX_REPLACEMENTS_PER_BLOCK;

/// Most inputs in a plan: the scheduler's limit, so the enclave never decodes a plan it could
/// not sign.
pub const MAX_PLAN_INPUTS: usize = MAX_INPUTS;

/// Most payments in a plan: every output may be a payment when there is no change.
pub const MAX_PLAN_PAYMENTS: usize = MAX_OUTPUTS;

/// Serai's bound on a Batch, encoded as the chain encodes it (`MAX_BATCH_SIZE`, SCALE): a
/// larger Batch is refused by the chain.
pub const SERAI_MAX_BATCH_BYTES: usize = 25_000;

/// Most InInstructions in one Batch. On Serai a Batch is a network (1), an id (4), a block hash
/// (32) and a compact length (4 at most) followed by, per transfer, the instruction (kind 1,
/// account 32) and balance (coin 1, amount 8): 41 + 42 per instruction must stay within
/// `SERAI_MAX_BATCH_BYTES`. A block with more deposits is reported in several Batches.
pub const MAX_BATCH_INSTRUCTIONS: usize = (SERAI_MAX_BATCH_BYTES - 41) / 42;

/// Largest InInstruction in a deposit's `OP_RETURN`: Bitcoin Core's standard `OP_RETURN`
/// payload (`MAX_OP_RETURN_RELAY` of 83 bytes less the opcode and push prefix).
pub const MAX_IN_INSTRUCTION_LEN: usize = 80;

/// Largest Bitcoin amount, in satoshis: 21 million coins.
pub const MAX_MONEY_SATS: u64 = 21_000_000 * 100_000_000;

/// Cap'n Proto framing of one participant map entry (a struct pointer, the participant, the
/// data pointer, word padding), generously.
const PARTICIPANT_ENTRY_OVERHEAD: usize = 64;

/// Cap'n Proto framing of one burn (struct, two data pointers, the data union, padding),
/// generously.
const BURN_OVERHEAD: usize = 64;

/// Room for a message's own header, envelope and ids.
const MESSAGE_OVERHEAD: usize = 4096;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

// A plan of the most inputs has a preprocess and a share blob within `MAX_BLOB_LEN`.
const _: () = assert!(PREPROCESS_BYTES_PER_INPUT * MAX_PLAN_INPUTS <= MAX_BLOB_LEN);
const _: () = assert!(SHARE_BYTES_PER_INPUT * MAX_PLAN_INPUTS <= MAX_BLOB_LEN);
// The largest set's repair answer and refresh deal fit one blob.
const _: () = assert!(REPAIR_ANSWER_LEN <= MAX_BLOB_LEN);
const _: () = assert!(REFRESH_DEAL_LEN <= MAX_BLOB_LEN);
// A signing round of every participant's largest blob fits one message.
const _: () = assert!(
    MAX_PARTICIPANTS * (MAX_BLOB_LEN + PARTICIPANT_ENTRY_OVERHEAD) + MESSAGE_OVERHEAD
        <= MAX_MESSAGE_BYTES
);
// The fullest Serai block, every burn with the longest address and data, fits one message.
const _: () = assert!(
    MAX_BURNS * (MAX_ADDRESS_LEN + MAX_DATA_LEN + 8 + BURN_OVERHEAD) + MESSAGE_OVERHEAD
        <= MAX_MESSAGE_BYTES
);
// The scheduler's plans fit the plan limits: payments and change within the outputs.
const _: () = assert!(MAX_PLAN_PAYMENTS >= MAX_OUTPUTS && MAX_PLAN_INPUTS >= MAX_INPUTS);
// A full Batch stays within Serai's bound.
const _: () = assert!(41 + 42 * MAX_BATCH_INSTRUCTIONS <= SERAI_MAX_BATCH_BYTES);
