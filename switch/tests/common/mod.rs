//! A switch started for a test: its own data directory, free ports, the
//! shipped development keys, and helpers that speak raw ISO 8583 bytes and
//! raw HTTP/1.1 to it, as an acquirer and a web client would.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{Message, Mti, Spec};

pub mod journal;
pub mod scan;

/// A test configuration: dev mode, small limits a test can reach.
pub const CONFIG: &str = r#"
mode = "dev"
data_dir = "unused"

[iso]
listen = "127.0.0.1:0"
spec = "iso87"
connections_max = 16
in_flight_max = 32
idle_timeout_ms = 30000

[http]
listen = "127.0.0.1:0"
body_bytes_max = 4096

[vault]
tokenization_key = "dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
active_key_id = 1
[vault.encryption_keys]
1 = "dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

[shards]
count = 2
mailbox_capacity = 1024

[rules]
amount_max = 1000000
blocked_bins = [{ from = "400000", to = "400099" }]

[card_limits]
per_minute = { count_max = 5, amount_max = 200000 }
per_day = { count_max = 100, amount_max = 1000000 }

[admin]
api_key_sha256 = "df76ff796f70d2c9cb055ea6280553caa27eda26b70e01082c160de75a05a4a9"

[merchants.ACME0000001]
api_key_sha256 = "c0b25ce7613e713a8149047fa3a32d050b46602e7231a0eb46e83883823f7b57"
amount_max_per_transaction = 500000

[merchants.BISTRO00001]
api_key_sha256 = "55604055569451644cb17df68b8b3e78fdc69f215f581db8450453c2095521f4"
amount_max_per_transaction = 20000
allowed_mccs = ["5812", "5814"]
"#;

pub const ACME_KEY: &str = "dev-merchant-key-acme";
pub const BISTRO_KEY: &str = "dev-merchant-key-bistro";
pub const ADMIN_KEY: &str = "dev-admin-key";

