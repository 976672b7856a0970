//! The conformance suite every `Network` implementation must pass, against a real node of its
//! chain: heights and parent links, blocks past the tip, typing of payments to each kind of a
//! key's address (and not to others), deposit data, publishing (twice), fee estimates.

use scanner::chain::{BlockView, Network, NetworkError, OutputTyping, TransactionView};
use schema::{hashes::TransactionId, keys::NetworkKey, plan::OutputKind, transaction::FeeRate};

use crate::HarnessError;

/// What the suite needs of a test chain, besides the implementation under test.
pub trait ChainDriver {
    /// Mines `count` blocks.
    ///
    /// # Errors
    /// The node refused.
    fn mine(&self, count: u32) -> Result<(), HarnessError>;

    /// A signed transaction paying `amount` to `script` with `data` attached, not yet
    /// published: its consensus bytes and id.
    ///
    /// # Errors
    /// The driver has no funds or cannot build it.
    fn payment(
        &self,
        script: &[u8],
        amount: u64,
        data: Option<&[u8]>,
    ) -> Result<(Vec<u8>, TransactionId), HarnessError>;

    /// Makes the node's fee estimate `rate` (sat/vB).
    ///
    /// # Errors
    /// The node refused.
    fn set_fee_rate(&self, rate: u64) -> Result<(), HarnessError>;
}

fn check(condition: bool, what: &str) -> Result<(), HarnessError> {
    if condition {
        Ok(())
    } else {
        Err(HarnessError::Failed(format!("conformance: {what}")))
    }
}

fn failed(error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Failed(format!("conformance: {error}"))
}

/// Runs the suite. `key` and `other` are two distinct keys.
///
/// # Errors
/// The first check that failed.
pub fn check_network<N: Network>(
    network: &N,
    driver: &impl ChainDriver,
    key: &NetworkKey,
    other: &NetworkKey,
) -> Result<(), HarnessError> {
    // Heights and parent links.
    let start = network.latest_height().map_err(failed)?;
    driver.mine(3)?;
    let latest = network.latest_height().map_err(failed)?;
    check(latest == start + 3, "the height follows mined blocks")?;
    for height in start + 1..=latest {
        let block = network.block(height).map_err(failed)?;
        let parent = network.block(height - 1).map_err(failed)?;
        check(block.height() == height, "a block knows its height")?;
        check(
            block.parent() == parent.hash(),
            "each block's parent is the block below",
        )?;
        check(!block.transactions().is_empty(), "a block has its coinbase")?;
    }
    check(
        matches!(network.block(latest + 1), Err(NetworkError::NoBlock(_))),
        "a block past the tip is NoBlock",
    )?;
    // A range read one block after another (catching up): the same blocks in order, and one
    // running past the tip ends there with NoBlock.
    let expected: Vec<[u8; 32]> = (start + 1..=latest)
        .map(|height| network.block(height).map(|block| block.hash()))
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    let ranged: Vec<(u64, [u8; 32])> = network
        .blocks(start + 1, latest)
        .map(|block| block.map(|block| (block.height(), block.hash())))
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    check(
        ranged
            == (start + 1..=latest)
                .zip(expected)
                .collect::<Vec<(u64, [u8; 32])>>(),
        "a range of blocks is the blocks at its heights, in order",
    )?;
    check(
        network.blocks(latest + 1, latest).next().is_none(),
        "an empty range has no blocks",
    )?;
    let mut past = network.blocks(latest, latest + 2);
    check(
        past.next()
            .is_some_and(|block| block.is_ok_and(|block| block.height() == latest)),
        "a range past the tip starts with the blocks it has",
    )?;
    check(
        matches!(past.next(), Some(Err(NetworkError::NoBlock(_)))),
        "a range past the tip ends with NoBlock",
    )?;
    check(past.next().is_none(), "nothing follows a range's error")?;

    // Typing: each kind of our addresses, and nothing of another key's.
    let ours = network.typing(key).map_err(failed)?;
    let theirs = network.typing(other).map_err(failed)?;
    let kinds = [OutputKind::External, OutputKind::Branch, OutputKind::Change];
    for kind in kinds {
        let script = ours.script(kind);
        check(
            ours.kind_of(&script) == Some(kind),
            "our script is typed as its kind",
        )?;
        check(
            theirs.kind_of(&script).is_none(),
            "another key does not claim our script",
        )?;
        for other_kind in kinds.into_iter().filter(|k| *k != kind) {
            check(
                script != ours.script(other_kind),
                "each kind has its own script",
            )?;
        }
    }

    // A payment with data, published (twice) and mined: found in a block with its data.
    let data = b"conformance data";
    let (payment, id) = driver.payment(&ours.script(OutputKind::External), 50_000, Some(data))?;
    network.publish(&payment).map_err(failed)?;
    network.publish(&payment).map_err(failed)?;
    check(
        network.transaction(&id).map_err(failed)?.as_deref() == Some(payment.as_slice()),
        "a published transaction is known to the node",
    )?;
    driver.mine(1)?;
    let block = network
        .block(network.latest_height().map_err(failed)?)
        .map_err(failed)?;
    let found = block
        .transactions()
        .iter()
        .find(|transaction| transaction.id() == id)
        .ok_or_else(|| failed("the payment is in the next block"))?;
    let owned = found.to_chain().map_err(failed)?;
    check(
        owned.id == id
            && owned.inputs == found.spends().collect::<Vec<_>>()
            && owned.data == found.data()
            && owned
                .outputs
                .iter()
                .map(|output| (output.script.as_slice(), output.amount.to_sat()))
                .eq(found.outputs().map(|output| (output.script, output.value))),
        "the block's view of a transaction and its owned form agree",
    )?;
    check(
        found.data().as_deref() == Some(&data[..]),
        "the payment's data is read",
    )?;
    check(
        found.outputs().any(|output| {
            ours.kind_of(output.script) == Some(OutputKind::External) && output.value == 50_000
        }),
        "the payment's output is ours, with its amount",
    )?;
    check(
        found.spends().next().is_some(),
        "a payment names what it spends",
    )?;
    check(
        network
            .fee_rate_of(block.hash())
            .map_err(failed)?
            .is_some_and(|rate| rate.0 > 0),
        "a block with a paying transaction has a median fee rate",
    )?;
    driver.mine(1)?;
    let empty = network
        .block(network.latest_height().map_err(failed)?)
        .map_err(failed)?;
    check(
        empty.transactions().len() == 1
            && network.fee_rate_of(empty.hash()).map_err(failed)?.is_none(),
        "a block of only its coinbase has no fee rate",
    )?;
    // Publishing a mined transaction still succeeds.
    network.publish(&payment).map_err(failed)?;

    // Fee estimates.
    driver.set_fee_rate(7)?;
    check(
        network.fee_rate().map_err(failed)? == Some(FeeRate(7)),
        "the fee estimate is the node's",
    )?;
    Ok(())
}
