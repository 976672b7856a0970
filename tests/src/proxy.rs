//! A man in the middle of the coordinator link, for tests: a TCP proxy that records both
//! directions of every connection, flips one byte on demand, or answers new connections with a
//! recorded session instead of reaching the coordinator.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::HarnessError;

/// Which direction a flip hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Processor to coordinator.
    Up,
    /// Coordinator to processor.
    Down,
}

/// One connection's bytes, as they arrived at the proxy.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// Processor to coordinator.
    pub up: Vec<u8>,
    /// Coordinator to processor.
    pub down: Vec<u8>,
    /// The processor ended its side (end of stream, or the connection closed).
    pub up_ended: bool,
}

#[derive(Default)]
struct ProxyState {
    flip: Option<Direction>,
    recordings: Vec<Recording>,
}

/// What the proxy does with a new connection.
#[derive(Clone)]
enum Mode {
    /// Forward to the coordinator.
    Forward(SocketAddr),
    /// Answer with these bytes and never reach the coordinator.
    Replay(Arc<Vec<u8>>),
}

/// The proxy, serving on a loopback port from its own threads.
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards every connection to `target`, recording it.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn forward(target: SocketAddr) -> Result<Self, HarnessError> {
        Self::start(Mode::Forward(target))
    }

    /// Answers every connection with `down` (a recorded session of the coordinator's), and
    /// records what the processor sends.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn replay(down: Vec<u8>) -> Result<Self, HarnessError> {
        Self::start(Mode::Replay(Arc::new(down)))
    }

    fn start(mode: Mode) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (serving, stopping) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || accept(&listener, &mode, &serving, &stopping))?;
        Ok(Proxy {
            address,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the processor connects instead of the coordinator.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Flips the last byte of the next chunk that travels `direction` (once).
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn flip_next(&self, direction: Direction) -> Result<(), HarnessError> {
        self.with(|shared| shared.flip = Some(direction))
    }

    /// Every connection's bytes so far.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn recordings(&self) -> Result<Vec<Recording>, HarnessError> {
        self.with(|shared| shared.recordings.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut ProxyState) -> T) -> Result<T, HarnessError> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| HarnessError::Failed("proxy state poisoned".into()))?;
        Ok(f(&mut shared))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept(listener: &TcpListener, mode: &Mode, shared: &Arc<Mutex<ProxyState>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((processor, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = processor.set_nonblocking(false);
        let index = match shared.lock() {
            Ok(mut shared) => {
                shared.recordings.push(Recording::default());
                shared.recordings.len() - 1
            }
            Err(_) => return,
        };
        match mode {
            Mode::Forward(target) => {
                let Ok(coordinator) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(processor_read), Ok(coordinator_read)) =
                    (processor.try_clone(), coordinator.try_clone())
                else {
                    continue;
                };
                copy(
                    processor_read,
                    Some(coordinator),
                    Direction::Up,
                    index,
                    shared,
                );
                copy(
                    coordinator_read,
                    Some(processor),
                    Direction::Down,
                    index,
                    shared,
                );
            }
            Mode::Replay(down) => {
                let Ok(mut answer) = processor.try_clone() else {
                    continue;
                };
                let down = Arc::clone(down);
                copy(processor, None, Direction::Up, index, shared);
                std::thread::spawn(move || {
                    let _ = answer.write_all(&down);
                });
            }
        }
    }
}

/// Copies `from` into `to` (or nowhere) on a thread, recording and flipping as the shared
/// state says; when either side ends, both are shut down.
fn copy(
    mut from: TcpStream,
    mut to: Option<TcpStream>,
    direction: Direction,
    index: usize,
    shared: &Arc<Mutex<ProxyState>>,
) {
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let len = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(len) => len,
            };
            let chunk = &mut buffer[..len];
            if let Ok(mut state) = shared.lock() {
                if let Some(recording) = state.recordings.get_mut(index) {
                    match direction {
                        Direction::Up => recording.up.extend_from_slice(chunk),
                        Direction::Down => recording.down.extend_from_slice(chunk),
                    }
                }
                if state.flip == Some(direction) {
                    state.flip = None;
                    if let Some(last) = chunk.last_mut() {
                        *last ^= 0x01;
                    }
                }
            }
            if let Some(to) = to.as_mut() {
                if to.write_all(chunk).is_err() {
                    break;
                }
            }
        }
        if direction == Direction::Up {
            if let Ok(mut state) = shared.lock() {
                if let Some(recording) = state.recordings.get_mut(index) {
                    recording.up_ended = true;
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        if let Some(to) = to {
            let _ = to.shutdown(Shutdown::Both);
        }
    });
}
