//! Bitcoin as a `Network`, through Bitcoin Core's RPC: blocks decoded with the `bitcoin` crate
//! into the chain-neutral form, our outputs recognized by the Taproot scripts `schema` derives
//! for each key, and a deposit's data taken from its first `OP_RETURN` output.

use std::{
    sync::mpsc::{sync_channel, Receiver, SyncSender},
    thread,
};

use bitcoin::{
    blockdata::script::Instruction, consensus, hashes::Hash, Block, Script, Transaction, Txid,
};
use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    plan::Plan,
    plan::{OutputId, OutputKind},
    protocol::MAX_FEE_RATE,
    taproot::KeyScripts,
    transaction::{build, Built, FeeRate},
};

use crate::{
    chain::rpc::{CoreRpc, RawBlock, RpcError, RPC_INVALID_PARAMETER},
    chain::{
        BlockView, ChainOutput, ChainTransaction, Network, NetworkError, OutputRef, OutputTyping,
        TransactionView,
    },
    scan::eventuality::{Eventuality, Outcome},
};

/// Bitcoin, through a Core node.
#[derive(Clone)]
pub struct BitcoinCore {
    rpc: CoreRpc,
    /// The confirmation target asked of `estimatesmartfee`.
    fee_target: u16,
}

impl BitcoinCore {
    /// Bitcoin through `rpc`.
    pub fn new(rpc: CoreRpc) -> Self {
        BitcoinCore { rpc, fee_target: 6 }
    }

    /// The RPC client.
    pub fn rpc(&self) -> &CoreRpc {
        &self.rpc
    }
}

fn node(error: RpcError) -> NetworkError {
    NetworkError::Node(error.to_string())
}

/// The data pushed by an `OP_RETURN` script: every push after the opcode, concatenated. `None`
/// for any other script, or one with a non-push after `OP_RETURN`.
pub fn op_return_payload(script: &Script) -> Option<Vec<u8>> {
    if !script.is_op_return() {
        return None;
    }
    let mut payload = Vec::new();
    for instruction in script.instructions().skip(1) {
        match instruction.ok()? {
            Instruction::PushBytes(bytes) => payload.extend_from_slice(bytes.as_bytes()),
            Instruction::Op(_) => return None,
        }
    }
    Some(payload)
}

fn transaction_id(txid: Txid) -> TransactionId {
    TransactionId(txid.to_byte_array())
}

/// A transaction in the owned, chain-neutral form.
///
/// # Errors
/// An output is worth more than 21M BTC.
pub fn chain_transaction(transaction: &Transaction) -> Result<ChainTransaction, NetworkError> {
    let outputs = transaction
        .outputs()
        .map(|output| {
            Ok(ChainOutput {
                script: output.script.to_vec(),
                amount: Amount::from_sat(output.value)
                    .map_err(|error| NetworkError::Invalid(error.to_string()))?,
            })
        })
        .collect::<Result<_, NetworkError>>()?;
    Ok(ChainTransaction {
        id: transaction.id(),
        inputs: transaction.spends().collect(),
        outputs,
        data: transaction.data(),
    })
}

/// A block of Bitcoin as it was decoded, read through `BlockView` without copying: the
/// scanner touches every output script in place and hashes only the transactions that matter.
#[derive(Clone, Debug)]
pub struct BitcoinBlock {
    height: u64,
    hash: [u8; 32],
    block: Block,
}

impl BitcoinBlock {
    /// `block`, at `height`.
    pub fn new(height: u64, block: Block) -> Self {
        BitcoinBlock {
            height,
            hash: block.block_hash().to_byte_array(),
            block,
        }
    }
}

impl BlockView for BitcoinBlock {
    type Transaction = Transaction;

    fn height(&self) -> u64 {
        self.height
    }

    fn hash(&self) -> [u8; 32] {
        self.hash
    }

    fn parent(&self) -> [u8; 32] {
        self.block.header.prev_blockhash.to_byte_array()
    }

    fn time(&self) -> u64 {
        u64::from(self.block.header.time)
    }

    fn transactions(&self) -> &[Transaction] {
        &self.block.txdata
    }
}

impl TransactionView for Transaction {
    fn id(&self) -> TransactionId {
        transaction_id(self.compute_txid())
    }

    fn spends(&self) -> impl Iterator<Item = OutputId> + '_ {
        // A coinbase's one input spends nothing.
        let spent = if self.is_coinbase() {
            &[][..]
        } else {
            &self.input[..]
        };
        spent.iter().map(|input| OutputId {
            txid: transaction_id(input.previous_output.txid),
            vout: input.previous_output.vout,
        })
    }

    fn outputs(&self) -> impl Iterator<Item = OutputRef<'_>> + '_ {
        self.output.iter().map(|output| OutputRef {
            script: output.script_pubkey.as_bytes(),
            value: output.value.to_sat(),
        })
    }

    fn data(&self) -> Option<Vec<u8>> {
        self.output
            .iter()
            .find(|output| output.script_pubkey.is_op_return())
            .and_then(|output| op_return_payload(&output.script_pubkey))
    }

    fn to_chain(&self) -> Result<ChainTransaction, NetworkError> {
        chain_transaction(self)
    }
}

