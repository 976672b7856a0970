//! Mixed traffic on the devnet, for as many blocks as asked: deposits of many sizes (near dust
//! included) with valid, invalid or missing instructions, bursts, quiet stretches, burns of many
//! sizes to many addresses (some that cannot be paid), and fee rates moving from 1 to 500
//! sat/vB. The devnet's coordinator plays Serai: it includes every Batch in order, sends a Serai
//! block every few blocks with the last included Batch's block as context, attests the plans the
//! processors agree on and has three of the four sign each.
//!
//! At the end the fees fall, everything payable drains, and the chain and the processors' books
//! are audited: every satoshi deposited is paid out, went to miners, or is still ours; no burn is
//! paid twice; every burn not paid was dropped for a reason, none is still waiting; and on every
//! validator, `deposits − (burns − outstanding) = holdings + carried operating costs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use bitcoin::{script::PushBytesBuf, Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use schema::{
    amount::Amount as SeraiAmount,
    hashes::SeraiAddress,
    ids::{Attempt, Participant},
    instruction::{InInstruction, OutInstructionWithBalance, RefundableInInstruction},
    keys::KeyPair,
    plan::OutputKind,
    protocol::DUST,
    sign_id::PlanSignId,
    taproot::KeyScripts,
};
use serde_json::json;

use crate::{
    devnet::{Devnet, CONFIRMATIONS},
    regtest::wallet::TestWallet,
    HarnessError,
};

fn failed(error: impl fmt::Display) -> HarnessError {
    HarnessError::Failed(error.to_string())
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// Blocks of traffic (the drain at the end comes on top).
    pub blocks: u32,
    /// A Serai block every this many blocks.
    pub serai_every: u32,
    /// The seed of every random choice.
    pub seed: u64,
}

