@0xb00f9f0fc756dce7;
# The scanner node's calls into the signer enclave, over a Unix socket (DESIGN.md section 2).
# Every call that changes signing state is idempotent or refused when repeated; a refusal
# carries a reason code the scanner logs and counts.

using Common = import "common.capnp";
using Messages = import "messages.capnp";

enum RefusalReason {
  malformed @0;                  # the request did not decode or broke a limit
  unknownKey @1;                 # no confirmed key pair matches the request's key
  unknownAttempt @2;             # no signing or key-gen state for this id and attempt
  attestationInvalid @3;         # a coordinator attestation does not verify
  planNotAcknowledged @4;        # the recomputed plan id is in no acknowledged set
  feeRateTooHigh @5;             # the fee rate is above the configured cap
  feeShareTooHigh @6;            # the fee is too large a share of the transaction
  inputAlreadySigned @7;         # an input was already signed into a different plan
  attemptAlreadyPreprocessed @8; # this (sign id, attempt) already produced a preprocess
  batchIdReused @9;              # a different batch with this batch id was already signed
  custodyUnavailable @10;        # the HSM could not seal or unseal a key share
  planIdMismatch @11;            # the plan does not hash to the id it is signed under
  unbuildable @12;               # no transaction can be built from the plan
  batchMismatch @13;             # the batch session does not name this batch
  historyUnavailable @14;        # the policy database could not be read (fails closed)
  conflictingRepeat @15;         # a signing step asked again with other messages than before
  setShapeRefused @16;           # key generation parameters the protocol does not accept
  tooManySessions @17;           # as many sessions of this kind are open as are allowed
  staleAttempt @18;              # a key generation attempt at or below one already started
  batchOutOfOrder @19;           # a Batch id other than the next one to sign
  wrongNetwork @20;              # a request for a network this enclave does not sign for
  batchAhead @21;                # a new Batch id more than BATCH_WINDOW past the last one Serai
                                 # is attested to have included; may pass once a later one is
  replacementMismatch @22;       # a replacement is not the plan it names at another fee rate
  replacementUnderbids @23;      # a replacement does not outbid its original (BIP125)
  replacementDropsPayment @24;   # at its higher fee a payment of the original falls below dust
  reshareFailed @25;             # a share repair or refresh does not fit the key, or its result
                                 # does not check out against the verification shares
  notInSet @26;                  # no key pair of the set was generated here: a set this
                                 # validator is not in (it leaves with a rotation)
}

struct Refusal {
  reason @0 :RefusalReason;
  detail @1 :Text; # for logs; never contains secret material
}

struct BytesResult {
  union {
    ok @0 :Data;
    refused @1 :Refusal;
  }
}

struct KeyGenResult {
  union {
    # The messages the enclave wants sent to the coordinator, in order.
    ok @0 :List(Messages.KeyGenFromProcessor);
    refused @1 :Refusal;
  }
}

struct UnitResult {
  union {
    ok @0 :Void;
    refused @1 :Refusal;
  }
}

struct BatchResult {
  union {
    ok @0 :Common.SignedBatch;
    refused @1 :Refusal;
  }
}

struct Status {
  keys @0 :List(Common.KeyPair); # confirmed key pairs the enclave can sign with
  pendingKeyGens @1 :UInt32;
  acknowledgedPlans @2 :UInt64;
}

interface Signer {
  status @0 () -> (status :Status);

  keyGen @1 (message :Messages.KeyGenToProcessor) -> (result :KeyGenResult);
  confirmKeyPair @2 (set :Common.ValidatorSet, keyPair :Common.KeyPair) -> (result :UnitResult);

  acknowledgePlans @3 (acknowledged :Messages.PlansAcknowledged) -> (result :UnitResult);

  # Transaction signing: the enclave recomputes the plan id (which covers the fee rate) and
  # rebuilds the transaction from `plan` before any policy check.
  preprocessPlan @4 (id :Common.SignId, plan :Common.Plan) -> (result :BytesResult);
  sharePlan @5 (id :Common.SignId, preprocesses :List(Common.ParticipantData)) -> (result :BytesResult);
  completePlan @6 (id :Common.SignId, shares :List(Common.ParticipantData)) -> (result :BytesResult);

  # Batch signing, with the batch key.
  preprocessBatch @7 (id :Common.SignId, batch :Common.Batch) -> (result :BytesResult);
  shareBatch @8 (id :Common.SignId, preprocesses :List(Common.ParticipantData)) -> (result :BytesResult);
  completeBatch @9 (id :Common.SignId, shares :List(Common.ParticipantData)) -> (result :BatchResult);

  # Serai included this Batch, as the coordinator attests: the evidence that moves the window
  # of Batch ids the enclave preprocesses new content for.
  batchIncluded @10 (batch :Common.SignedBatch, attestation :Data) -> (result :UnitResult);
}
