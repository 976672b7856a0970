@0xd276cbdd74498a77;
# Identifiers and value types shared by every message (PROTOCOL.md section 1).
#
# Fixed-size byte fields are `Data` with the length given in the comment; a decoder rejects any
# other length. Optional fields are unions of `none :Void` and `some`, so that "absent" and
# "empty" cannot be confused.

enum NetworkId {
  serai @0;
  bitcoin @1;
  ethereum @2;
  monero @3;
}

struct ValidatorSet {
  session @0 :UInt32;
  network @1 :NetworkId;
}

struct KeyGenId {
  set @0 :ValidatorSet;
  attempt @1 :UInt32;
}

struct ThresholdParams {
  # 1 <= t <= n, 1 <= i <= n; participants are 1-based.
  t @0 :UInt16;
  n @1 :UInt16;
  i @2 :UInt16;
}

struct SignId {
  # Transactions: key = network group key (33 bytes, compressed secp256k1), id = plan id
  # (32 bytes). Batches: key = batch key (32 bytes, Ristretto), id = network (1 byte) and
  # batch id (4 bytes, little endian).
  key @0 :Data;
  id @1 :Data;
  attempt @2 :UInt32;
}

struct SubstrateContext {
  seraiTime @0 :UInt64;
  # 32 bytes; all zeroes means "no block acknowledged yet for this network".
  networkLatestFinalizedBlock @1 :Data;
}

struct ParticipantData {
  # One entry of a map keyed by participant. Maps are sent sorted by participant, without
  # duplicates; participant 0 does not exist.
  participant @0 :UInt16;
  data @1 :Data;
}

struct KeyPair {
  batchKey @0 :Data;   # 32 bytes, Ristretto
  networkKey @1 :Data; # 33 bytes, compressed secp256k1
}

struct ShareRepair {
  # Who is repaired and who helps (docs/protocol.md: repairing a lost share).
  keyPair @0 :KeyPair;
  repaired @1 :UInt16;
  helpers @2 :List(UInt16); # exactly the key's threshold, ascending, never the repaired
  participants @3 :UInt16;  # n, the set's number of key shares
  identity @4 :Data;        # 32 bytes, x-only: the repaired enclave's identity key, which the
                            # coordinator takes from its operator, never from the link
  shares @5 :Data;          # 32 bytes: the digest of the verification shares the helpers hold
}

struct OutInstructionWithBalance {
  # A burn: pay `amount` (satoshis) to `address`, an address string in the network's own
  # encoding, parsed by the processor for the configured network.
  address @0 :Data;
  data :union {
    none @1 :Void;
    some @2 :Data;
  }
  amount @3 :UInt64;
}

struct InInstruction {
  # What a deposit asks the Serai chain to do. Today only a transfer to a 32-byte Serai
  # address; a further kind turns this field into a union (a compatible change).
  transfer @0 :Data;
}

struct InInstructionWithBalance {
  instruction @0 :InInstruction;
  amount @1 :UInt64;
}

struct Batch {
  network @0 :NetworkId;
  id @1 :UInt32;
  block @2 :Data; # 32 bytes, the network block the deposits are in
  instructions @3 :List(InInstructionWithBalance);
}

struct SignedBatch {
  batch @0 :Batch;
  signature @1 :Data; # 64 bytes, Schnorrkel (sr25519) by the batch key
}

enum OutputKind {
  external @0;
  branch @1;
  change @2;
}

struct OutputId {
  txid @0 :Data; # 32 bytes, internal byte order
  vout @1 :UInt32;
}

struct PlanInput {
  id @0 :OutputId;
  kind @1 :OutputKind;
  amount @2 :UInt64;
}

struct Payment {
  address @0 :Data; # the output script (scriptPubKey) of a standard address
  data :union {
    none @1 :Void;
    some @2 :Data;
  }
  amount @3 :UInt64;
}

struct Plan {
  key @0 :Data; # 33 bytes, network group key
  inputs @1 :List(PlanInput);
  payments @2 :List(Payment);
  change :union {
    none @3 :Void;
    some @4 :Data; # 33 bytes, the key whose change address receives the change
  }
  feeRate @5 :UInt64; # satoshis per virtual byte; part of the plan id
  replaces :union {
    none @6 :Void;
    some @7 :Replaces; # a fee-bumping replacement of the family's original plan
  }
}

struct Replaces {
  plan @0 :Data;     # 32 bytes, the original plan's id
  feeRate @1 :UInt64; # the original plan's fee rate
}
