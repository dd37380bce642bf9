//! HTTP/1.1 for the JSON API: `POST /v1/authorizations` on keep-alive
//! connections, pipelined up to `--in-flight` deep (responses come back in
//! order, so the n-th response answers the n-th request), and the admin
//! endpoint's per-stage latencies.
//!
//! A small client of our own rather than a general one: a load tester must
//! pipeline, count every byte-level failure as its own kind of error and
//! stay out of the measurement's way; it needs only `http://`, fixed
//! headers and `Content-Length` or chunked bodies.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connection::{Dialogue, Reply};
use crate::stats::{ErrorReason, Outcome};
use crate::workload::{Plan, Workload};

/// Response heads larger than this are refused (the connection is closed).
const HEAD_MAX: usize = 64 * 1024;
/// Bodies larger than this are refused.
const BODY_MAX: usize = 4 * 1024 * 1024;

/// An `http://host:port/path` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, for connecting and the `Host` header.
    pub authority: String,
    /// Starts with `/`; empty paths become `/`.
    pub path: String,
    /// `https://`: spoken over TLS.
    pub tls: bool,
}

impl HttpUrl {
    /// Parses `http[s]://host[:port][/path]`; the port defaults to 80
    /// (443 for https).
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let (rest, tls) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("`{text}` is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        } else {
            return Err(format!("`{text}` has a bad port"));
        };
        Ok(HttpUrl {
            authority,
            path: path.to_owned(),
            tls,
        })
    }

    /// This URL with `path` in place of its own path.
    pub fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl {
            authority: self.authority.clone(),
            path: path.to_owned(),
            tls: self.tls,
        }
    }
}

/// One whole response at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub body: Cow<'a, [u8]>,
    /// Bytes the response took in the buffer.
    pub used: usize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses the response at the front of `buf`: `Ok(None)` until it is
/// whole, `Err` if it can never be (the connection is then closed).
pub fn parse_response(buf: &[u8]) -> Result<Option<Response<'_>>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > HEAD_MAX {
            Err("response head over 64 KiB".to_owned())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "bad Content-Length".to_owned())?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body_start = head_end + 4;
    let rest = &buf[body_start..];
    if chunked {
        return parse_chunked(rest).map(|parsed| {
            parsed.map(|(body, used)| Response {
                status,
                body: Cow::Owned(body),
                used: body_start + used,
            })
        });
    }
    let length = match content_length {
        Some(length) => length,
        // 1xx, 204 and 304 have no body; anything else without a length
        // would run to the end of the connection, which pipelining forbids.
        None if status < 200 || status == 204 || status == 304 => 0,
        None => return Err("response without Content-Length".to_owned()),
    };
    if length > BODY_MAX {
        return Err("response body over 4 MiB".to_owned());
    }
    Ok(rest.get(..length).map(|body| Response {
        status,
        body: Cow::Borrowed(body),
        used: body_start + length,
    }))
}

fn parse_chunked(mut rest: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        if body.len() + size > BODY_MAX {
            return Err("response body over 4 MiB".to_owned());
        }
        let data_start = line_end + 2;
        if size == 0 {
            // No trailers are sent by the servers we talk to: just CRLF.
            return Ok(rest
                .get(data_start..data_start + 2)
                .map(|_| (body, total - rest.len() + data_start + 2)));
        }
        let Some(data) = rest.get(data_start..data_start + size) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        let Some(next) = rest.get(data_start + size + 2..) else {
            return Ok(None);
        };
        rest = next;
    }
}

/// The fields of an authorization reply the load tester reads.
#[derive(Debug, Deserialize)]
struct AuthorizationReply {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    response_code: Option<String>,
    #[serde(default)]
    auth_code: Option<String>,
}

/// The HTTP side of one connection.
#[derive(Debug)]
pub struct HttpDialogue {
    url: Arc<HttpUrl>,
    api_key: String,
    workload: Arc<Workload>,
    terminal: String,
    /// Requests sent and responses read on the current connection.
    sent: u64,
    read: u64,
    body: String,
    ack_log: bool,
    /// With `--idempotency-keys`: this connection's prefix of the keys, and
    /// how many it has sent (never reset, so no key is sent twice).
    idempotency: Option<(String, u64)>,
}

impl HttpDialogue {
    /// The dialogue of connection `connection`.
    pub fn new(
        url: Arc<HttpUrl>,
        api_key: String,
        workload: Arc<Workload>,
        tag: u64,
        connection: u64,
        ack_log: bool,
        idempotency_keys: bool,
    ) -> HttpDialogue {
        let terminal = String::from_utf8_lossy(&crate::iso::terminal_id(tag, connection)).into();
        HttpDialogue {
            url,
            api_key,
            workload,
            terminal,
            sent: 0,
            read: 0,
            body: String::with_capacity(256),
            ack_log,
            idempotency: idempotency_keys.then(|| (format!("lt-{tag:x}-{connection}-"), 0)),
        }
    }
}

