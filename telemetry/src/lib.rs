//! What the scanner node and the signer enclave share for their operators: Prometheus text
//! served on `GET /metrics` from a thread of its own, log lines on stderr at the level
//! `RUST_LOG` names, and the one line an error ends a command with.

use std::{net::SocketAddr, str::FromStr, thread};

use prometheus::{Encoder, Registry, TextEncoder};
use thiserror::Error;

/// The metrics endpoint could not be served.
#[derive(Debug, Error)]
#[error("cannot serve metrics on {address}: {reason}")]
pub struct ServeError {
    /// The address asked for.
    pub address: SocketAddr,
    /// Why.
    pub reason: String,
}

/// The Prometheus text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut text = Vec::new();
    // Encoding into a Vec fails only for a metric without a value, which a registry never
    // gathers: Prometheus then sees an empty answer.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut text);
    text
}

/// An HTTP server on `address` whose connections have Nagle's algorithm off (TCP_NODELAY on
/// the listener, inherited by accepted sockets): tiny_http writes a response in more than one
/// segment, and with Nagle on each answer waited for the client's delayed ACK (about 40 ms).
///
/// # Errors
/// The address cannot be bound.
pub fn http_server(address: SocketAddr) -> std::io::Result<tiny_http::Server> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(128)?;
    let listener: std::net::TcpListener = socket.into();
    tiny_http::Server::from_listener(listener, None).map_err(std::io::Error::other)
}

/// Serves `GET /metrics` for `registry` on `address` (port 0 picks one); returns the bound
/// address. Anything else is answered 404.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(registry: Registry, address: SocketAddr) -> Result<SocketAddr, ServeError> {
    let failed = |reason: String| ServeError { address, reason };
    let server = http_server(address).map_err(|error| failed(error.to_string()))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| failed("not an IP listener".into()))?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let mut response = tiny_http::Response::from_data(render(&registry));
                    if let Ok(header) = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4"[..],
                    ) {
                        response.add_header(header);
                    }
                    response
                } else {
                    tiny_http::Response::from_data(b"not found\n".to_vec()).with_status_code(404)
                };
                if let Err(error) = request.respond(response) {
                    tracing::debug!(%error, "metrics response not delivered");
                }
            }
        })
        .map_err(|error| failed(error.to_string()))?;
    Ok(bound)
}

/// Calls `then` from a thread of its own once the process receives SIGTERM or SIGINT (Ctrl-C),
/// for programs whose main loop is not async.
///
/// # Errors
/// The thread or its runtime could not be started.
pub fn on_shutdown_signal(then: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(shutdown_signal());
            then();
        })
        .map(|_| ())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), inside a tokio runtime.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// Log lines on stderr, without colour; `RUST_LOG` may name a level (error, warn, info, debug,
/// trace), info otherwise.
pub fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|level| tracing::Level::from_str(&level).ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .init();
}

/// An error and its causes on one line, `outer: inner: ...`, each cause once: a level whose
/// message already ends with its cause (`"...: {0}"`) is not followed by that cause again.
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut report = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !report.ends_with(&text) {
            report.push_str(": ");
            report.push_str(&text);
        }
        cause = next.source();
    }
    report
}

#[cfg(test)]
mod error_report_tests {
    use super::*;

    #[derive(Debug, Error)]
    enum Inner {
        #[error("file too short")]
        Short,
    }

    #[derive(Debug, Error)]
    enum Middle {
        #[error("module could not be loaded: {0}")]
        Load(#[from] Inner),
    }

    #[derive(Debug, Error)]
    #[error("opening the token")]
    struct Outer(#[source] Middle);

    #[test]
    fn each_cause_is_printed_once() {
        let error = Outer(Middle::Load(Inner::Short));
        assert_eq!(
            error_report(&error),
            "opening the token: module could not be loaded: file too short"
        );
        // A cause whose words happen to appear earlier, not as the end of its parent's
        // message, is still printed.
        let error = MentionsItsCause(Inner::Short);
        assert_eq!(
            error_report(&error),
            "file too short to open: file too short"
        );
    }

    #[derive(Debug, Error)]
    #[error("file too short to open")]
    struct MentionsItsCause(#[source] Inner);
}