/// A running switch process.
pub struct TestSwitch {
    child: Child,
    pub iso: SocketAddr,
    /// The ISO 8583 mutual-TLS listener, when the configuration has `[iso.tls]`.
    pub iso_tls: Option<SocketAddr>,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
    /// Everything the switch wrote to stderr (its logs), for leak scans.
    pub logs: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

/// `switch serve` with `config_file` and `data_dir`, on ports the system
/// picks.
pub fn serve_command(config_file: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switch"));
    command
        .args(["serve", "--config"])
        .arg(config_file)
        .args([
            "--iso-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir);
    command
}

impl TestSwitch {
    pub fn start() -> TestSwitch {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut switch = TestSwitch::start_in(dir.path(), &data_dir, CONFIG);
        switch._dir = Some(dir);
        switch
    }

    pub fn start_in(dir: &Path, data_dir: &Path, config: &str) -> TestSwitch {
        TestSwitch::start_in_with_env(dir, data_dir, config, &[])
    }

    /// A switch in its own temporary directory, with extra environment
    /// variables (a node of a fleet with its own REDIS_URL, say).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> TestSwitch {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut switch = TestSwitch::start_in_with_env(dir.path(), &data_dir, config, env);
        switch._dir = Some(dir);
        switch
    }

    pub fn start_in_with_env(
        dir: &Path,
        data_dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> TestSwitch {
        TestSwitch::spawn(dir, data_dir, config, env, "\"listening\"")
    }

    /// A switch on `data_dir`, returned as soon as it starts replaying
    /// velocity from its journal: HTTP answers, ISO 8583 is not accepted
    /// yet.
    pub fn start_replaying(dir: &Path, data_dir: &Path, config: &str) -> TestSwitch {
        TestSwitch::spawn(
            dir,
            data_dir,
            config,
            &[],
            "\"replaying velocity from the journal",
        )
    }

    /// Starts the switch and returns once it logs a line holding `until`,
    /// with the addresses that line names.
    fn spawn(
        dir: &Path,
        data_dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        until: &'static str,
    ) -> TestSwitch {
        let config_file = dir.join("switch.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut child = serve_command(&config_file, data_dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                if line.contains(until)
                    && let Some(sender) = sender.take()
                {
                    let _ = sender.send(line.clone());
                }
            }
        });
        let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("the switch did not start: {}", logs.lock().unwrap());
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = &json["fields"];
        TestSwitch {
            child,
            iso: fields["iso"].as_str().unwrap().parse().unwrap(),
            iso_tls: fields["iso_tls"].as_str().and_then(|a| a.parse().ok()),
            http: fields["http"].as_str().unwrap().parse().unwrap(),
            data_dir: data_dir.to_owned(),
            config_file,
            logs,
            _dir: None,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would:
    /// no shutdown, nothing written but what was already durable. Returns
    /// once the process is gone.
    pub fn kill(mut self) {
        // `Child::kill` is SIGKILL on Unix; the exit status says so.
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed by SIGKILL: {status}"
        );
    }

    pub fn iso(&self) -> IsoClient {
        IsoClient::connect(self.iso)
    }

    /// The process id, to send it a signal (SIGHUP reloads the vault keys).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` page, read as an admin.
    pub fn metrics(&self) -> String {
        let reply = self.http("GET", "/metrics", Some(ADMIN_KEY), &[], "");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpReply {
        http_request(self.http, method, path, key, headers, body)
    }
}

impl Drop for TestSwitch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An acquirer's connection.
pub struct IsoClient {
    pub stream: TcpStream,
    spec: Spec,
}

impl IsoClient {
    pub fn connect(address: SocketAddr) -> IsoClient {
        IsoClient::try_connect(address).unwrap()
    }

    /// A connection, or the error: for a client that expects the switch to
    /// be gone at times (killed, restarting).
    pub fn try_connect(address: SocketAddr) -> std::io::Result<IsoClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(IsoClient {
            stream,
            spec: Spec::iso87().unwrap(),
        })
    }

    pub fn send(&mut self, message: &Message) {
        self.try_send(message).unwrap();
    }

    /// Sends `message`, or says why it could not (the switch is gone).
    pub fn try_send(&mut self, message: &Message) -> std::io::Result<()> {
        let mut frame = Vec::new();
        message.encode_frame(&self.spec, &mut frame).unwrap();
        self.stream.write_all(&frame)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one framed response; `None` if the switch closed the connection.
    pub fn receive(&mut self) -> Option<Message> {
        let mut header = [0u8; 2];
        if self.stream.read_exact(&mut header).is_err() {
            return None;
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
        self.stream.read_exact(&mut payload).ok()?;
        Some(Message::decode(&self.spec, &payload).unwrap())
    }

    pub fn exchange(&mut self, message: &Message) -> Message {
        self.send(message);
        self.receive().expect("the switch closed the connection")
    }
}

/// The value on the line of a `/metrics` page that starts with
/// `line_start`: a metric's name with all its labels.
pub fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{metrics}"))
}

/// Everything the peer sends on `stream` until it closes the connection
/// (an end of stream, or a reset), waiting at most `within` in all. Panics,
/// naming `what`, if the connection is still open then: a check that the
/// switch closes a connection must fail when it merely goes quiet.
pub fn read_until_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let waiting = switch::clock::Stopwatch::start();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.saturating_sub(waiting.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: still open after {within:?} (received {received:?})"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return received;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: still open after {within:?} (received {received:?})")
            }
            Err(error) => panic!("{what}: the read failed ({error}), not closed by the switch"),
        }
    }
}

static STAN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A fresh STAN, so tests never collide on duplicate detection.
pub fn stan() -> String {
    // The process id's low 16 bits, times ten: tests running at once in
    // other processes start their STANs apart.
    let n = STAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + std::process::id() % 0x1_0000 * 10;
    format!("{:06}", n % 1_000_000)
}

/// A 0100 for `pan` and `amount` at ACME0000001's terminal.
pub fn authorization(pan: &str, amount: u64) -> Message {
    let mut message = Message::new(Mti::AUTHORIZATION_REQUEST);
    message
        .set(2, pan)
        .set(3, "000000")
        .set(4, format!("{amount:012}"))
        .set(7, "1122183000")
        .set(11, stan())
        .set(12, "183000")
        .set(13, "1122")
        .set(14, "3012")
        .set(18, "5411")
        .set(22, "051")
        .set(37, "532618000042")
        .set(41, "TERM0001")
        .set(42, "ACME0000001    ")
        .set(49, "840");
    message
}

pub fn network(code: &str) -> Message {
    let mut message = Message::new(Mti::NETWORK_MANAGEMENT_REQUEST);
    message.set(7, "1122183000").set(11, stan()).set(70, code);
    message
}

