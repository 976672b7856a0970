//! Bitcoin Core's answers as the scanner reads them (`scanner::core_answers`): the JSON-RPC
//! envelope, then every reader of a result over it (heights, hashes, headers, block statistics,
//! fee estimates), and a raw block or transaction in hex through to the scanner's chain-neutral
//! form and the outputs it receives. Hashes and raw data must read back as they were sent.
#![no_main]

use bitcoin::{consensus::encode::serialize_hex, Block, Transaction};
use libfuzzer_sys::fuzz_target;
use processor_fuzz::{key_scripts, network_key};
use scanner::{
    chain::bitcoin_core::{chain_transaction, BitcoinBlock},
    chain::core_answers,
    scan::outputs::receive,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(result) = core_answers::reply("fuzz", 200, &text) else {
        return;
    };
    let _ = core_answers::height(&result);
    let _ = core_answers::header_height(&result);
    let _ = core_answers::median_fee_rate(&result);
    let _ = core_answers::fee_estimate(&result);
    if let (Ok(hash), Some(text)) = (core_answers::block_hash(result.clone()), result.as_str()) {
        assert_eq!(
            hash.to_string(),
            text.to_ascii_lowercase(),
            "a block hash reads as another"
        );
    }
    let Ok(hex) = core_answers::result_string("fuzz", result) else {
        return;
    };
    // Raw blocks and transactions decode canonically: what the scanner reads is exactly what the
    // node sent, so ids computed from it are the node's.
    if let Ok(block) = core_answers::consensus_hex::<Block>("getblock", &hex) {
        assert_eq!(
            serialize_hex(&block),
            hex.to_ascii_lowercase(),
            "a block decodes non-canonically"
        );
        let _ = receive(
            &BitcoinBlock::new(1, block),
            &[(network_key(), key_scripts())],
        );
    }
    if let Ok(transaction) = core_answers::consensus_hex::<Transaction>("getrawtransaction", &hex) {
        assert_eq!(
            serialize_hex(&transaction),
            hex.to_ascii_lowercase(),
            "a transaction decodes non-canonically"
        );
        let _ = chain_transaction(&transaction);
    }
});
