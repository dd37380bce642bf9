//! `switch iso decode` and `switch iso encode`: ISO 8583 for people.
//!
//! Decode prints a message's fields as JSON under the dialect's masks, so its
//! output is safe to paste into a ticket: the PAN shows its first six and last
//! four digits, track data and PIN blocks only their length, and DE55 its EMV
//! tags with card-identifying values hidden. Encode reads the same JSON shape
//! (with clear values) and prints hex.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use protocol::encoding::{from_hex, to_hex};
use protocol::spec::Mask;
use protocol::tlv::{self, Tag, Tlv, Value};
use protocol::{Message, Mti, Spec};
use serde_json::{Map, json};

#[derive(Debug, Subcommand)]
pub enum IsoCommand {
    /// Hex in (a file or stdin), the fields as JSON out, card data masked.
    Decode(DecodeArgs),
    /// JSON in (a file or stdin), hex out.
    Encode(EncodeArgs),
    /// Send one message (JSON as `encode` reads it) to a switch and print the
    /// answer as `decode` does.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct DialectArgs {
    /// A built-in dialect (iso87, iso87-hex) or a spec file.
    #[arg(long, default_value = "iso87", value_name = "NAME|FILE")]
    spec: String,
    /// The message is framed: it starts with the dialect's length header.
    #[arg(long)]
    framed: bool,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    dialect: DialectArgs,
    /// A file of hex (whitespace and `#` comment lines ignored); stdin if absent or `-`.
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    dialect: DialectArgs,
    /// A JSON file as `decode` prints it, with clear values; stdin if absent or `-`.
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// A built-in dialect (iso87, iso87-hex) or a spec file.
    #[arg(long, default_value = "iso87", value_name = "NAME|FILE")]
    spec: String,
    /// The switch's ISO 8583 listener.
    #[arg(long, default_value = "127.0.0.1:8583", value_name = "HOST:PORT")]
    target: String,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
    /// Speak TLS 1.2/1.3 to a `[iso.tls]` listener, trusting this CA (PEM).
    #[arg(long, value_name = "FILE.pem")]
    tls_ca: Option<PathBuf>,
    /// The acquirer's client certificate chain (PEM), for mutual TLS.
    #[arg(
        long,
        value_name = "FILE.pem",
        requires = "tls_key",
        requires = "tls_ca"
    )]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE.pem", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name the switch's certificate must carry [default: the target's host].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// The message as JSON; stdin if absent or `-`.
    file: Option<PathBuf>,
}

/// A connection to the switch, plain or TLS.
trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

/// The rustls client for `--tls-ca` (and a client certificate).
fn tls_client(args: &SendArgs, ca: &PathBuf) -> anyhow::Result<rustls::ClientConnection> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let certificates =
        |flag: &str, path: &PathBuf| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| anyhow::anyhow!("--{flag}: {}: {e}", path.display()))?;
            if certificates.is_empty() {
                bail!("--{flag}: {}: no PEM certificate in it", path.display());
            }
            Ok(certificates)
        };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates("tls-ca", ca)? {
        roots
            .add(certificate)
            .map_err(|e| anyhow::anyhow!("--tls-ca: {}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::ingress::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow::anyhow!("--tls-key: {}: no usable private key: {e}", key.display())
            })?;
            builder
                .with_client_auth_cert(certificates("tls-cert", cert)?, private_key)
                .context("--tls-cert and --tls-key do not go together")?
        }
        _ => builder.with_no_client_auth(),
    };
    let host = args
        .target
        .rsplit_once(':')
        .map_or(args.target.as_str(), |(host, _)| host);
    let name = args.tls_server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| anyhow::anyhow!("--tls-server-name: `{name}` is not a host name"))?;
    Ok(rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        server_name,
    )?)
}

pub fn run(command: IsoCommand) -> anyhow::Result<()> {
    match command {
        IsoCommand::Decode(args) => decode(args),
        IsoCommand::Encode(args) => encode(args),
        IsoCommand::Send(args) => send(args),
    }
}

