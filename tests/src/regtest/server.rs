//! The HTTP side of the node's JSON-RPC: basic authentication (user and password, or Core's
//! cookie `__cookie__:<hex>`), a bounded body, one request at a time against the node.

use std::{io::Read, net::SocketAddr, sync::Mutex};

use base64::Engine;

use super::{node::Node, rpc};

/// The largest request body read (Core's default is about 32 MB too).
const MAX_BODY: u64 = 32 * 1024 * 1024;

/// The JSON-RPC server.
pub struct RpcServer {
    server: tiny_http::Server,
    credentials: String,
}

impl RpcServer {
    /// Binds `address`; requests must authenticate as `user:password`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn bind(address: SocketAddr, user: &str, password: &str) -> std::io::Result<Self> {
        let server = telemetry::http_server(address)?;
        Ok(RpcServer {
            server,
            credentials: format!("{user}:{password}"),
        })
    }

    /// The bound address.
    pub fn address(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// A handle that makes `serve` return (for SIGTERM).
    pub fn unblock(&self) {
        self.server.unblock();
    }

    fn authorized(&self, request: &tiny_http::Request) -> bool {
        request
            .headers()
            .iter()
            .find(|header| header.field.equiv("Authorization"))
            .and_then(|header| header.value.as_str().strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            })
            .is_some_and(|decoded| decoded == self.credentials.as_bytes())
    }

    /// Answers requests until `stop` is called over RPC or `unblock` is.
    pub fn serve(&self, node: &Mutex<Node>) {
        for mut request in self.server.incoming_requests() {
            if !self.authorized(&request) {
                let mut response = tiny_http::Response::empty(401);
                if let Ok(header) = tiny_http::Header::from_bytes(
                    &b"WWW-Authenticate"[..],
                    &b"Basic realm=\"jsonrpc\""[..],
                ) {
                    response.add_header(header);
                }
                let _ = request.respond(response);
                continue;
            }
            if request.method() != &tiny_http::Method::Post {
                let _ = request.respond(
                    tiny_http::Response::from_string("JSONRPC server handles only POST requests")
                        .with_status_code(405),
                );
                continue;
            }
            let mut body = Vec::new();
            if request
                .as_reader()
                .take(MAX_BODY)
                .read_to_end(&mut body)
                .is_err()
            {
                let _ = request.respond(tiny_http::Response::empty(400));
                continue;
            }
            let answer = rpc::handle(node, &body);
            let mut response =
                tiny_http::Response::from_string(answer.body).with_status_code(answer.status);
            if let Ok(header) =
                tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            {
                response.add_header(header);
            }
            let _ = request.respond(response);
            if answer.stop {
                return;
            }
        }
    }
}