/// The eventuality of a plan: the transaction `schema`'s builder makes of it (inputs and
/// outputs, which signing does not change).
///
/// # Errors
/// The plan yields no transaction, or holds an impossible amount.
pub fn eventuality_of(plan: &Plan) -> Result<Eventuality, NetworkError> {
    let built = match build(plan) {
        Ok(Built::Transaction(built)) => built,
        Ok(Built::NoTransaction { .. }) => {
            return Err(NetworkError::Invalid(
                "the plan yields no transaction".into(),
            ))
        }
        Err(error) => return Err(NetworkError::Invalid(error.to_string())),
    };
    let expected = chain_transaction(&built.transaction)?;
    Ok(Eventuality {
        plan: plan.id(),
        key: plan.key,
        inputs: expected.inputs,
        outputs: expected.outputs,
        replacements: Vec::new(),
    })
}

/// The member of `original`'s family whose transaction `transaction` is, if any: the original,
/// or its replacement at some fee rate. A replacement is `original.replaced_at(rate)` whoever
/// made it, so membership needs no list of the members a node happened to register: the rate
/// is found from what the outputs sum to (a higher rate leaves strictly less), then the whole
/// transaction is compared. Every validator answers alike from the plan and the transaction.
///
/// # Errors
/// The original does not build (every plan made does).
pub fn family_member(
    original: &Plan,
    transaction: &ChainTransaction,
) -> Result<Option<PlanId>, NetworkError> {
    let paid: u64 = transaction
        .outputs
        .iter()
        .map(|output| output.amount.to_sat())
        .sum();
    let member_at = |rate: u64| {
        if rate == original.fee_rate.0 {
            original.clone()
        } else {
            original.replaced_at(FeeRate(rate))
        }
    };
    let built_at = |rate: u64| match build(&member_at(rate)) {
        Ok(Built::Transaction(built)) => Ok(Some(built)),
        Ok(Built::NoTransaction { .. }) => Ok(None),
        Err(error) => Err(NetworkError::Invalid(error.to_string())),
    };
    let Some(stuck) = built_at(original.fee_rate.0)? else {
        return Ok(None);
    };
    // What a member at `rate` pays out; `None` above the rates a member can have (one that
    // drops a payment), where the search goes lower.
    let sum_at = |rate: u64| -> Result<Option<u64>, NetworkError> {
        Ok(built_at(rate)?
            .filter(|built| built.pays_as(&stuck))
            .map(|built| {
                built
                    .transaction
                    .output
                    .iter()
                    .map(|output| output.value.to_sat())
                    .sum()
            }))
    };
    let (mut low, mut high) = (original.fee_rate.0, MAX_FEE_RATE.0);
    while low < high {
        let middle = low + (high - low) / 2;
        match sum_at(middle)? {
            Some(sum) if sum > paid => low = middle + 1,
            _ => high = middle,
        }
    }
    let member = member_at(low);
    if sum_at(low)? != Some(paid) {
        return Ok(None);
    }
    Ok(match eventuality_of(&member)?.check(transaction) {
        Some(Outcome::Completed { .. }) => Some(member.id()),
        _ => None,
    })
}

impl OutputTyping for KeyScripts {
    fn kind_of(&self, script: &[u8]) -> Option<OutputKind> {
        KeyScripts::kind_of(self, Script::from_bytes(script))
    }

    fn script(&self, kind: OutputKind) -> Vec<u8> {
        KeyScripts::script(self, kind).to_bytes()
    }
}

/// A block as fetched from Core, not yet decoded.
struct Fetched {
    height: u64,
    hash: bitcoin::BlockHash,
    raw: RawBlock,
}

impl Fetched {
    fn decode(self) -> Result<BitcoinBlock, NetworkError> {
        let block = CoreRpc::decode_block(&self.hash, &self.raw).map_err(node)?;
        Ok(BitcoinBlock::new(self.height, block))
    }
}

impl BitcoinCore {
    /// The active chain's block at `height`, as Core sends it.
    fn fetch(&self, height: u64) -> Result<Fetched, NetworkError> {
        let hash = self.rpc.block_hash(height).map_err(|error| match error {
            RpcError::Core { code, .. } if code == RPC_INVALID_PARAMETER => {
                NetworkError::NoBlock(height)
            }
            other => node(other),
        })?;
        let raw = self.rpc.raw_block(&hash).map_err(node)?;
        Ok(Fetched { height, hash, raw })
    }
}

/// Blocks held between the stages of catching up: fetched and waiting to be decoded, and
/// decoded and waiting to be scanned (each a few times its size in memory).
pub const FETCH_AHEAD: usize = 4;

