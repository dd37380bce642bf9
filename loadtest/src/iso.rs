//! ISO 8583 over TCP: requests built with the switch's own `protocol`
//! codec under the dialect of `--spec`, and responses matched by DE11.
//!
//! Keys are chosen so the switch's duplicate detection (terminal, STAN, DE7)
//! never fires on load: every connection is its own terminal (DE41 `L`, a
//! per-process tag and the connection number), STANs count up per
//! connection, and DE7 is the wall clock. Reruns with the same `--seed`
//! offer the same cards, amounts and types under fresh keys.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use protocol::{Framing, Message, Mti, Spec};

use crate::clock::DateFields;
use crate::connection::{Dialogue, Reply};
use crate::stats::{ErrorReason, Outcome};
use crate::units::{digits, duration_ns};
use crate::workload::{Kind, Plan, Workload};

/// Approvals remembered per connection for 0400s to reverse.
const ORIGINALS_MAX: usize = 64;

/// The keys of an approved request, for a later 0400's DE90.
#[derive(Debug, Clone, Copy)]
struct Original {
    mti: Mti,
    stan: [u8; 6],
    transmitted_at: [u8; 10],
    amount: [u8; 12],
    merchant: [u8; 15],
}

/// An 8-character DE41 for connection `connection` of a run tagged `tag`:
/// `L`, three base-36 characters of the tag, four digits.
pub fn terminal_id(tag: u64, connection: u64) -> [u8; 8] {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [b'0'; 8];
    id[0] = b'L';
    let mut t = tag;
    for slot in id[1..4].iter_mut().rev() {
        // `t % 36` is below 36, so it always fits.
        *slot = DIGITS[usize::try_from(t % 36).unwrap_or(0)];
        t /= 36;
    }
    id[4..8].copy_from_slice(&digits::<4>(connection));
    id
}

/// A run tag from the clock and the process, so two runs (even with one
/// seed, in the same second) use different terminals.
pub fn run_tag() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, duration_ns);
    crate::rng::mix(nanos, u64::from(std::process::id()))
}

/// The ISO 8583 side of one connection.
#[derive(Debug)]
pub struct IsoDialogue {
    spec: Arc<Spec>,
    framing: Framing,
    workload: Arc<Workload>,
    terminal: [u8; 8],
    connection: u64,
    /// The last STAN used, 1 to 999999.
    stan: u32,
    sequence: u64,
    request: Message,
    response: Message,
    dates: DateFields,
    originals: VecDeque<Original>,
    ack_log: bool,
    header: Vec<u8>,
}

impl IsoDialogue {
    /// The dialogue of connection `connection` under `spec`.
    pub fn new(
        spec: Arc<Spec>,
        workload: Arc<Workload>,
        tag: u64,
        connection: u64,
        ack_log: bool,
    ) -> IsoDialogue {
        let framing = spec.framing();
        let header = vec![0u8; spec.header_length()];
        IsoDialogue {
            spec,
            framing,
            workload,
            terminal: terminal_id(tag, connection),
            connection,
            stan: 0,
            sequence: 0,
            request: Message::with_capacity(512),
            response: Message::with_capacity(512),
            dates: DateFields::default(),
            originals: VecDeque::with_capacity(ORIGINALS_MAX),
            ack_log,
            header,
        }
    }

    /// This connection's DE41.
    pub fn terminal(&self) -> &str {
        std::str::from_utf8(&self.terminal).unwrap_or_default()
    }

    fn next_stan(&mut self) -> [u8; 6] {
        self.stan = self.stan % 999_999 + 1;
        digits::<6>(u64::from(self.stan))
    }

