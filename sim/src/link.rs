//! The parts a simulated processor is made of: its node, its memory store, its enclave, its
//! end of the coordinator's queues, and the simulation's clock.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use scanner::{
    coordinate::link::{Inbound, LinkError},
    coordinate::parts::{Clock, CoordinatorLink, Parts},
    store::memory::MemoryStore,
};
use schema::{
    ids::{MessageId, Participant},
    messages::ProcessorEnvelope,
};

use crate::{chain::SimNode, coordinator::Coordinator, enclave::EnclaveHandle};

/// A simulated processor's parts.
#[derive(Debug)]
pub enum SimParts {}

impl Parts for SimParts {
    type Chain = SimNode;
    type Store = MemoryStore;
    type Enclave = EnclaveHandle;
    type Link = LinkHandle;
    type Clock = SimClock;
}

/// A validator's end of the coordinator's queues.
#[derive(Clone)]
pub struct LinkHandle {
    /// The coordinator.
    pub coordinator: Rc<RefCell<Coordinator>>,
    /// Whose end.
    pub validator: Participant,
}

impl CoordinatorLink for LinkHandle {
    async fn next(&self, after: MessageId, _wait: Duration) -> Result<Vec<Inbound>, LinkError> {
        self.coordinator.borrow().next(self.validator, after)
    }

    async fn ack(&self, id: MessageId) -> Result<(), LinkError> {
        self.coordinator.borrow_mut().ack(self.validator, id)
    }

    async fn send(&self, envelope: &ProcessorEnvelope) -> Result<(), LinkError> {
        self.coordinator
            .borrow_mut()
            .receive(self.validator, envelope)
    }
}

/// Simulated time: one second per step.
#[derive(Clone, Default)]
pub struct SimClock(pub Rc<Cell<u64>>);

impl Clock for SimClock {
    fn now(&self) -> Duration {
        Duration::from_secs(self.0.get())
    }
}
