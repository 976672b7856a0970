//! The coordinator link's security, shared by both ends (`docs/protocol.md`, "The coordinator
//! link"):
//!
//! - `identity`: the X25519 link keys each end holds, and their public halves as operators pin
//!   them;
//! - `channel`: the Noise XX handshake that authenticates both ends before either reads a
//!   message, and the encrypted, authenticated byte stream Cap'n Proto then runs over;
//! - `signed`: the coordinator's signature on each queued message, which the processor checks
//!   whatever the transport, so a message altered or replayed at rest is refused.

pub mod channel;
pub mod identity;
pub mod signed;
