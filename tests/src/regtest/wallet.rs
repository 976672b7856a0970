//! A test wallet: one Taproot key the test holds, funded by mining to its address, spending
//! with BIP341 key-path signatures.

use bitcoin::{
    absolute::LockTime,
    key::{Keypair, TapTweak},
    secp256k1::{Message, Secp256k1, SecretKey},
    sighash::{Prevouts, SighashCache},
    taproot, transaction, Address, Network, OutPoint, ScriptBuf, Sequence, TapSighashType,
    Transaction, TxIn, TxOut, Witness,
};

/// A single-key Taproot wallet.
pub struct TestWallet {
    keypair: Keypair,
    address: Address,
}

impl TestWallet {
    /// The wallet of a 32-byte secret (any nonzero value below the curve order).
    ///
    /// # Errors
    /// The secret is not a valid key.
    pub fn new(secret: [u8; 32]) -> Result<Self, bitcoin::secp256k1::Error> {
        let secp = Secp256k1::new();
        let keypair = Keypair::from_secret_key(&secp, &SecretKey::from_slice(&secret)?);
        let address = Address::p2tr(&secp, keypair.x_only_public_key().0, None, Network::Regtest);
        Ok(TestWallet { keypair, address })
    }

    /// Where to send (or mine) to the wallet.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The script the wallet's outputs pay.
    pub fn script_pubkey(&self) -> ScriptBuf {
        self.address.script_pubkey()
    }

    /// A version-2 transaction spending `inputs` (the wallet's outputs) to `outputs`, every
    /// input signed on the key path.
    ///
    /// # Errors
    /// A sighash cannot be computed (an input index out of range).
    pub fn spend(
        &self,
        inputs: &[(OutPoint, TxOut)],
        outputs: Vec<TxOut>,
    ) -> Result<Transaction, bitcoin::sighash::TaprootError> {
        let secp = Secp256k1::new();
        let mut transaction = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|(outpoint, _)| TxIn {
                    previous_output: *outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let prevouts: Vec<TxOut> = inputs.iter().map(|(_, output)| output.clone()).collect();
        let tweaked = self.keypair.tap_tweak(&secp, None).to_keypair();
        let mut signatures = Vec::with_capacity(inputs.len());
        let mut cache = SighashCache::new(&transaction);
        for index in 0..inputs.len() {
            let sighash = cache.taproot_key_spend_signature_hash(
                index,
                &Prevouts::All(&prevouts),
                TapSighashType::Default,
            )?;
            let message = Message::from_digest(*sighash.as_ref());
            signatures.push(secp.sign_schnorr_no_aux_rand(&message, &tweaked));
        }
        for (input, signature) in transaction.input.iter_mut().zip(signatures) {
            input.witness = Witness::p2tr_key_spend(&taproot::Signature {
                signature,
                sighash_type: TapSighashType::Default,
            });
        }
        Ok(transaction)
    }
}
