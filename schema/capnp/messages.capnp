@0xa915a91cff8efcec;
# Every message between the coordinator and a processor (PROTOCOL.md sections 2 and 3), and
# the envelopes that number them (section 6).

using Common = import "common.capnp";

# ---- coordinator to processor ----

struct KeyGenToProcessor {
  union {
    generateKey :group {
      id @0 :Common.KeyGenId;
      params @1 :Common.ThresholdParams;
    }
    commitments :group {
      id @2 :Common.KeyGenId;
      commitments @3 :List(Common.ParticipantData);
    }
    shares :group {
      id @4 :Common.KeyGenId;
      shares @5 :List(Common.ParticipantData);
    }
    # Repairing a lost share: to the repaired participant, answered with its fresh key.
    repairBegin :group {
      id @6 :Common.KeyGenId;
      repair @7 :Common.ShareRepair;
    }
    # To each helper: the attested repair (BIP340 over `repair_attestation_message`).
    repairHelp :group {
      id @8 :Common.KeyGenId;
      repair @9 :Common.ShareRepair;
      freshKey @10 :Data;          # the repaired enclave's fresh keys, 32 + 33 bytes
      freshKeySignature @11 :Data; # 64 bytes, BIP340 by the repaired enclave's identity
      attestation @12 :Data;       # 64 bytes
    }
    # To each helper: the other helpers' masked parts for it.
    repairParts :group {
      id @13 :Common.KeyGenId;
      parts @14 :List(Common.ParticipantData);
    }
    # To the repaired participant: every helper's answer, and the attestation of the repair.
    repairAnswers :group {
      id @15 :Common.KeyGenId;
      answers @16 :List(Common.ParticipantData);
      attestation @17 :Data; # 64 bytes
    }
    # To every participant: refresh the shares of the pair whose verification shares have
    # digest `shares` (BIP340 over `refresh_attestation_message`).
    refreshBegin :group {
      id @18 :Common.KeyGenId;
      keyPair @19 :Common.KeyPair;
      shares @20 :Data;      # 32 bytes
      attestation @21 :Data; # 64 bytes
      identities @31 :List(Data); # every participant's registered identity (32 bytes x-only), in order
    }
    # To every participant: the others' fresh keys, each signed by its identity.
    refreshKeys :group {
      id @22 :Common.KeyGenId;
      keys @23 :List(Common.ParticipantData);
    }
    # To every participant: the others' deals for it.
    refreshDeals :group {
      id @24 :Common.KeyGenId;
      deals @25 :List(Common.ParticipantData);
    }
    # To every participant: everyone refreshed to the verification shares of `digest`, as each
    # signed by its identity; switch to them (BIP340 over `refresh_confirm_message`).
    refreshConfirm :group {
      id @26 :Common.KeyGenId;
      keyPair @27 :Common.KeyPair;
      digest @28 :Data;                          # 32 bytes
      signatures @29 :List(Common.ParticipantData); # every participant's `Refreshed` signature
      attestation @30 :Data;                     # 64 bytes
      identities @32 :List(Data);                # as in `refreshBegin`
    }
  }
}

struct SignToProcessor {
  union {
    preprocesses :group {
      id @0 :Common.SignId;
      preprocesses @1 :List(Common.ParticipantData);
    }
    shares :group {
      id @2 :Common.SignId;
      shares @3 :List(Common.ParticipantData);
    }
    reattempt :group {
      id @4 :Common.SignId;
    }
    completed :group {
      key @5 :Data; # 33 bytes, network key
      id @6 :Data;  # 32 bytes, plan id
      tx @7 :Data;  # 32 bytes, transaction id
    }
  }
}

struct PlansAcknowledged {
  # The validator set recognized exactly these plan ids for Serai block `block`.
  block @0 :UInt64;
  key @1 :Data;          # 33 bytes, network key the plans spend from
  plans @2 :List(Data);  # 32 bytes each
  attestation @3 :Data;  # 64 bytes, BIP340 signature by the coordinator's attestation key
}

struct CoordinatorToProcessor {
  union {
    batchPreprocesses :group {
      id @0 :Common.SignId;
      preprocesses @1 :List(Common.ParticipantData);
    }
    batchShares :group {
      id @2 :Common.SignId;
      shares @3 :List(Common.ParticipantData);
    }
    batchReattempt :group {
      id @4 :Common.SignId;
    }
    plansAcknowledged @5 :PlansAcknowledged;
  }
}