fn send(args: SendArgs) -> anyhow::Result<()> {
    use std::net::TcpStream;
    use std::time::Duration;

    let spec = Spec::resolve(&args.spec)?;
    let input: serde_json::Value =
        serde_json::from_str(&read_input(args.file.as_ref())?).context("input is not JSON")?;
    let message = message_from_json(&spec, &input)?;
    let mut frame = Vec::new();
    message.encode_frame(&spec, &mut frame)?;

    let tcp = TcpStream::connect(&args.target)
        .with_context(|| format!("{}: cannot connect", args.target))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut stream: Box<dyn Connection> = match &args.tls_ca {
        // The handshake happens with the first write; a refused client
        // certificate shows there or at the first read.
        Some(ca) => Box::new(rustls::StreamOwned::new(tls_client(&args, ca)?, tcp)),
        None => Box::new(tcp),
    };
    stream
        .write_all(&frame)
        .and_then(|()| stream.flush())
        .with_context(|| format!("{}: cannot send", args.target))?;

    // Read until the buffer holds one whole frame.
    let framing = spec.framing();
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let payload = loop {
        if let Some((payload, _)) = framing.split(&buffer)? {
            break payload.to_vec();
        }
        let read = stream
            .read(&mut chunk)
            .with_context(|| format!("{}: no answer within {} ms", args.target, args.timeout_ms))?;
        if read == 0 {
            bail!(
                "{}: the switch closed the connection without answering",
                args.target
            );
        }
        buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
    };
    let answer = Message::decode(&spec, &payload).context("the answer")?;
    write_stdout(&serde_json::to_string_pretty(&message_json(
        &spec, &answer,
    ))?)
}

fn read_input(file: Option<&PathBuf>) -> anyhow::Result<String> {
    match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot be read", path.display())),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("stdin cannot be read")?;
            Ok(text)
        }
    }
}

fn hex_input(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    if digits.is_empty() {
        bail!("input holds no hex");
    }
    if let Some(position) = digits.find(|c: char| !c.is_ascii_hexdigit()) {
        bail!(
            "input is not hex: character {} is not a hex digit",
            position + 1
        );
    }
    from_hex(&digits).ok_or_else(|| anyhow!("input is not hex: an odd number of digits"))
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("stdout cannot be written")
}

fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let spec = Spec::resolve(&args.dialect.spec)?;
    let bytes = hex_input(&read_input(args.file.as_ref())?)?;
    let payload = if args.dialect.framed {
        let (payload, used) = spec.framing().split(&bytes)?.ok_or_else(|| {
            anyhow!("the frame is incomplete: its length header asks for more bytes than given")
        })?;
        if used != bytes.len() {
            bail!("{} bytes follow the frame", bytes.len() - used);
        }
        payload
    } else {
        &bytes
    };
    let message = Message::decode(&spec, payload)?;
    let json = message_json(&spec, &message);
    write_stdout(&serde_json::to_string_pretty(&json)?)
}

fn message_json(spec: &Spec, message: &Message) -> serde_json::Value {
    let mut fields = Map::new();
    for (number, shown) in message.masked_fields(spec) {
        let field = spec.field(number);
        let value = match (field.map(|f| f.mask), message.get(number)) {
            (Some(Mask::Icc), Some(bytes)) => match tlv::parse(bytes) {
                Ok(items) => tlv_json(&items),
                Err(_) => json!(shown),
            },
            (Some(Mask::None), Some(bytes)) if field.is_some_and(|f| !f.class.is_text()) => {
                json!(to_hex(bytes))
            }
            _ => json!(shown),
        };
        fields.insert(number.to_string(), value);
    }
    let mut json = Map::new();
    json.insert("dialect".to_owned(), json!(spec.name()));
    json.insert("mti".to_owned(), json!(message.mti().as_str()));
    if let Some(header) = message.header() {
        json.insert("header".to_owned(), json!(to_hex(header)));
    }
    json.insert("fields".to_owned(), serde_json::Value::Object(fields));
    serde_json::Value::Object(json)
}

