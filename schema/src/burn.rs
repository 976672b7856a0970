//! Burns to payments: a burn names its destination as an address string, which is parsed
//! for the processor's own Bitcoin network. A burn that cannot be paid is reported and
//! dropped (the value stays with us); it never stops the processor.

use core::str::FromStr;

use bitcoin::{Address, Network};
use thiserror::Error;

use crate::{
    instruction::OutInstructionWithBalance,
    plan::{Payment, PaymentAddress},
};

/// Why a burn cannot become a payment.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BurnError {
    /// The address is not UTF-8.
    #[error("burn address is not UTF-8")]
    NotUtf8,
    /// The address does not parse as a Bitcoin address.
    #[error("burn address does not parse: {0}")]
    Unparsable(String),
    /// The address is for another Bitcoin network.
    #[error("burn address is for another network than {0}")]
    WrongNetwork(Network),
    /// The address parses but is of a kind we do not pay (a future witness version).
    #[error("burn address is of an unsupported kind")]
    Unsupported,
}

/// The payment a burn asks for on `network`.
///
/// # Errors
/// The burn's address is not a payable address on `network`.
pub fn payment_for_burn(
    burn: &OutInstructionWithBalance,
    network: Network,
) -> Result<Payment, BurnError> {
    let text = core::str::from_utf8(&burn.address).map_err(|_| BurnError::NotUtf8)?;
    let address = Address::from_str(text)
        .map_err(|error| BurnError::Unparsable(error.to_string()))?
        .require_network(network)
        .map_err(|_| BurnError::WrongNetwork(network))?;
    let address =
        PaymentAddress::new(address.script_pubkey()).map_err(|_| BurnError::Unsupported)?;
    Ok(Payment {
        address,
        data: burn.data.clone(),
        amount: burn.amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;

    fn burn(address: &[u8]) -> OutInstructionWithBalance {
        OutInstructionWithBalance {
            address: address.to_vec(),
            data: None,
            amount: Amount::from_sat(50_000).unwrap(),
        }
    }

    #[test]
    fn addresses_are_parsed_for_the_configured_network() {
        // BIP173 and BIP350 example addresses.
        let mainnet = b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        let payment = payment_for_burn(&burn(mainnet), Network::Bitcoin).unwrap();
        assert_eq!(
            hex::encode(payment.address.script().as_bytes()),
            "0014751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        assert_eq!(payment.amount.to_sat(), 50_000);

        let regtest = Address::from_script(payment.address.script(), Network::Regtest)
            .unwrap()
            .to_string();
        let regtest = regtest.as_bytes();
        assert!(regtest.starts_with(b"bcrt1q"));
        assert_eq!(
            payment_for_burn(&burn(regtest), Network::Regtest).map(|p| p.address),
            Ok(payment.address.clone())
        );
        assert_eq!(
            payment_for_burn(&burn(mainnet), Network::Regtest),
            Err(BurnError::WrongNetwork(Network::Regtest))
        );
        assert_eq!(
            payment_for_burn(&burn(regtest), Network::Bitcoin),
            Err(BurnError::WrongNetwork(Network::Bitcoin))
        );
    }

    #[test]
    fn garbage_is_reported_not_fatal() {
        assert_eq!(
            payment_for_burn(&burn(&[0xff, 0xfe]), Network::Bitcoin),
            Err(BurnError::NotUtf8)
        );
        assert!(matches!(
            payment_for_burn(&burn(b"not an address"), Network::Bitcoin),
            Err(BurnError::Unparsable(_))
        ));
        assert!(matches!(
            payment_for_burn(&burn(b""), Network::Bitcoin),
            Err(BurnError::Unparsable(_))
        ));
        // A version-2 witness program: valid bech32m, but not a kind we pay.
        let future = b"bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs";
        assert_eq!(
            payment_for_burn(&burn(future), Network::Bitcoin),
            Err(BurnError::Unsupported)
        );
    }
}