    /// Builds request `plan` into `self.request`; returns its STAN.
    fn build(&mut self, plan: &Plan) -> u32 {
        let stan = self.next_stan();
        self.sequence += 1;
        let dates = self.dates.update(SystemTime::now()).clone();
        // A unique RRN per request of the run: connection and sequence.
        let mut rrn = [0u8; 12];
        rrn[..4].copy_from_slice(&digits::<4>(self.connection));
        rrn[4..].copy_from_slice(&digits::<8>(self.sequence));
        let currency = digits::<3>(u64::from(self.workload.currency));
        let merchant = self
            .workload
            .merchants
            .get(plan.merchant)
            .map(String::as_bytes)
            .unwrap_or(b"ACME0000001    ");
        let message = &mut self.request;
        message.clear();
        if !self.header.is_empty() {
            message.set_header(&self.header);
        }
        match plan.kind {
            Kind::Authorization | Kind::Financial => {
                let mti = if plan.kind == Kind::Financial {
                    Mti::FINANCIAL_REQUEST
                } else {
                    Mti::AUTHORIZATION_REQUEST
                };
                message
                    .set_mti(mti)
                    .set(2, self.workload.pan(plan.card, plan.invalid_card))
                    .set(3, "000000")
                    .set(4, digits::<12>(plan.amount))
                    .set(7, dates.transmitted_at)
                    .set(11, stan)
                    .set(12, dates.local_time())
                    .set(13, dates.local_date())
                    .set(14, self.workload.expiry(plan.card))
                    .set(18, self.workload.mcc.as_bytes())
                    .set(22, "051")
                    .set(37, rrn)
                    .set(41, self.terminal)
                    .set(42, merchant)
                    .set(49, currency);
            }
            Kind::Reversal => {
                // Reverse the oldest approval still remembered; with none, a
                // reversal of an unknown original, which a switch
                // acknowledges and journals too.
                let original = self.originals.pop_front().unwrap_or(Original {
                    mti: Mti::AUTHORIZATION_REQUEST,
                    stan: [b'0'; 6],
                    transmitted_at: dates.transmitted_at,
                    amount: digits::<12>(plan.amount),
                    merchant: {
                        let mut m = [b' '; 15];
                        for (slot, b) in m.iter_mut().zip(merchant) {
                            *slot = *b;
                        }
                        m
                    },
                });
                let mut de90 = [b'0'; 42];
                de90[..4].copy_from_slice(original.mti.as_bytes());
                de90[4..10].copy_from_slice(&original.stan);
                de90[10..20].copy_from_slice(&original.transmitted_at);
                message
                    .set_mti(Mti::REVERSAL_REQUEST)
                    .set(3, "000000")
                    .set(4, original.amount)
                    .set(7, dates.transmitted_at)
                    .set(11, stan)
                    .set(37, rrn)
                    .set(41, self.terminal)
                    .set(42, original.merchant)
                    .set(49, currency)
                    .set(90, de90);
            }
            Kind::Network => {
                message
                    .set_mti(Mti::NETWORK_MANAGEMENT_REQUEST)
                    .set(7, dates.transmitted_at)
                    .set(11, stan)
                    .set(70, "301");
            }
        }
        self.stan
    }

    /// Remembers an approval of ours for a later reversal.
    fn remember(&mut self) {
        let r = &self.response;
        let original = (|| {
            Some(Original {
                mti: r.mti().original().request()?,
                stan: r.get(11)?.try_into().ok()?,
                transmitted_at: r.get(7)?.try_into().ok()?,
                amount: r.get(4)?.try_into().ok()?,
                merchant: r.get(42)?.try_into().ok()?,
            })
        })();
        if let Some(original) = original {
            if self.originals.len() >= ORIGINALS_MAX {
                self.originals.pop_front();
            }
            self.originals.push_back(original);
        }
    }
}

/// Parses up to 6 ASCII digits.
fn parse_stan(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 6 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0')))
}

trait RequestMti {
    fn request(self) -> Option<Mti>;
}

impl RequestMti for Mti {
    /// The request MTI of a response MTI (0110 -> 0100).
    fn request(self) -> Option<Mti> {
        match self.as_bytes() {
            b"0110" => Some(Mti::AUTHORIZATION_REQUEST),
            b"0210" => Some(Mti::FINANCIAL_REQUEST),
            _ => None,
        }
    }
}

impl Dialogue for IsoDialogue {
    fn write_request(
        &mut self,
        _index: u64,
        plan: &Plan,
        out: &mut Vec<u8>,
    ) -> Result<u64, ErrorReason> {
        let stan = self.build(plan);
        self.request
            .encode_frame(&self.spec, out)
            .map_err(|_| ErrorReason::Encode)?;
        Ok(u64::from(stan))
    }

    fn read_response(
        &mut self,
        input: &[u8],
        acks: &mut String,
    ) -> Result<Option<(usize, Reply)>, String> {
        let Some((payload, used)) = self.framing.split(input).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if self.response.decode_into(&self.spec, payload).is_err() {
            return Ok(Some((used, Reply::Undecodable)));
        }
        let Some(stan) = self.response.get(11).and_then(parse_stan) else {
            return Ok(Some((used, Reply::Undecodable)));
        };
        if let Some(terminal) = self.response.get(41)
            && terminal != self.terminal
        {
            return Ok(Some((used, Reply::Stranger)));
        }
        let outcome = match self.response.get(39) {
            Some(&[a, b]) => Outcome::Code([a, b]),
            _ => Outcome::NoCode,
        };
        let card_response = matches!(self.response.mti().as_bytes(), b"0110" | b"0210");
        if outcome.is_approved() && card_response {
            self.remember();
            if self.ack_log {
                let field = |n: u8| self.response.get_str(n).unwrap_or("-");
                let _ = writeln!(
                    acks,
                    "{} {} {} {}",
                    field(11),
                    self.terminal(),
                    field(37),
                    field(38)
                );
            }
        }
        Ok(Some((
            used,
            Reply::Matched {
                key: u64::from(stan),
                outcome,
            },
        )))
    }