/// What happened, and the audit. Deposits, burns and payouts count everything since the key
/// was confirmed, the story before the traffic included.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Blocks mined in all, drain included.
    pub blocks: u32,
    /// Deposits on chain, and their value.
    pub deposits: (u64, u64),
    /// Burns the Serai blocks carried, and their value.
    pub burns: (u64, u64),
    /// Burns paid (each exactly once), and the value paid out.
    pub paid: (u64, u64),
    /// Burns not paid: dropped by the processors (below dust, unpayable, or to an address they
    /// cannot pay), and their value.
    pub dropped: (u64, u64),
    /// Fees our transactions paid.
    pub fees: u64,
    /// What we hold at the end: every output of ours not spent.
    pub holdings: u64,
    /// Our transactions on chain.
    pub transactions: u64,
    /// The lowest and highest fee rate our transactions paid, sat/vB.
    pub fee_rates: (u64, u64),
    /// Batches signed and Serai blocks sent.
    pub batches: u32,
    /// Serai blocks sent.
    pub serai_blocks: u64,
    /// Each validator's books: outstanding and carried operating costs, in satoshis.
    pub books: Vec<(i64, i64)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} blocks, {} Serai blocks, {} Batches, {} transactions of ours",
            self.blocks, self.serai_blocks, self.batches, self.transactions
        )?;
        writeln!(
            f,
            "deposits: {} worth {} sat; burns: {} worth {} sat",
            self.deposits.0, self.deposits.1, self.burns.0, self.burns.1
        )?;
        writeln!(
            f,
            "paid exactly once: {} burns, {} sat out; dropped: {} burns worth {} sat",
            self.paid.0, self.paid.1, self.dropped.0, self.dropped.1
        )?;
        writeln!(
            f,
            "fees {} sat at {} to {} sat/vB; holdings {} sat",
            self.fees, self.fee_rates.0, self.fee_rates.1, self.holdings
        )?;
        writeln!(
            f,
            "on chain: deposits {} = payouts {} + fees {} + holdings {}",
            self.deposits.1, self.paid.1, self.fees, self.holdings
        )?;
        for (index, (outstanding, carried)) in self.books.iter().enumerate() {
            writeln!(
                f,
                "validator {}: deposits {} - (burns {} - outstanding {}) = holdings {} + carried {}",
                index + 1,
                self.deposits.1,
                self.burns.1,
                outstanding,
                self.holdings,
                carried
            )?;
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The miner's funds: a chain of change outputs, topped up from mature coinbases.
struct Funds {
    coin: (OutPoint, TxOut),
}

/// The fee rate of a block of traffic: stretches low, middling, high and very high.
fn fee_rate(block: u32, rng: &mut Rng) -> u64 {
    match block / 60 % 5 {
        0 => rng.range(1, 4),
        1 => rng.range(5, 40),
        2 => rng.range(40, 150),
        3 => rng.range(150, 501),
        _ => rng.range(2, 15),
    }
}

/// Runs `traffic` on a keyed devnet whose Batches so far are all included, then drains and
/// audits it; `progress` hears a line now and then.
///
/// # Errors
/// A step of the story failed, or the audit found money lost, created or paid twice.
pub fn run(
    devnet: &mut Devnet,
    pair: &KeyPair,
    traffic: Traffic,
    mut progress: impl FnMut(&str),
) -> Result<Report, HarnessError> {
    let scripts = KeyScripts::derive(&pair.network_key).map_err(failed)?;
    let external = scripts.script(OutputKind::External).clone();
    let mut rng = Rng(traffic.seed | 1);
    let mut funds = Funds {
        coin: devnet.take_coinbase()?,
    };
    let mut report = Report::default();
    let mut burned = devnet
        .burns()?
        .iter()
        .map(|burn| burn.amount.to_sat())
        .sum::<u64>();
    let mut credited = 0u64;
    let mut serai_block = devnet.next_serai_block()?;
    let signers = [
        [p(1)?, p(2)?, p(3)?],
        [p(1)?, p(2)?, p(4)?],
        [p(1)?, p(3)?, p(4)?],
        [p(2)?, p(3)?, p(4)?],
    ];

    for block in 0..traffic.blocks {
        let rate = fee_rate(block, &mut rng);
        let quiet = block % 400 >= 340;
        let burst = block % 250 == 125;
        if !quiet {
            let count = if burst { 300 } else { rng.range(0, 4) };
            if count > 0 {
                let transaction = deposit(devnet, &mut funds, &external, count, rate, &mut rng)?;
                devnet.node.send(&transaction).map_err(failed)?;
            }
        }
        // A transaction setting the block's fee rate, as the rest of the market would.
        devnet
            .node
            .send(&filler(devnet, &mut funds, rate)?)
            .map_err(failed)?;
        devnet.mine(1)?;
        report.blocks += 1;

        if block % traffic.serai_every == traffic.serai_every - 1 {
            report.batches += include_batches(devnet)?;
            credited = credited.max(devnet.credited()?);
            let mut sent = Vec::new();
            if !quiet {
                let count = if burst { 120 } else { rng.range(0, 5) };
                for _ in 0..count {
                    let amount = burn_amount(&mut rng);
                    if burned + amount > credited * 8 / 10 {
                        break;
                    }
                    burned += amount;
                    sent.push(burn_to(&mut rng, amount)?);
                }
            }
            let index = usize::try_from(serai_block % 4).map_err(failed)?;
            serai(devnet, pair, serai_block, sent, &signers[index])?;
            serai_block += 1;
            report.serai_blocks += 1;
        }
        if block % 100 == 99 {
            progress(&format!(
                "block {}: {} sat burned so far, fee rate {rate} sat/vB",
                block + 1,
                burned
            ));
        }
    }

    // Fees fall and nothing new comes: everything payable is paid.
    progress("draining at 2 sat/vB");
    let mut idle = 0;
    for round in 0..200u32 {
        devnet
            .node
            .send(&filler(devnet, &mut funds, 2)?)
            .map_err(failed)?;
        devnet.mine(u32::try_from(CONFIRMATIONS).map_err(failed)?)?;
        report.blocks += u32::try_from(CONFIRMATIONS).map_err(failed)?;
        report.batches += include_batches(devnet)?;
        let index = usize::try_from(round % 4).map_err(failed)?;
        let plans = serai(devnet, pair, serai_block, Vec::new(), &signers[index])?;
        serai_block += 1;
        report.serai_blocks += 1;
        let waiting = devnet.validators[0].scanner_metric("scheduler_payments_waiting")?;
        idle = if plans == 0 && waiting == 0.0 {
            idle + 1
        } else {
            0
        };
        if idle >= 3 {
            break;
        }
    }
    if idle < 3 {
        let metric = |name| devnet.validators[0].scanner_metric(name);
        return Err(failed(format!(
            "the devnet did not drain: {} payments waiting, {} sat outstanding, {} sat carried",
            metric("scheduler_payments_waiting")?,
            metric("scheduler_outstanding_sats")?,
            metric("scheduler_operating_costs_sats")?,
        )));
    }

    audit(devnet, &scripts, &mut report)?;
    Ok(report)
}

fn p(index: u16) -> Result<Participant, HarnessError> {
    Participant::new(index).map_err(failed)
}

/// A deposit transaction: `count` outputs to our address, with one instruction for all of
/// them (valid most of the time, sometimes invalid or missing).
fn deposit(
    devnet: &Devnet,
    funds: &mut Funds,
    external: &ScriptBuf,
    count: u64,
    rate: u64,
    rng: &mut Rng,
) -> Result<Transaction, HarnessError> {
    let mut outputs = Vec::new();
    for _ in 0..count {
        let amount = match rng.next() % 10 {
            0..=2 => rng.range(DUST.to_sat(), DUST.to_sat() + 3_000),
            3..=5 => rng.range(20_000, 200_000),
            6..=8 => rng.range(500_000, 3_000_000),
            _ => rng.range(10_000_000, 50_000_000),
        };
        outputs.push(TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: external.clone(),
        });
    }
    let data = match rng.next() % 20 {
        0 => None,
        1 => Some(vec![0xff, 1, 2]),
        _ => Some(
            RefundableInInstruction {
                origin: None,
                instruction: InInstruction::Transfer {
                    to: SeraiAddress([u8::try_from(rng.next() % 251).map_err(failed)?; 32]),
                },
            }
            .encode(),
        ),
    };
    if let Some(data) = data {
        outputs.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(PushBytesBuf::try_from(data).map_err(failed)?),
        });
    }
    pay(devnet, funds, outputs, rate)
}

