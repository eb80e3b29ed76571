// SPDX-License-Identifier: Apache-2.0
//! A small HTTP/1.1 server (hyper) for the metrics endpoint and the web UI: GET only,
//! one handler per server, every response built in memory.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What a handler answers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn not_found() -> Reply {
        Reply {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(b"not found\n"),
        }
    }

    pub fn bad_request(msg: String) -> Reply {
        Reply {
            status: 400,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(msg + "\n"),
        }
    }
}

/// A request handler: (path, query string) → reply.
pub type Handler =
    Arc<dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Binds `addr` and serves `handler` until the task is dropped/aborted.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let sa: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad listen address `{addr}`: {e} (expected host:port)"),
        )
    })?;
    tokio::net::TcpListener::bind(sa).await
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let reply = if req.method() != Method::GET && req.method() != Method::HEAD {
                        Reply {
                            status: 405,
                            content_type: "text/plain; charset=utf-8",
                            body: Bytes::from_static(b"only GET\n"),
                        }
                    } else {
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        handler(path, query).await
                    };
                    let resp = Response::builder()
                        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK))
                        .header("content-type", reply.content_type)
                        .header("cache-control", "no-store")
                        .body(Full::new(reply.body))
                        .expect("valid response");
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Decodes `a=1&b=x%2Fy` into pairs (`+` is a space).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(
            query_pairs("pod=prod%2Fweb&x=a+b&flag"),
            vec![
                ("pod".into(), "prod/web".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(query_pairs("a=%"), vec![("a".into(), "%".into())]);
        assert_eq!(query_pairs("a=%4"), vec![("a".into(), "%4".into())]);
    }
}