/// A range of blocks fetched on a thread of its own and decoded on another, each up to
/// `FETCH_AHEAD` blocks ahead of the next stage: fetching (the node's work and the transfer),
/// decoding, and the caller's scanning and synced commit overlap, so that catching up runs at
/// the speed of the slowest of them (the node) rather than at their sum. Each thread stops at
/// the range's end, at the first error (passed on, in order), or when the stage after it is
/// gone (the caller dropped the iterator).
struct FetchAhead {
    blocks: Receiver<Result<BitcoinBlock, NetworkError>>,
    /// The height of the next block.
    next: u64,
    /// The blocks of the range not taken yet.
    left: u64,
}

/// Runs `stage` on a thread named `name`; if no thread can be started, `failed` says why.
fn spawn_stage<T: Send + 'static>(
    name: &str,
    failed: &SyncSender<Result<T, NetworkError>>,
    stage: impl FnOnce() + Send + 'static,
) {
    if let Err(error) = thread::Builder::new().name(name.into()).spawn(stage) {
        // The caller sees why, and tries again on its next tick.
        let _ = failed.send(Err(NetworkError::Node(format!(
            "cannot start the {name} thread: {error}"
        ))));
    }
}

impl FetchAhead {
    fn start(core: BitcoinCore, from: u64, to: u64) -> Self {
        let (fetched_sender, fetched) = sync_channel(FETCH_AHEAD);
        let (decoded_sender, blocks) = sync_channel(FETCH_AHEAD);
        spawn_stage("block-fetch", &fetched_sender.clone(), move || {
            for height in from..=to {
                let block = core.fetch(height);
                let failed = block.is_err();
                if fetched_sender.send(block).is_err() || failed {
                    return;
                }
            }
        });
        spawn_stage("block-decode", &decoded_sender.clone(), move || {
            for block in fetched {
                let block = block.and_then(Fetched::decode);
                let failed = block.is_err();
                if decoded_sender.send(block).is_err() || failed {
                    return;
                }
            }
        });
        FetchAhead {
            blocks,
            next: from,
            left: if from > to {
                0
            } else {
                (to - from).saturating_add(1)
            },
        }
    }
}

impl Iterator for FetchAhead {
    type Item = Result<BitcoinBlock, NetworkError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let height = self.next;
        self.next = height.saturating_add(1);
        let block = self.blocks.recv().unwrap_or_else(|_| {
            // The threads stopped without saying why (each passes its error on first).
            Err(NetworkError::Node(format!(
                "block fetching stopped before height {height}"
            )))
        });
        if block.is_err() {
            // The threads stop at an error: nothing follows it.
            self.left = 0;
        }
        Some(block)
    }
}

impl Network for BitcoinCore {
    type Typing = KeyScripts;
    type Block = BitcoinBlock;

    fn latest_height(&self) -> Result<u64, NetworkError> {
        self.rpc.block_count().map_err(node)
    }

    fn block(&self, height: u64) -> Result<BitcoinBlock, NetworkError> {
        self.fetch(height)?.decode()
    }

    fn blocks(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<BitcoinBlock, NetworkError>> + 'static {
        FetchAhead::start(self.clone(), from, to)
    }

    fn height_of(&self, hash: [u8; 32]) -> Result<Option<u64>, NetworkError> {
        self.rpc
            .header_height(&bitcoin::BlockHash::from_byte_array(hash))
            .map_err(node)
    }

    fn typing(&self, key: &NetworkKey) -> Result<KeyScripts, NetworkError> {
        KeyScripts::derive(key).map_err(|error| NetworkError::Invalid(error.to_string()))
    }

    fn fee_rate_of(&self, block: [u8; 32]) -> Result<Option<FeeRate>, NetworkError> {
        Ok(self
            .rpc
            .block_median_fee_rate(&bitcoin::BlockHash::from_byte_array(block))
            .map_err(node)?
            .map(FeeRate))
    }

    fn fee_rate(&self) -> Result<Option<FeeRate>, NetworkError> {
        Ok(self
            .rpc
            .estimate_smart_fee(self.fee_target)
            .map_err(node)?
            .map(FeeRate))
    }

    fn publish(&self, transaction: &[u8]) -> Result<(), NetworkError> {
        let transaction: Transaction = consensus::deserialize(transaction)
            .map_err(|error| NetworkError::Invalid(error.to_string()))?;
        self.rpc
            .send_raw_transaction(&transaction)
            .map_err(|error| match error {
                RpcError::Core { message, .. } => NetworkError::Refused(message),
                other => node(other),
            })
    }

    fn transaction(&self, id: &TransactionId) -> Result<Option<Vec<u8>>, NetworkError> {
        Ok(self
            .rpc
            .raw_transaction(&Txid::from_byte_array(id.0))
            .map_err(node)?
            .map(|transaction| consensus::serialize(&transaction)))
    }
}
