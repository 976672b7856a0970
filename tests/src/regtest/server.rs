//! The HTTP side of the node's JSON-RPC: basic authentication (user and password, or Core's
//! cookie `__cookie__:<hex>`), a bounded body, one request at a time against the node. With
//! `--rest`, as Core's `-rest`, also Core's unauthenticated binary REST block endpoint
//! (`GET /rest/block/<hash>.bin`).

use std::{io::Read, net::SocketAddr, str::FromStr, sync::Mutex};

use base64::Engine;
use bitcoin::{consensus, BlockHash};

use super::{node::Node, rpc};

/// The largest request body read (Core's default is about 32 MB too).
const MAX_BODY: u64 = 32 * 1024 * 1024;

/// The JSON-RPC server.
pub struct RpcServer {
    server: tiny_http::Server,
    credentials: String,
    /// Whether the REST endpoint is served.
    rest: bool,
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
            rest: false,
        })
    }

    /// Serves Core's REST block endpoint too.
    #[must_use]
    pub fn with_rest(self) -> Self {
        RpcServer { rest: true, ..self }
    }

    /// A REST request's answer, if it is one (Core answers them before authentication, and
    /// only with `-rest`; without it, Core has no handler there and answers 404).
    fn rest_answer(
        &self,
        node: &Mutex<Node>,
        request: &tiny_http::Request,
    ) -> Option<tiny_http::ResponseBox> {
        let path = request.url().strip_prefix("/rest/")?;
        let text = |status: u16, message: String| {
            Some(
                tiny_http::Response::from_string(message)
                    .with_status_code(status)
                    .boxed(),
            )
        };
        if !self.rest {
            return text(404, String::new());
        }
        let Some(requested) = path.strip_prefix("block/") else {
            return text(404, String::new());
        };
        let Some(hash) = requested.strip_suffix(".bin") else {
            // Core also serves .hex and .json; the scanner reads only the binary form.
            return text(404, "output format not found (available: bin)".into());
        };
        let Ok(hash) = BlockHash::from_str(hash) else {
            return text(400, format!("Invalid hash: {hash}"));
        };
        let Ok(node) = node.lock() else {
            return text(500, "node state poisoned".into());
        };
        match node.stored_block(&hash) {
            Some(block) => {
                let mut response = tiny_http::Response::from_data(consensus::serialize(block));
                if let Ok(header) = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"application/octet-stream"[..],
                ) {
                    response.add_header(header);
                }
                Some(response.boxed())
            }
            None => text(404, format!("{hash} not found\r\n")),
        }
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
            if let Some(response) = self.rest_answer(node, &request) {
                let _ = request.respond(response);
                continue;
            }
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