/// A transaction of the rest of the market paying `rate`, large enough to set the block's
/// median fee rate.
fn filler(devnet: &Devnet, funds: &mut Funds, rate: u64) -> Result<Transaction, HarnessError> {
    let outputs = (0..30)
        .map(|_| TxOut {
            value: Amount::from_sat(1_000),
            script_pubkey: devnet.miner.script_pubkey(),
        })
        .collect();
    pay(devnet, funds, outputs, rate)
}

/// Pays `outputs` from the funds at `rate`, change back to the funds.
fn pay(
    devnet: &Devnet,
    funds: &mut Funds,
    mut outputs: Vec<TxOut>,
    rate: u64,
) -> Result<Transaction, HarnessError> {
    let spent: u64 = outputs.iter().map(|output| output.value.to_sat()).sum();
    let mut inputs = vec![funds.coin.clone()];
    let size = 11 + 58 * 2 + 43 * (outputs.len() as u64 + 1) + 90;
    let fee = size * rate;
    while inputs
        .iter()
        .map(|(_, out)| out.value.to_sat())
        .sum::<u64>()
        < spent + fee + 100_000
    {
        inputs.push(devnet.take_coinbase()?);
    }
    let available: u64 = inputs.iter().map(|(_, out)| out.value.to_sat()).sum();
    outputs.push(TxOut {
        value: Amount::from_sat(available - spent - fee),
        script_pubkey: devnet.miner.script_pubkey(),
    });
    let change = u32::try_from(outputs.len() - 1).map_err(failed)?;
    let transaction = devnet.miner.spend(&inputs, outputs).map_err(failed)?;
    let txid = transaction.compute_txid();
    let out = transaction
        .output
        .get(usize::try_from(change).map_err(failed)?)
        .cloned()
        .ok_or_else(|| failed("no change"))?;
    funds.coin = (OutPoint { txid, vout: change }, out);
    Ok(transaction)
}

fn burn_amount(rng: &mut Rng) -> u64 {
    match rng.next() % 10 {
        0 => rng.range(5_000, DUST.to_sat()),
        1..=2 => rng.range(DUST.to_sat(), 14_000),
        3..=6 => rng.range(20_000, 300_000),
        7..=8 => rng.range(500_000, 5_000_000),
        _ => rng.range(5_000_000, 20_000_000),
    }
}