struct SubstrateToProcessor {
  union {
    confirmKeyPair :group {
      context @0 :Common.SubstrateContext;
      set @1 :Common.ValidatorSet;
      keyPair @2 :Common.KeyPair;
    }
    substrateBlock :group {
      context @3 :Common.SubstrateContext;
      block @4 :UInt64;
      key @5 :Data; # 33 bytes, network key
      burns @6 :List(Common.OutInstructionWithBalance);
    }
    # The newest Batch of the network Serai included, with its signature, attested by the
    # coordinator (BIP340, over `substrate::inclusion_message`).
    batchIncluded :group {
      batch @7 :Common.SignedBatch;
      attestation @8 :Data; # 64 bytes
    }
  }
}

struct CoordinatorMessage {
  union {
    keyGen @0 :KeyGenToProcessor;
    sign @1 :SignToProcessor;
    coordinator @2 :CoordinatorToProcessor;
    substrate @3 :SubstrateToProcessor;
  }
}

struct CoordinatorEnvelope {
  id @0 :UInt64; # consecutive per processor, from 1 (a gap halts the link)
  message @1 :CoordinatorMessage;
  # BIP340 by the coordinator's message key over the validator, the id and the canonical
  # encoding of `message` (schema/src/link/signed.rs); checked before the message is decoded.
  signature @2 :Data;
}

# ---- processor to coordinator ----

struct KeyGenFromProcessor {
  union {
    commitments :group {
      id @0 :Common.KeyGenId;
      commitments @1 :Data; # our round-1 broadcast, for both keys
    }
    shares :group {
      id @2 :Common.KeyGenId;
      shares @3 :List(Common.ParticipantData); # one encrypted share per other participant
    }
    generatedKeyPair :group {
      id @4 :Common.KeyGenId;
      batchKey @5 :Data;   # 32 bytes
      networkKey @6 :Data; # 33 bytes
    }
    blame :group {
      id @7 :Common.KeyGenId;
      participant @8 :UInt16;
      evidence @9 :Data;
    }
    repairKey :group {
      id @10 :Common.KeyGenId;
      freshKey @11 :Data;  # 32 + 33 bytes
      signature @12 :Data; # 64 bytes, BIP340 by the enclave's identity
    }
    repairParts :group {
      id @13 :Common.KeyGenId;
      parts @14 :List(Common.ParticipantData); # one masked part per other helper
    }
    repairAnswer :group {
      id @15 :Common.KeyGenId;
      answer @16 :Data; # for the repaired participant
    }
    repaired :group {
      id @17 :Common.KeyGenId;
      keyPair @18 :Common.KeyPair;
    }
    refreshKey :group {
      id @19 :Common.KeyGenId;
      key @20 :Data; # fresh keys (32 + 33) and their BIP340 signature by our identity (64)
    }
    refreshDeal :group {
      id @21 :Common.KeyGenId;
      deals @22 :List(Common.ParticipantData); # one per other participant
    }
    refreshed :group {
      id @23 :Common.KeyGenId;
      keyPair @24 :Common.KeyPair;
      digest @25 :Data;    # 32 bytes, of the refreshed verification shares
      signature @26 :Data; # 64 bytes, BIP340 by our identity over the digest
    }
    refreshConfirmed :group {
      id @27 :Common.KeyGenId;
      keyPair @28 :Common.KeyPair;
      epoch @29 :UInt32;
    }
  }
}

struct SignFromProcessor {
  union {
    preprocess :group {
      id @0 :Common.SignId;
      preprocess @1 :Data;
    }
    share :group {
      id @2 :Common.SignId;
      share @3 :Data;
    }
    completed :group {
      key @4 :Data; # 33 bytes
      id @5 :Data;  # 32 bytes, plan id
      tx @6 :Data;  # 32 bytes, transaction id
    }
  }
}

struct SubstrateBlockAck {
  # Every plan created for Serai block `block`, sent before any of them is signed.
  block @0 :UInt64;
  key @1 :Data;         # 33 bytes, network key the plans spend from
  plans @2 :List(Data); # 32 bytes each
}

struct CoordinatorFromProcessor {
  union {
    batchPreprocess :group {
      id @0 :Common.SignId;
      block @1 :Data; # 32 bytes
      batchId @2 :UInt32;
      preprocess @3 :Data;
    }
    batchShare :group {
      id @4 :Common.SignId;
      share @5 :Data;
    }
    substrateBlockAck @6 :SubstrateBlockAck;
  }
}

struct SubstrateFromProcessor {
  # Today the only message of this group; a further one turns this field into a union (a
  # compatible change).
  update @0 :Common.SignedBatch;
}

struct ProcessorMessage {
  union {
    keyGen @0 :KeyGenFromProcessor;
    sign @1 :SignFromProcessor;
    coordinator @2 :CoordinatorFromProcessor;
    substrate @3 :SubstrateFromProcessor;
  }
}

struct ProcessorEnvelope {
  id @0 :UInt64; # strictly increasing per processor, the outbox position
  message @1 :ProcessorMessage;
}
