//! Every bound a decoder enforces, in one place, with the reason for its value.
//!
//! An encoder refuses to produce what a decoder would refuse to read, so a value that
//! encodes is a value every peer accepts.

/// Largest encoded message a decoder reads. The largest legitimate messages are signing rounds
/// of `MAX_PARTICIPANTS` blobs of `MAX_BLOB_LEN` bytes (2.4 MiB) and a Serai block with
/// `MAX_BURNS` burns (under 3 MiB); 8 MiB leaves room for Cap'n Proto's framing.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Cap'n Proto traversal limit, in 8-byte words. A message without amplification (the same
/// pointer read twice) traverses at most its own size; twice that leaves room for a reader
/// that reads a field more than once.
pub const TRAVERSAL_LIMIT_WORDS: usize = 2 * MAX_MESSAGE_BYTES / 8;

/// Cap'n Proto nesting limit. The deepest path in the schema (envelope, message, group,
/// Serai block, burn list, burn, data union) is 8 levels.
pub const NESTING_LIMIT: i32 = 16;

/// Most key shares in a validator set (Serai's `MAX_KEY_SHARES_PER_SET`), so the most entries in
/// a participant map.
pub const MAX_PARTICIPANTS: usize = 150;

/// Largest opaque protocol blob (a DKG commitment or share, a signing preprocess or share, a
/// blame proof). A plan's preprocess carries two 33-byte nonce commitments per input, so
/// `MAX_PLAN_INPUTS` inputs fit with room to spare.
pub const MAX_BLOB_LEN: usize = 16 * 1024;

/// Most burns in one Serai block the processor accepts.
pub const MAX_BURNS: usize = 4096;

/// Longest address string in a burn. Bech32 addresses are at most 90 characters; base58 ones
/// are shorter.
pub const MAX_ADDRESS_LEN: usize = 128;

/// Longest instruction data carried by a burn or a payment (Serai's `MAX_DATA_LEN`).
pub const MAX_DATA_LEN: usize = 512;

/// Longest output script a payment may pay: a version-16 witness program of 40 bytes plus
/// its two-byte header. Every standard address type fits.
pub const MAX_SCRIPT_LEN: usize = 42;

/// Most plan ids in one `SubstrateBlockAck` or `PlansAcknowledged`.
pub const MAX_PLANS_PER_BLOCK: usize = 4096;

/// Most inputs in a plan. Bitcoin's standard weight (400,000 WU) fits about 6,000 key-path
/// inputs; the scheduler's own limit is far lower, so this only bounds decoding.
pub const MAX_PLAN_INPUTS: usize = 1024;

/// Most payments in a plan, for the same reason as `MAX_PLAN_INPUTS`.
pub const MAX_PLAN_PAYMENTS: usize = 1024;

/// Most InInstructions in one Batch. A block with more deposits is reported in several
/// Batches.
pub const MAX_BATCH_INSTRUCTIONS: usize = 4096;

/// Largest InInstruction in a deposit's `OP_RETURN`: Bitcoin Core's standard `OP_RETURN`
/// payload (`MAX_OP_RETURN_RELAY` of 83 bytes less the opcode and push prefix).
pub const MAX_IN_INSTRUCTION_LEN: usize = 80;

/// Largest Bitcoin amount, in satoshis: 21 million coins.
pub const MAX_MONEY_SATS: u64 = 21_000_000 * 100_000_000;