fn tlv_json(items: &[Tlv]) -> serde_json::Value {
    items
        .iter()
        .map(|item| match &item.value {
            Value::Primitive(bytes) if item.tag.is_sensitive() => {
                json!({ "tag": item.tag.to_string(), "redacted_bytes": bytes.len() })
            }
            Value::Primitive(bytes) => {
                json!({ "tag": item.tag.to_string(), "value": to_hex(bytes) })
            }
            Value::Constructed(children) => {
                json!({ "tag": item.tag.to_string(), "items": tlv_json(children) })
            }
        })
        .collect()
}

fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let spec = Spec::resolve(&args.dialect.spec)?;
    let input: serde_json::Value =
        serde_json::from_str(&read_input(args.file.as_ref())?).context("input is not JSON")?;
    let message = message_from_json(&spec, &input)?;
    let mut out = Vec::new();
    if args.dialect.framed {
        message.encode_frame(&spec, &mut out)?;
    } else {
        message.encode(&spec, &mut out)?;
    }
    write_stdout(&to_hex(&out))
}

fn message_from_json(spec: &Spec, input: &serde_json::Value) -> anyhow::Result<Message> {
    let mti = input
        .get("mti")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow!("mti: missing or not a string"))?;
    let mti = Mti::parse(mti.as_bytes()).ok_or_else(|| anyhow!("mti: must be 4 digits"))?;
    let mut message = Message::new(mti);
    if let Some(header) = input.get("header") {
        let header = header
            .as_str()
            .and_then(from_hex)
            .ok_or_else(|| anyhow!("header: must be a hex string"))?;
        message.set_header(&header);
    }
    let fields = input
        .get("fields")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| anyhow!("fields: missing or not an object"))?;
    for (key, value) in fields {
        let number: u8 = key
            .parse()
            .ok()
            .filter(|n| (2..=128).contains(n))
            .ok_or_else(|| anyhow!("fields.{key}: not a data element number from 2 to 128"))?;
        let field = spec
            .field(number)
            .ok_or_else(|| anyhow!("field {number}: dialect {} does not define it", spec.name()))?;
        let bytes = match value {
            serde_json::Value::String(text) if field.class.is_text() => text.as_bytes().to_vec(),
            serde_json::Value::String(text) => from_hex(text)
                .ok_or_else(|| anyhow!("field {number}: a binary field is written as hex"))?,
            serde_json::Value::Array(items) if field.mask == Mask::Icc => {
                let items = tlv_from_json(items).with_context(|| format!("field {number}"))?;
                let mut bytes = Vec::new();
                tlv::write_all(&items, &mut bytes);
                bytes
            }
            _ => bail!("field {number}: must be a string"),
        };
        message.set(number, bytes);
    }
    Ok(message)
}

fn tlv_from_json(items: &[serde_json::Value]) -> anyhow::Result<Vec<Tlv>> {
    items
        .iter()
        .map(|item| {
            let tag_hex = item
                .get("tag")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let tag = from_hex(tag_hex)
                .and_then(|bytes| Tag::new(&bytes))
                .ok_or_else(|| anyhow!("EMV tag `{tag_hex}` is not a BER-TLV tag in hex"))?;
            if let Some(children) = item.get("items").and_then(serde_json::Value::as_array) {
                return Ok(Tlv::constructed(tag, tlv_from_json(children)?));
            }
            let value = item
                .get("value")
                .and_then(serde_json::Value::as_str)
                .and_then(from_hex)
                .ok_or_else(|| {
                    anyhow!(
                        "EMV tag {tag}: `value` must be hex (redacted values cannot be encoded)"
                    )
                })?;
            Ok(Tlv::primitive(tag, value))
        })
        .collect()
}
