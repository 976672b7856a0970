//! Every block the kernel ever connected for this node, as files (`blocks/<seq>-<hash>.blk`,
//! consensus encoding), and the blocks marked invalid by `invalidateblock`. From these the node
//! chooses its chain on every start and after every `invalidateblock`/`reconsiderblock`: the
//! longest chain with no invalid block, the current one on a tie, else the first stored.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use bitcoin::{consensus, Block, BlockHash};

/// A stored block and where it stands.
struct Stored {
    block: Block,
    height: u32,
    seq: u64,
}

/// The block store.
pub struct BlockStore {
    dir: PathBuf,
    genesis: BlockHash,
    blocks: HashMap<BlockHash, Stored>,
    invalid: HashSet<BlockHash>,
    next_seq: u64,
}

const INVALID: &str = "invalid";

impl BlockStore {
    /// Opens the store in `dir`, reading every block in it.
    ///
    /// # Errors
    /// A file cannot be read or does not hold a block.
    pub fn open(dir: &Path, genesis: BlockHash) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut read = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let Some(seq) = name
                .strip_suffix(".blk")
                .and_then(|stem| stem.split('-').next())
                .and_then(|seq| seq.parse::<u64>().ok())
            else {
                continue;
            };
            let block: Block = consensus::deserialize(&fs::read(&path)?)
                .map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))?;
            read.push((seq, block));
        }
        read.sort_by_key(|(seq, _)| *seq);
        let mut store = BlockStore {
            dir: dir.to_owned(),
            genesis,
            blocks: HashMap::new(),
            invalid: HashSet::new(),
            next_seq: read.last().map(|(seq, _)| seq + 1).unwrap_or(0),
        };
        // Parents are stored before children (a block is stored once connected).
        for (seq, block) in read {
            if let Some(height) = store.height_of(&block.header.prev_blockhash) {
                store.blocks.insert(
                    block.block_hash(),
                    Stored {
                        block,
                        height: height + 1,
                        seq,
                    },
                );
            }
        }
        if let Ok(text) = fs::read_to_string(dir.join(INVALID)) {
            store.invalid = text.lines().filter_map(|line| line.parse().ok()).collect();
        }
        Ok(store)
    }

    fn height_of(&self, hash: &BlockHash) -> Option<u32> {
        if *hash == self.genesis {
            return Some(0);
        }
        self.blocks.get(hash).map(|stored| stored.height)
    }

    /// Whether the store holds the block.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// A stored block.
    pub fn block(&self, hash: &BlockHash) -> Option<&Block> {
        self.blocks.get(hash).map(|stored| &stored.block)
    }

    /// Stores a block the kernel connected, durably, before the node acts on it.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn save(&mut self, block: &Block) -> std::io::Result<()> {
        let hash = block.block_hash();
        let Some(parent) = self.height_of(&block.header.prev_blockhash) else {
            return Err(std::io::Error::other("parent not stored"));
        };
        let seq = self.next_seq;
        let path = self.dir.join(format!("{seq:010}-{hash}.blk"));
        let partial = path.with_extension("partial");
        fs::write(&partial, consensus::serialize(block))?;
        fs::File::open(&partial)?.sync_all()?;
        fs::rename(&partial, &path)?;
        self.next_seq += 1;
        self.blocks.insert(
            hash,
            Stored {
                block: block.clone(),
                height: parent + 1,
                seq,
            },
        );
        Ok(())
    }

    /// Marks a block invalid (`invalidateblock`) or valid again (`reconsiderblock`).
    ///
    /// # Errors
    /// The list could not be written.
    pub fn set_invalid(&mut self, hash: BlockHash, invalid: bool) -> std::io::Result<()> {
        if invalid {
            self.invalid.insert(hash);
        } else {
            self.invalid.remove(&hash);
        }
        let text: String = self
            .invalid
            .iter()
            .map(|hash| format!("{hash}\n"))
            .collect();
        fs::write(self.dir.join(INVALID), text)
    }

    fn valid(&self, mut hash: BlockHash) -> bool {
        while hash != self.genesis {
            if self.invalid.contains(&hash) {
                return false;
            }
            match self.blocks.get(&hash) {
                Some(stored) => hash = stored.block.header.prev_blockhash,
                None => return false,
            }
        }
        true
    }

    /// The chain to follow, as blocks after genesis in order: the longest with no invalid
    /// block; on a tie, the one ending at `current` if it is among them, else the first stored.
    pub fn best_chain(&self, current: BlockHash) -> Vec<&Block> {
        let mut best: Option<(&BlockHash, &Stored)> = None;
        for (hash, stored) in &self.blocks {
            if !self.valid(*hash) {
                continue;
            }
            let better = match best {
                None => true,
                Some((best_hash, best_stored)) => {
                    stored.height > best_stored.height
                        || (stored.height == best_stored.height
                            && *best_hash != current
                            && (*hash == current || stored.seq < best_stored.seq))
                }
            };
            if better {
                best = Some((hash, stored));
            }
        }
        let mut chain = Vec::new();
        let mut cursor = best.map(|(hash, _)| *hash);
        while let Some(hash) = cursor.filter(|hash| *hash != self.genesis) {
            match self.blocks.get(&hash) {
                Some(stored) => {
                    chain.push(&stored.block);
                    cursor = Some(stored.block.header.prev_blockhash);
                }
                None => break,
            }
        }
        chain.reverse();
        chain
    }
}