    fn reconnected(&mut self) {
        self.originals.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{AmountDistribution, Mix};

    fn dialogue(ack_log: bool) -> IsoDialogue {
        let workload = Workload::new(
            1,
            100,
            0.0,
            AmountDistribution::Fixed(1234),
            Mix::default(),
            &["ACME0000001".to_owned()],
            0.0,
            840,
            "5411",
        )
        .unwrap();
        IsoDialogue::new(
            Arc::new(Spec::iso87().unwrap()),
            Arc::new(workload),
            7,
            3,
            ack_log,
        )
    }

    fn plan(kind: Kind) -> Plan {
        Plan {
            kind,
            card: 5,
            amount: 1234,
            merchant: 0,
            invalid_card: false,
        }
    }

    /// Decodes the frame at the front of `bytes` as the switch would.
    fn decode(bytes: &[u8]) -> Message {
        let spec = Spec::iso87().unwrap();
        let (payload, _) = spec.framing().split(bytes).unwrap().unwrap();
        Message::decode(&spec, payload).unwrap()
    }

    #[test]
    fn requests_are_valid_and_keys_unique() {
        let mut d = dialogue(false);
        let mut out = Vec::new();
        let key = d
            .write_request(0, &plan(Kind::Authorization), &mut out)
            .unwrap();
        let request = decode(&out);
        let parsed = protocol::iso::Request::parse(&request).unwrap();
        let protocol::iso::Request::Card(card) = parsed else {
            panic!("not a card request")
        };
        assert_eq!(card.stan.as_str(), "000001");
        assert_eq!(key, 1);
        assert_eq!(card.terminal_id.as_str(), d.terminal());
        assert_eq!(card.merchant_id.as_str(), "ACME0000001    ");
        assert_eq!(card.amount.minor(), 1234);
        assert!(card.pan.luhn_valid());
        let mut out2 = Vec::new();
        d.write_request(1, &plan(Kind::Network), &mut out2).unwrap();
        let network = decode(&out2);
        assert_eq!(network.get_str(11), Some("000002"));
        assert_eq!(network.get_str(70), Some("301"));
        assert!(protocol::iso::NetworkRequest::parse(&network).is_ok());
    }

    #[test]
    fn responses_match_by_stan_and_approvals_feed_reversals_and_acks() {
        let mut d = dialogue(true);
        let mut out = Vec::new();
        d.write_request(0, &plan(Kind::Authorization), &mut out)
            .unwrap();
        let request = decode(&out);
        let auth_code = protocol::ids::AuthCode::parse(b"A1B2C3").unwrap();
        let response =
            protocol::iso::response(&request, protocol::ResponseCode::Approved, Some(&auth_code))
                .unwrap();
        let mut frame = Vec::new();
        response
            .encode_frame(&Spec::iso87().unwrap(), &mut frame)
            .unwrap();
        let mut acks = String::new();
        assert_eq!(d.read_response(&frame[..3], &mut acks), Ok(None));
        let (used, reply) = d.read_response(&frame, &mut acks).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(
            reply,
            Reply::Matched {
                key: 1,
                outcome: Outcome::Code(*b"00")
            }
        );
        let rrn = request.get_str(37).unwrap();
        assert_eq!(acks, format!("000001 {} {rrn} A1B2C3\n", d.terminal()));

        let mut out = Vec::new();
        d.write_request(1, &plan(Kind::Reversal), &mut out).unwrap();
        let reversal = decode(&out);
        let parsed = protocol::iso::ReversalRequest::parse(&reversal).unwrap();
        let original = parsed.original.unwrap();
        assert_eq!(original.stan.as_str(), "000001");
        assert_eq!(original.mti, Mti::AUTHORIZATION_REQUEST);
        assert_eq!(reversal.get(4), request.get(4));
        assert_eq!(reversal.get_str(11), Some("000002"));
    }

    #[test]
    fn strangers_and_garbage_are_told_apart() {
        let mut d = dialogue(false);
        let mut other = dialogue(false);
        other.terminal = terminal_id(8, 3);
        let mut out = Vec::new();
        other
            .write_request(0, &plan(Kind::Authorization), &mut out)
            .unwrap();
        let mut acks = String::new();
        assert_eq!(
            d.read_response(&out, &mut acks).unwrap().unwrap().1,
            Reply::Stranger
        );
        let garbage = [0x00, 0x03, b'0', b'1', b'0'];
        assert_eq!(
            d.read_response(&garbage, &mut acks).unwrap().unwrap().1,
            Reply::Undecodable
        );
        assert!(d.read_response(&[0x00, 0x00], &mut acks).is_err());
    }

    #[test]
    fn terminal_ids_are_eight_printable_characters() {
        let id = terminal_id(u64::MAX, 12_345);
        assert_eq!(id.len(), 8);
        assert!(id.iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(&id[4..], b"2345");
        assert_ne!(terminal_id(1, 0), terminal_id(2, 0));
    }
}
