@0xef810cc8abce71a0;
# The link between a processor (the client) and its coordinator (the server), PROTOCOL.md
# section 6. Delivery is at least once in both directions; ids make it exactly once.

using Messages = import "messages.capnp";

interface CoordinatorGate {
  # The bootstrap capability. A processor names the validator it runs for and receives the link
  # for that validator. How the validator proves itself is refined with the link itself.
  login @0 (validator :Data, proof :Data) -> (link :CoordinatorLink);
}

interface CoordinatorLink {
  # Messages with ids greater than `after`, in id order, at most `max` of them, and no more
  # than fit together in one message's limit (schema::limits::MAX_MESSAGE_BYTES; always at
  # least one), so that the processor reads the answer within its limits. When there is none
  # the call waits up to `waitMillis` before answering with an empty list.
  next @0 (after :UInt64, max :UInt32, waitMillis :UInt32)
      -> (messages :List(Messages.CoordinatorEnvelope));

  # The processor has durably handled every message up to and including `id`.
  ack @1 (id :UInt64) -> ();

  # Deliver one outbound message. Returning means the coordinator stored it; the coordinator
  # drops an envelope whose id it already has.
  send @2 (envelope :Messages.ProcessorEnvelope) -> ();
}
