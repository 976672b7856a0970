//! Bitcoin Core's answers as the scanner reads them (`scanner::core_answers`): the JSON-RPC
//! envelope, then every reader of a result over it (heights, hashes, headers, block statistics,
//! fee estimates), and a raw block or transaction in hex through to the scanner's chain-neutral
//! form and the outputs it receives.
#![no_main]

use bitcoin::{Block, Transaction};
use libfuzzer_sys::fuzz_target;
use processor_fuzz::{key_scripts, network_key};
use scanner::{
    bitcoin_network::{chain_block, chain_transaction},
    core_answers,
    outputs::receive,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(result) = core_answers::reply("fuzz", 200, &text) else {
        return;
    };
    let _ = core_answers::height(&result);
    let _ = core_answers::header_height(&result);
    let _ = core_answers::median_fee_rate(&result);
    if let Some(rate) = core_answers::fee_estimate(&result) {
        assert!(rate > 0, "a fee estimate of zero");
    }
    let _ = core_answers::block_hash(result.clone());
    let Ok(hex) = core_answers::string("fuzz", result) else {
        return;
    };
    if let Ok(block) = core_answers::decode::<Block>("getblock", &hex) {
        if let Ok(chain) = chain_block(1, &block) {
            let received = receive(&chain, &[(network_key(), key_scripts())]);
            assert!(received.outputs.len() <= block.txdata.iter().map(|tx| tx.output.len()).sum());
        }
    }
    if let Ok(transaction) = core_answers::decode::<Transaction>("getrawtransaction", &hex) {
        let _ = chain_transaction(&transaction);
    }
});