/// A reversal (0400) of `original`, pointing at it with DE90.
pub fn reversal_of(original: &Message, mti: Mti) -> Message {
    let mut message = Message::new(mti);
    for field in [2u8, 3, 4, 7, 12, 13, 37, 41, 42, 49] {
        if let Some(value) = original.get(field) {
            message.set(field, value);
        }
    }
    message.set(11, stan());
    let de90 = format!(
        "{}{}{}{:011}{:011}",
        original.mti(),
        original.get_str(11).unwrap(),
        original.get_str(7).unwrap(),
        0,
        0
    );
    message.set(90, de90);
    message
}

/// DE95 for an original that keeps `remaining` of its amount: actual
/// transaction n12, settlement n12, then the two fees, sign and n8.
pub fn replacement_amounts(remaining: u64) -> String {
    format!("{remaining:012}{remaining:012}C00000000C00000000")
}

pub fn code(message: &Message) -> &str {
    message.get_str(39).unwrap()
}

/// `body` (digits) with its Luhn check digit appended.
pub fn with_check_digit(body: &str) -> String {
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// One HTTP/1.1 exchange over a fresh connection.
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    exchange_http(address, method, path, key, headers, body)
        .unwrap()
        .0
}

/// [`http_request`], or the error when no whole reply came back: the
/// connection refused or cut (the switch killed), or a reply shorter than
/// its Content-Length.
pub fn try_http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpReply> {
    let (reply, read) = exchange_http(address, method, path, key, headers, body)?;
    let whole = reply.status != 0
        && reply
            .header("content-length")
            .and_then(|length| length.parse::<usize>().ok())
            .is_none_or(|length| length == reply.body.len());
    match read {
        // A reset after the whole reply arrived (the switch closing
        // first) still leaves a reply; one cut short is none.
        _ if whole => Ok(reply),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("a partial reply: {} {:?}", reply.status, reply.body),
        )),
        Err(error) => Err(error),
    }
}

/// One exchange: the reply as far as it came, and how reading it ended.
/// Errs only when the request could not be sent.
fn exchange_http(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(HttpReply, std::io::Result<usize>)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: switch\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((
        HttpReply {
            status,
            headers,
            body,
        },
        read,
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(rest.get(..size).unwrap_or(rest));
        body = rest.get(size + 2..).unwrap_or("");
    }
    out
}

/// PostgreSQL's URL from `scripts/test-env`. Without it a test that needs
/// it fails under CI or SWITCH_REQUIRE_DATABASES, and otherwise prints one
/// line and is skipped.
pub fn database_url() -> Option<String> {
    required_urls(&["DATABASE_URL"])?.pop()
}

/// The test CONFIG with the journal and vault in PostgreSQL.
pub fn postgres_config() -> String {
    // The URL comes from DATABASE_URL, which the switch reads like --database-url.
    CONFIG.replace(
        "[iso]",
        "[storage]\nbackend = \"postgres\"\nwriter_connections = 2\n\n[iso]",
    )
}

/// PostgreSQL's and Redis's URLs from `scripts/test-env`. Without them a
/// test that needs both fails under CI or SWITCH_REQUIRE_DATABASES, and
/// otherwise prints one line and is skipped.
pub fn database_and_redis_urls() -> Option<(String, String)> {
    let mut urls = required_urls(&["DATABASE_URL", "REDIS_URL"])?;
    let redis = urls.pop()?;
    Some((urls.pop()?, redis))
}

/// The values of the environment variables `names`, all set; else a panic
/// under CI or SWITCH_REQUIRE_DATABASES, or one line saying the test is
/// skipped.
fn required_urls(names: &[&str]) -> Option<Vec<String>> {
    let urls: Option<Vec<String>> = names.iter().map(|name| std::env::var(name).ok()).collect();
    if urls.is_some() {
        return urls;
    }
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    let names = names.join(" or ");
    if set("CI") || set("SWITCH_REQUIRE_DATABASES") {
        panic!("{names} is not set: run under scripts/test-env");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {names} not set (run under scripts/test-env)"
    );
    None
}

/// Every byte of every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// A connection with a receive window of a few kilobytes and small
/// segments, so the switch's send buffer for it stays small too: its answers
/// back up after a few hundred once the client stops reading.
pub fn connect_with_small_window(address: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.connect(&address.into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream.set_nodelay(true).unwrap();
    stream
}