/// A burn to a fresh address, or now and then to an address no Bitcoin processor can pay.
fn burn_to(rng: &mut Rng, amount: u64) -> Result<OutInstructionWithBalance, HarnessError> {
    let amount = SeraiAmount::from_sat(amount).map_err(failed)?;
    if rng.chance(3) {
        return Ok(OutInstructionWithBalance {
            address: b"not an address".to_vec(),
            data: None,
            amount,
        });
    }
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    secret[0] |= 1;
    let wallet = TestWallet::new(secret).map_err(failed)?;
    Ok(OutInstructionWithBalance {
        address: wallet.address().to_string().into_bytes(),
        data: None,
        amount,
    })
}

/// The output script a burn pays, if its address is a regtest address.
fn script_of(burn: &OutInstructionWithBalance) -> Option<ScriptBuf> {
    let address: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
        std::str::from_utf8(&burn.address).ok()?.parse().ok()?;
    Some(
        address
            .require_network(bitcoin::Network::Regtest)
            .ok()?
            .script_pubkey(),
    )
}

/// Includes every Batch the processors built for the finalized blocks; returns how many.
fn include_batches(devnet: &Devnet) -> Result<u32, HarnessError> {
    devnet.wait_scanned()?;
    let built = devnet.batches_built()?;
    let mut included = 0;
    let signers = [p(1)?, p(2)?, p(3)?];
    while devnet.next_batch()? < built {
        devnet.sign_next_batch(&signers)?;
        included += 1;
    }
    Ok(included)
}

/// A Serai block with `burns`: acknowledged, attested, every plan signed by `signers`, the
/// transactions mined to finality. Returns how many plans it made.
fn serai(
    devnet: &Devnet,
    pair: &KeyPair,
    number: u64,
    burns: Vec<OutInstructionWithBalance>,
    signers: &[Participant],
) -> Result<usize, HarnessError> {
    let ack = devnet.substrate_block(number, pair, burns, &devnet.all())?;
    devnet.acknowledge(&ack)?;
    for plan in &ack.plans {
        devnet.sign_plan(
            PlanSignId {
                key: pair.network_key,
                id: *plan,
                attempt: Attempt(0),
            },
            signers,
        )?;
    }
    Ok(ack.plans.len())
}

