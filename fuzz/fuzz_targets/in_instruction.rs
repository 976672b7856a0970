//! The InInstruction codec (a deposit's `OP_RETURN` payload): whatever decodes re-encodes to
//! exactly the same bytes, since the encoding is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::instruction::RefundableInInstruction;

fuzz_target!(|data: &[u8]| {
    if let Ok(instruction) = RefundableInInstruction::decode(data) {
        assert_eq!(
            instruction.encode(),
            data,
            "{instruction:?} re-encodes differently"
        );
    }
});
