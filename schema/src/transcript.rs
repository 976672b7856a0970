//! Domain-separated hashing of structured data: the basis of plan ids and attestations.
//!
//! A transcript is a BIP340-style tagged SHA-256 (`SHA256(SHA256(tag) || SHA256(tag) || data)`)
//! over a sequence of labelled fields, each written as
//! `len(label) as u8 || label || len(value) as u64 LE || value`. Every field is
//! length-prefixed, so no two different sequences of fields hash the same bytes, and the tag
//! keeps hashes of one kind from ever equalling hashes of another.

use bitcoin::hashes::{sha256, Hash, HashEngine};

/// An open transcript. Fields are appended in a fixed order defined by each use.
pub(crate) struct Transcript(sha256::HashEngine);

impl Transcript {
    /// A transcript for one purpose, named by `tag`.
    pub(crate) fn new(tag: &str) -> Self {
        let tag_hash = sha256::Hash::hash(tag.as_bytes());
        let mut engine = sha256::HashEngine::default();
        engine.input(tag_hash.as_byte_array());
        engine.input(tag_hash.as_byte_array());
        Transcript(engine)
    }

    /// Appends one labelled field. Labels are short ASCII constants.
    pub(crate) fn append(&mut self, label: &'static str, value: &[u8]) {
        let label_len = u8::try_from(label.len()).unwrap_or(u8::MAX);
        self.0.input(&[label_len]);
        self.0.input(label.as_bytes());
        self.0.input(&(value.len() as u64).to_le_bytes());
        self.0.input(value);
    }

    /// The 32-byte hash of everything appended.
    pub(crate) fn finish(self) -> [u8; 32] {
        sha256::Hash::from_engine(self.0).to_byte_array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(tag: &str, fields: &[(&'static str, &[u8])]) -> [u8; 32] {
        let mut transcript = Transcript::new(tag);
        for (label, value) in fields {
            transcript.append(label, value);
        }
        transcript.finish()
    }

    #[test]
    fn field_boundaries_and_tags_matter() {
        let base = hash("t", &[("a", b"xy"), ("b", b"z")]);
        assert_ne!(base, hash("t", &[("a", b"x"), ("b", b"yz")]));
        assert_ne!(base, hash("u", &[("a", b"xy"), ("b", b"z")]));
        assert_ne!(base, hash("t", &[("b", b"z"), ("a", b"xy")]));
        assert_eq!(base, hash("t", &[("a", b"xy"), ("b", b"z")]));
    }

    #[test]
    fn matches_the_documented_construction() {
        // SHA256(SHA256("t") || SHA256("t") || 0x01 "a" 02 00.. "xy"), computed by hand.
        let tag = sha256::Hash::hash(b"t");
        let mut data = Vec::new();
        data.extend_from_slice(tag.as_byte_array());
        data.extend_from_slice(tag.as_byte_array());
        data.push(1);
        data.extend_from_slice(b"a");
        data.extend_from_slice(&2u64.to_le_bytes());
        data.extend_from_slice(b"xy");
        assert_eq!(
            hash("t", &[("a", b"xy")]),
            sha256::Hash::hash(&data).to_byte_array()
        );
    }
}