/// Audits the chain from the devnet's first block and every validator's books.
fn audit(devnet: &Devnet, scripts: &KeyScripts, report: &mut Report) -> Result<(), HarnessError> {
    let sent = devnet.burns()?;
    report.burns.0 = u64::try_from(sent.len()).map_err(failed)?;
    report.burns.1 = sent.iter().map(|burn| burn.amount.to_sat()).sum();
    let mut burns: BTreeMap<ScriptBuf, u64> = BTreeMap::new();
    let mut unpayable_addresses = (0u64, 0u64);
    for burn in &sent {
        match script_of(burn) {
            Some(script) => {
                if burns.insert(script, burn.amount.to_sat()).is_some() {
                    return Err(failed(
                        "two burns to one address: the audit cannot tell them apart",
                    ));
                }
            }
            None => {
                unpayable_addresses.0 += 1;
                unpayable_addresses.1 += burn.amount.to_sat();
            }
        }
    }
    let tip = devnet
        .node
        .rpc("getblockcount", json!([]))
        .map_err(failed)?
        .as_u64()
        .ok_or_else(|| failed("no height"))?;
    let ours = |script: &ScriptBuf| scripts.kind_of(script).is_some();
    let mut unspent: BTreeMap<OutPoint, u64> = BTreeMap::new();
    let mut deposited = 0u64;
    let mut payouts: BTreeMap<ScriptBuf, Vec<u64>> = BTreeMap::new();
    let mut ours_seen: BTreeSet<Txid> = BTreeSet::new();
    let (mut lowest, mut highest) = (u64::MAX, 0u64);
    for height in 1..=u32::try_from(tip).map_err(failed)? {
        for transaction in devnet.node.block_at(height).map_err(failed)?.txdata {
            let txid = transaction.compute_txid();
            let spent: Vec<u64> = transaction
                .input
                .iter()
                .filter_map(|input| unspent.remove(&input.previous_output))
                .collect();
            if spent.is_empty() {
                for (vout, output) in (0u32..).zip(&transaction.output) {
                    if ours(&output.script_pubkey) && output.value.to_sat() >= DUST.to_sat() {
                        deposited += output.value.to_sat();
                        report.deposits.0 += 1;
                        unspent.insert(OutPoint { txid, vout }, output.value.to_sat());
                    }
                }
                continue;
            }
            if spent.len() != transaction.input.len() {
                return Err(failed(format!("{txid} spends ours with foreign inputs")));
            }
            ours_seen.insert(txid);
            let inputs: u64 = spent.iter().sum();
            let outputs: u64 = transaction.output.iter().map(|o| o.value.to_sat()).sum();
            let fee = inputs - outputs;
            report.fees += fee;
            let rate = fee / u64::try_from(transaction.vsize()).map_err(failed)?;
            lowest = lowest.min(rate);
            highest = highest.max(rate);
            for (vout, output) in (0u32..).zip(&transaction.output) {
                if ours(&output.script_pubkey) {
                    unspent.insert(OutPoint { txid, vout }, output.value.to_sat());
                } else {
                    payouts
                        .entry(output.script_pubkey.clone())
                        .or_default()
                        .push(output.value.to_sat());
                }
            }
        }
    }
    report.transactions = u64::try_from(ours_seen.len()).map_err(failed)?;
    report.fee_rates = (lowest, highest);
    report.holdings = unspent.values().sum();
    report.deposits.1 = deposited;
    let paid_out: u64 = payouts.values().flatten().sum();
    if deposited != paid_out + report.fees + report.holdings {
        return Err(failed(format!(
            "on chain: deposits {deposited} != payouts {paid_out} + fees {} + holdings {}",
            report.fees, report.holdings
        )));
    }
    // Every payout is to a burn's address, at most once, never more than burned.
    for (script, amounts) in &payouts {
        let Some(burned) = burns.get(script) else {
            return Err(failed(format!("a payout to {script} nobody burned to")));
        };
        if amounts.len() != 1 || amounts[0] > *burned {
            return Err(failed(format!(
                "burn of {burned} to {script} paid {amounts:?}"
            )));
        }
        report.paid.0 += 1;
        report.paid.1 += amounts[0];
    }
    // Every burn not paid was dropped, with its reason counted by every validator.
    let unpaid: Vec<u64> = burns
        .iter()
        .filter(|(script, _)| !payouts.contains_key(*script))
        .map(|(_, amount)| *amount)
        .collect();
    report.dropped.0 = u64::try_from(unpaid.len()).map_err(failed)? + unpayable_addresses.0;
    report.dropped.1 = unpaid.iter().sum::<u64>() + unpayable_addresses.1;
    for validator in &devnet.validators {
        let dropped: f64 = ["below_dust", "unpayable", "unpayable_address"]
            .iter()
            .map(|reason| {
                validator.scanner_metric(&format!(
                    "scheduler_payments_dropped_total{{reason=\"{reason}\"}}"
                ))
            })
            .sum::<Result<f64, _>>()?;
        if dropped != report.dropped.0 as f64 {
            return Err(failed(format!(
                "validator {:?} dropped {dropped} payments, {} burns went unpaid",
                validator.participant, report.dropped.0
            )));
        }
        if unpaid.iter().any(|amount| *amount > DUST.to_sat() + 1_000) {
            return Err(failed(format!("payable burns unpaid: {unpaid:?}")));
        }
        let outstanding = validator.scanner_metric("scheduler_outstanding_sats")?;
        let carried = validator.scanner_metric("scheduler_operating_costs_sats")?;
        // Gauges are f64 in the text format; every value here is far below 2^53.
        #[allow(clippy::cast_possible_truncation)]
        let (outstanding, carried) = (outstanding as i64, carried as i64);
        let credited = i128::from(deposited) - i128::from(report.burns.1) + i128::from(outstanding);
        let held = i128::from(report.holdings) + i128::from(carried);
        if credited != held {
            return Err(failed(format!(
                "validator {:?}: deposits {deposited} - (burns {} - outstanding {outstanding}) != holdings {} + carried {carried}",
                validator.participant, report.burns.1, report.holdings
            )));
        }
        report.books.push((outstanding, carried));
    }
    Ok(())
}
