//! Bitcoin Core's validation engine (`bitcoinkernel`) holding the regtest chainstate: every block
//! the node makes is submitted here, and counts only if the kernel connects it. The kernel has
//! no `invalidateblock`: the node reorganizes by rebuilding the kernel's chainstate from its own
//! block store along the chain it chose.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bitcoin::{consensus, hashes::Hash, Block, BlockHash};
use bitcoinkernel::{
    prelude::{BlockHashExt, BlockValidationStateExt},
    BlockValidationStateRef, ChainType, ChainstateManager, Context, ContextBuilder, ValidationMode,
};

/// The kernel could not be started or refused a block.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelFailure {
    /// Creating or rebuilding the chainstate failed.
    #[error("bitcoinkernel: {0}")]
    Setup(String),
    /// The block was not connected; the kernel's reason when it gave one.
    #[error("{0}")]
    Rejected(String),
}

/// The kernel's chainstate in one directory.
pub struct Kernel {
    // Dropped before the context it was made with.
    chainman: ChainstateManager,
    context: Context,
    dir: PathBuf,
    last_rejection: Arc<Mutex<Option<String>>>,
}

fn setup(error: impl std::fmt::Debug) -> KernelFailure {
    KernelFailure::Setup(format!("{error:?}"))
}

fn open_chainman(context: &Context, dir: &Path) -> Result<ChainstateManager, KernelFailure> {
    fs::create_dir_all(dir.join("blocks")).map_err(setup)?;
    let data = dir.to_str().ok_or_else(|| setup("datadir is not UTF-8"))?;
    let blocks = dir.join("blocks");
    let blocks = blocks
        .to_str()
        .ok_or_else(|| setup("datadir is not UTF-8"))?;
    ChainstateManager::new(context, data, blocks).map_err(setup)
}

impl Kernel {
    /// Opens (or creates) the regtest chainstate in `dir`.
    ///
    /// # Errors
    /// The kernel could not start.
    pub fn open(dir: &Path) -> Result<Self, KernelFailure> {
        let last_rejection = Arc::new(Mutex::new(None));
        let reported = Arc::clone(&last_rejection);
        let context = ContextBuilder::new()
            .chain_type(ChainType::Regtest)
            .with_block_checked_validation(
                move |block: bitcoinkernel::Block, state: BlockValidationStateRef<'_>| {
                    if state.mode() != ValidationMode::Valid {
                        if let Ok(mut slot) = reported.lock() {
                            *slot = Some(format!("block {}: {:?}", block.hash(), state.result()));
                        }
                    }
                },
            )
            .build()
            .map_err(setup)?;
        let chainman = open_chainman(&context, dir)?;
        Ok(Kernel {
            chainman,
            context,
            dir: dir.to_owned(),
            last_rejection,
        })
    }

    /// The kernel's tip.
    pub fn tip(&self) -> BlockHash {
        let bytes = self.chainman.active_chain().tip().block_hash().to_bytes();
        BlockHash::from_byte_array(bytes)
    }

    /// Submits a block extending the tip. It counts only if it became the tip: the kernel
    /// stores a block before connecting it, so "new block" alone does not mean valid.
    ///
    /// # Errors
    /// The kernel did not connect it.
    pub fn submit(&self, block: &Block) -> Result<(), KernelFailure> {
        if let Ok(mut slot) = self.last_rejection.lock() {
            *slot = None;
        }
        let kernel_block = bitcoinkernel::Block::new(&consensus::serialize(block))
            .map_err(|error| KernelFailure::Rejected(format!("{error:?}")))?;
        let result = self.chainman.process_block(&kernel_block);
        if self.tip() == block.block_hash() {
            return Ok(());
        }
        let reason = self
            .last_rejection
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or_else(|| format!("not connected ({result:?})"));
        Err(KernelFailure::Rejected(reason))
    }

    /// Replaces the chainstate with `blocks` (genesis excluded, in order) connected afresh.
    ///
    /// # Errors
    /// The chainstate could not be recreated, or a block was not connected.
    pub fn rebuild(&mut self, blocks: &[&Block]) -> Result<(), KernelFailure> {
        let scratch = self.dir.join("rebuild");
        let _ = fs::remove_dir_all(&scratch);
        // The old chainstate must be closed before its directory goes away: open a scratch one
        // first, then swap.
        let scratch_chainman = open_chainman(&self.context, &scratch)?;
        drop(std::mem::replace(&mut self.chainman, scratch_chainman));
        for entry in ["blocks", "chainstate"] {
            let path = self.dir.join(entry);
            if path.exists() {
                fs::remove_dir_all(&path).map_err(setup)?;
            }
        }
        let fresh = open_chainman(&self.context, &self.dir)?;
        drop(std::mem::replace(&mut self.chainman, fresh));
        let _ = fs::remove_dir_all(&scratch);
        for block in blocks {
            self.submit(block)?;
        }
        Ok(())
    }
}