impl Dialogue for HttpDialogue {
    fn write_request(
        &mut self,
        _index: u64,
        plan: &Plan,
        out: &mut Vec<u8>,
    ) -> Result<u64, ErrorReason> {
        // The JSON API authorizes only; the CLI refuses other mixes.
        let pan = self.workload.pan(plan.card, plan.invalid_card);
        let expiry = self.workload.expiry(plan.card);
        let merchant = self
            .workload
            .merchants
            .get(plan.merchant)
            .map_or("ACME0000001", |m| m.trim_end());
        self.body.clear();
        let _ = write!(
            self.body,
            r#"{{"pan":"{}","expiry":"{}","amount":{},"currency":"{:03}","merchant_id":"{}","terminal_id":"{}","mcc":"{}"}}"#,
            String::from_utf8_lossy(&pan),
            String::from_utf8_lossy(&expiry),
            plan.amount,
            self.workload.currency,
            merchant,
            self.terminal,
            self.workload.mcc,
        );
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
            self.url.path, self.url.authority, self.api_key,
        );
        if let Some((prefix, keyed)) = &mut self.idempotency {
            let _ = write!(out, "Idempotency-Key: {prefix}{keyed}\r\n");
            *keyed += 1;
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        );
        let key = self.sent;
        self.sent += 1;
        Ok(key)
    }

    fn read_response(
        &mut self,
        input: &[u8],
        acks: &mut String,
    ) -> Result<Option<(usize, Reply)>, String> {
        let Some(response) = parse_response(input)? else {
            return Ok(None);
        };
        let key = self.read;
        self.read += 1;
        if !(200..300).contains(&response.status) {
            return Ok(Some((
                response.used,
                Reply::Matched {
                    key,
                    outcome: Outcome::Http(response.status),
                },
            )));
        }
        let Ok(reply) = serde_json::from_slice::<AuthorizationReply>(&response.body) else {
            return Ok(Some((response.used, Reply::Undecodable)));
        };
        let outcome = match reply.response_code.as_deref().map(str::as_bytes) {
            Some(&[a, b]) => Outcome::Code([a, b]),
            _ => Outcome::NoCode,
        };
        if self.ack_log && outcome.is_approved() {
            let _ = writeln!(
                acks,
                "- {} {} {}",
                self.terminal,
                reply.id.as_deref().unwrap_or("-"),
                reply.auth_code.as_deref().unwrap_or("-")
            );
        }
        Ok(Some((response.used, Reply::Matched { key, outcome })))
    }

    fn reconnected(&mut self) {
        self.sent = 0;
        self.read = 0;
    }
}

/// One stage of the switch's `GET /admin/latency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLatency {
    pub channel: String,
    pub stage: String,
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Deserialize)]
struct AdminLatency {
    stages: Vec<StageLatency>,
}

/// Fetches the switch's per-stage latencies from `GET /admin/latency` at
/// `base` (a path other than `/` is used as given).
pub fn fetch_admin_latency(base: &HttpUrl, key: &str) -> Result<Vec<StageLatency>, String> {
    let url = if base.path == "/" {
        base.with_path("/admin/latency")
    } else {
        base.clone()
    };
    let body = get(&url, key)?;
    let latency: AdminLatency =
        serde_json::from_slice(&body).map_err(|e| format!("not the latency JSON: {e}"))?;
    Ok(latency.stages)
}

/// `GET url` with the bearer `key`; the body of a 200.
pub fn get(url: &HttpUrl, key: &str) -> Result<Vec<u8>, String> {
    if url.tls {
        return Err(
            "--admin over https is not supported; give the admin page's http:// URL".to_owned(),
        );
    }
    let timeout = Duration::from_secs(5);
    let address = url
        .authority
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host has no address")?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // The server closes after answering; a read timeout with a whole
    // response buffered is fine too.
    let _ = stream
        .take(u64::try_from(BODY_MAX).unwrap_or(u64::MAX))
        .read_to_end(&mut raw);
    let response = parse_response(&raw)?.ok_or("the response was cut short")?;
    if response.status != 200 {
        return Err(format!("answered HTTP {}", response.status));
    }
    Ok(response.body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:8080").unwrap(),
            HttpUrl {
                authority: "127.0.0.1:8080".to_owned(),
                path: "/".to_owned(),
                tls: false,
            }
        );
        assert_eq!(
            HttpUrl::parse("http://localhost/v1/authorizations").unwrap(),
            HttpUrl {
                authority: "localhost:80".to_owned(),
                path: "/v1/authorizations".to_owned(),
                tls: false,
            }
        );
        let https = HttpUrl::parse("https://switch.example").unwrap();
        assert_eq!(https.authority, "switch.example:443");
        assert!(https.tls);
        assert!(HttpUrl::parse("ftp://x").is_err());
        assert!(HttpUrl::parse("127.0.0.1:80").is_err());
        assert!(HttpUrl::parse("http://").is_err());
        assert!(HttpUrl::parse("http://h:x").is_err());
    }

    #[test]
    fn responses_parse_whole_or_not_at_all() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1";
        let r = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(&r.body[..], b"{}");
        assert_eq!(&raw[r.used..], b"HTTP/1.1");
        assert_eq!(parse_response(&raw[..30]), Ok(None));
        assert_eq!(parse_response(&raw[..r.used - 1]), Ok(None));

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(chunked).unwrap().unwrap();
        assert_eq!(&r.body[..], b"abcde");
        assert_eq!(r.used, chunked.len());
        assert_eq!(parse_response(&chunked[..chunked.len() - 1]), Ok(None));

        assert!(parse_response(b"SMTP 220\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        let no_body = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(no_body.body.is_empty());
    }
}
