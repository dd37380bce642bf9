//! `loadtest issuer`: an issuer host to route to. It answers 0100/0200/0400
//! with 0110/0210/0410 (and 0800 with 0810) after a fixed latency, declines
//! a fraction with 05 and leaves a fraction unanswered, all from `--seed`,
//! so routing, timeouts and stand-in can be tested against a host that
//! misbehaves on purpose.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use protocol::ids::AuthCode;
use protocol::iso::{self, Request};
use protocol::{DecodeError, Message, ResponseCode, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::clock::Instant;
use crate::rng::{SplitMix64, mix};

/// How the issuer behaves.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub spec: Arc<Spec>,
    /// Time from reading a request to writing its answer.
    pub latency: Duration,
    /// Fraction of card requests declined with 05.
    pub decline_rate: f64,
    /// Fraction of requests (not 0800) never answered.
    pub silence_rate: f64,
    pub seed: u64,
}

/// Answers waiting to leave, per connection. A full queue makes the reader
/// wait, so a client that never reads cannot grow it.
const QUEUE_CAPACITY: usize = 4096;

/// Serves issuer connections on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: IssuerConfig) -> io::Result<()> {
    let config = Arc::new(config);
    let mut connection = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connection += 1;
        tokio::spawn(issuer_connection(stream, Arc::clone(&config), connection));
    }
}

/// What the issuer does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Code(ResponseCode),
    Silence,
}

fn decide(message: &Message, config: &IssuerConfig, rng: &mut SplitMix64) -> Option<Answer> {
    if message.mti().is_response() {
        return None;
    }
    let silent = config.silence_rate > 0.0 && rng.next_f64() < config.silence_rate;
    match Request::parse(message) {
        Ok(Request::Network(_)) => Some(Answer::Code(ResponseCode::Approved)),
        Ok(_) if silent => Some(Answer::Silence),
        Ok(Request::Card(_)) => {
            if config.decline_rate > 0.0 && rng.next_f64() < config.decline_rate {
                Some(Answer::Code(ResponseCode::DoNotHonor))
            } else {
                Some(Answer::Code(ResponseCode::Approved))
            }
        }
        Ok(Request::Reversal(_)) => Some(Answer::Code(ResponseCode::Approved)),
        Err(DecodeError::UnsupportedMti { .. }) => {
            Some(Answer::Code(ResponseCode::InvalidTransaction))
        }
        Err(_) => Some(Answer::Code(ResponseCode::FormatError)),
    }
}

fn auth_code(rng: &mut SplitMix64) -> Option<AuthCode> {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut code = [0u8; 6];
    for slot in &mut code {
        *slot = ALPHABET[rng.index_below(ALPHABET.len())];
    }
    AuthCode::parse(&code)
}

async fn issuer_connection(stream: TcpStream, config: Arc<IssuerConfig>, connection: u64) {
    let (mut reader, mut writer) = stream.into_split();
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CAPACITY);
    // The writer sends answers when they are due; the latency is the same
    // for every answer, so due times arrive in order.
    let write_task = tokio::spawn(async move {
        while let Some((due, frame)) = receiver.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let framing = config.spec.framing();
    let mut rng = SplitMix64::new(mix(config.seed, connection));
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let mut message = Message::with_capacity(512);
    'read: loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match reader.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        let mut at = 0usize;
        loop {
            let (payload, used) = match framing.split(&buf[at..filled]) {
                Ok(Some(split)) => split,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            // Fields read before a bad one stay, so even a 30 echoes DE11.
            let _ = message.decode_into(&config.spec, payload);
            at += used;
            let answer = decide(&message, &config, &mut rng);
            let Some(Answer::Code(code)) = answer else {
                continue;
            };
            let approval = code.is_approved().then(|| auth_code(&mut rng)).flatten();
            let Some(response) = iso::response(&message, code, approval.as_ref()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(256);
            if response.encode_frame(&config.spec, &mut frame).is_err() {
                continue;
            }
            if sender
                .send((Instant::now() + config.latency, frame))
                .await
                .is_err()
            {
                break 'read;
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
    drop(sender);
    let _ = write_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Mti;

    fn config(decline_rate: f64, silence_rate: f64) -> IssuerConfig {
        IssuerConfig {
            spec: Arc::new(Spec::iso87().unwrap()),
            latency: Duration::ZERO,
            decline_rate,
            silence_rate,
            seed: 1,
        }
    }

    fn authorization() -> Message {
        let mut m = Message::new(Mti::AUTHORIZATION_REQUEST);
        m.set(2, "4111111111111111")
            .set(3, "000000")
            .set(4, "000000001000")
            .set(11, "000001")
            .set(41, "TERM0001")
            .set(42, "ACME0000001    ")
            .set(49, "840");
        m
    }

    #[test]
    fn decisions_follow_the_rates() {
        let mut rng = SplitMix64::new(1);
        let request = authorization();
        let approve = config(0.0, 0.0);
        assert_eq!(
            decide(&request, &approve, &mut rng),
            Some(Answer::Code(ResponseCode::Approved))
        );
        let decline = config(1.0, 0.0);
        assert_eq!(
            decide(&request, &decline, &mut rng),
            Some(Answer::Code(ResponseCode::DoNotHonor))
        );
        let silent = config(0.0, 1.0);
        assert_eq!(decide(&request, &silent, &mut rng), Some(Answer::Silence));
        let mut network = Message::new(Mti::NETWORK_MANAGEMENT_REQUEST);
        network.set(11, "000002").set(70, "301");
        assert_eq!(
            decide(&network, &silent, &mut rng),
            Some(Answer::Code(ResponseCode::Approved))
        );
        let mut response = authorization();
        response.set_mti(Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(decide(&response, &approve, &mut rng), None);
        let half = config(0.5, 0.0);
        let declined = (0..1000)
            .filter(|_| {
                decide(&request, &half, &mut rng) == Some(Answer::Code(ResponseCode::DoNotHonor))
            })
            .count();
        assert!((400..600).contains(&declined), "{declined}");
        assert!(auth_code(&mut rng).is_some());
    }
}
