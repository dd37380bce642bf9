//! Typed views of the requests in the wire contract, and their responses.
//!
//! | request              | response | view                 |
//! |----------------------|----------|----------------------|
//! | 0100 / 0101 (repeat) | 0110     | [`CardRequest`]      |
//! | 0200 / 0201 (repeat) | 0210     | [`CardRequest`]      |
//! | 0400 / 0401 (repeat) | 0410     | [`ReversalRequest`]  |
//! | 0420 / 0421 (repeat) | 0430     | [`ReversalRequest`]  |
//! | 0800                 | 0810     | [`NetworkRequest`]   |
//!
//! A view holds fixed-size copies of the fields it needs, so reading one
//! allocates nothing beyond DE55's TLV items. A field that is present but
//! wrong is a [`DecodeError`] naming it, answered with DE39 30.

use crate::amount::{Amount, Currency};
use crate::card::{Expiry, Pan, PinBlock, SensitiveText};
use crate::error::DecodeError;
use crate::ids::{AuthCode, MerchantId, Rrn, Stan, TerminalId, Text, TransmissionTime};
use crate::message::Message;
use crate::mti::Mti;
use crate::response_code::ResponseCode;
use crate::tlv::{self, Tlv};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// 0100: authorize, hold the amount.
    Authorization,
    /// 0200: authorize and capture (a purchase).
    Financial,
    /// 0400: undo an earlier request.
    Reversal,
    /// 0420: the acquirer tells the switch it undid an earlier request.
    ReversalAdvice,
    /// 0800: sign-on, sign-off, echo.
    NetworkManagement,
}

impl RequestKind {
    /// The kind of an ISO 8583:1987 request or repeat, or `None` for
    /// responses and MTIs outside the wire contract.
    pub fn of(mti: Mti) -> Option<RequestKind> {
        match mti.original().as_bytes() {
            b"0100" => Some(RequestKind::Authorization),
            b"0200" => Some(RequestKind::Financial),
            b"0400" => Some(RequestKind::Reversal),
            b"0420" => Some(RequestKind::ReversalAdvice),
            b"0800" if !mti.is_repeat() => Some(RequestKind::NetworkManagement),
            _ => None,
        }
    }
}

/// A request, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 0100, 0101, 0200, 0201.
    Card(CardRequest),
    /// 0400, 0401, 0420, 0421.
    Reversal(ReversalRequest),
    /// 0800.
    Network(NetworkRequest),
}

impl Request {
    /// The typed view of `message`.
    pub fn parse(message: &Message) -> Result<Request, DecodeError> {
        let mti = message.mti();
        match RequestKind::of(mti) {
            Some(RequestKind::Authorization | RequestKind::Financial) => {
                CardRequest::parse(message).map(Request::Card)
            }
            Some(RequestKind::Reversal | RequestKind::ReversalAdvice) => {
                ReversalRequest::parse(message).map(Request::Reversal)
            }
            Some(RequestKind::NetworkManagement) => {
                NetworkRequest::parse(message).map(Request::Network)
            }
            None => Err(DecodeError::UnsupportedMti { mti }),
        }
    }
}

/// An authorization (0100/0101) or financial request (0200/0201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRequest {
    pub kind: RequestKind,
    pub repeat: bool,
    /// DE2, or the PAN of DE35 when DE2 is absent.
    pub pan: Pan,
    /// DE3.
    pub processing_code: Text<6>,
    /// DE4.
    pub amount: Amount,
    /// DE49.
    pub currency: Currency,
    /// DE7.
    pub transmitted_at: Option<TransmissionTime>,
    /// DE11.
    pub stan: Stan,
    /// DE12, hhmmss.
    pub local_time: Option<Text<6>>,
    /// DE13, MMDD.
    pub local_date: Option<Text<4>>,
    /// DE14, or the expiry of DE35 when DE14 is absent.
    pub expiry: Option<Expiry>,
    /// DE18, the merchant category code.
    pub mcc: Option<Text<4>>,
    /// DE22.
    pub pos_entry_mode: Option<Text<3>>,
    /// DE37.
    pub rrn: Option<Rrn>,
    /// DE41.
    pub terminal_id: TerminalId,
    /// DE42.
    pub merchant_id: MerchantId,
    /// DE35.
    pub track2: Option<SensitiveText>,
    /// DE52.
    pub pin_block: Option<PinBlock>,
    /// DE55, parsed.
    pub icc: Option<Vec<Tlv>>,
}

fn required(message: &Message, field: u8) -> Result<&[u8], DecodeError> {
    message.get(field).ok_or(DecodeError::MissingField {
        field,
        mti: message.mti(),
    })
}

fn text<const N: usize>(message: &Message, field: u8) -> Result<Option<Text<N>>, DecodeError> {
    message
        .get(field)
        .map(|value| {
            Text::parse(value).ok_or(DecodeError::InvalidField {
                field,
                reason: "wrong length or not printable",
            })
        })
        .transpose()
}

fn required_text<const N: usize>(message: &Message, field: u8) -> Result<Text<N>, DecodeError> {
    text(message, field)?.ok_or(DecodeError::MissingField {
        field,
        mti: message.mti(),
    })
}

fn amount(message: &Message, field: u8) -> Result<Amount, DecodeError> {
    Amount::from_field(required(message, field)?).ok_or(DecodeError::InvalidField {
        field,
        reason: "amount must be 12 digits",
    })
}

fn currency(message: &Message) -> Result<Currency, DecodeError> {
    let code = required(message, 49)?;
    std::str::from_utf8(code)
        .ok()
        .and_then(Currency::parse)
        .ok_or(DecodeError::InvalidField {
            field: 49,
            reason: "not an ISO 4217 currency code",
        })
}

/// The PAN and expiry of track 2: `PAN=YYMM...` (or `D` as separator).
fn split_track2(track2: &[u8]) -> Option<(Pan, Option<Expiry>)> {
    let separator = track2.iter().position(|&b| b == b'=' || b == b'D')?;
    let pan = Pan::parse(track2.get(..separator)?)?;
    let expiry = track2
        .get(separator + 1..separator + 5)
        .and_then(Expiry::parse);
    Some((pan, expiry))
}

impl CardRequest {
    /// The view of a 0100, 0101, 0200 or 0201.
    pub fn parse(message: &Message) -> Result<CardRequest, DecodeError> {
        let mti = message.mti();
        let kind = match RequestKind::of(mti) {
            Some(kind @ (RequestKind::Authorization | RequestKind::Financial)) => kind,
            _ => return Err(DecodeError::UnsupportedMti { mti }),
        };
        let track2 = message.get(35);
        let from_track2 = track2
            .map(|track| {
                split_track2(track).ok_or(DecodeError::InvalidField {
                    field: 35,
                    reason: "track 2 must be PAN, separator, YYMM",
                })
            })
            .transpose()?;
        let pan = match (message.get(2), &from_track2) {
            (Some(digits), _) => Pan::parse(digits).ok_or(DecodeError::InvalidField {
                field: 2,
                reason: "PAN must be 12 to 19 digits",
            })?,
            (None, Some((pan, _))) => pan.clone(),
            (None, None) => return Err(DecodeError::MissingField { field: 2, mti }),
        };
        let expiry = match (message.get(14), &from_track2) {
            (Some(yymm), _) => Some(Expiry::parse(yymm).ok_or(DecodeError::InvalidField {
                field: 14,
                reason: "expiry must be YYMM with a month from 01 to 12",
            })?),
            (None, Some((_, expiry))) => *expiry,
            (None, None) => None,
        };
        let icc = message.get(55).map(tlv::parse).transpose()?;
        Ok(CardRequest {
            kind,
            repeat: mti.is_repeat(),
            pan,
            processing_code: required_text(message, 3)?,
            amount: amount(message, 4)?,
            currency: currency(message)?,
            transmitted_at: text(message, 7)?,
            stan: required_text(message, 11)?,
            local_time: text(message, 12)?,
            local_date: text(message, 13)?,
            expiry,
            mcc: text(message, 18)?,
            pos_entry_mode: text(message, 22)?,
            rrn: text(message, 37)?,
            terminal_id: required_text(message, 41)?,
            merchant_id: required_text(message, 42)?,
            track2: track2
                .map(|track| SensitiveText::new(String::from_utf8_lossy(track).into_owned())),
            pin_block: message
                .get(52)
                .map(|bytes| {
                    PinBlock::parse(bytes).ok_or(DecodeError::InvalidField {
                        field: 52,
                        reason: "PIN block must be 8 bytes",
                    })
                })
                .transpose()?,
            icc,
        })
    }
}

/// DE90: the keys of the request a reversal undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalData {
    pub mti: Mti,
    pub stan: Stan,
    pub transmitted_at: TransmissionTime,
    pub acquirer_id: Text<11>,
    pub forwarding_id: Text<11>,
}

impl OriginalData {
    /// The 42 digits of DE90.
    pub fn parse(digits: &[u8]) -> Option<OriginalData> {
        if digits.len() != 42 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(OriginalData {
            mti: Mti::parse(digits.get(0..4)?)?,
            stan: Text::parse(digits.get(4..10)?)?,
            transmitted_at: Text::parse(digits.get(10..20)?)?,
            acquirer_id: Text::parse(digits.get(20..31)?)?,
            forwarding_id: Text::parse(digits.get(31..42)?)?,
        })
    }

    /// The 42 digits of DE90.
    pub fn to_field(&self) -> [u8; 42] {
        let mut digits = [0u8; 42];
        for (range, part) in [
            (0..4, &self.mti.as_bytes()[..]),
            (4..10, &self.stan.as_bytes()[..]),
            (10..20, &self.transmitted_at.as_bytes()[..]),
            (20..31, &self.acquirer_id.as_bytes()[..]),
            (31..42, &self.forwarding_id.as_bytes()[..]),
        ] {
            if let Some(slot) = digits.get_mut(range) {
                slot.copy_from_slice(part);
            }
        }
        digits
    }
}

/// DE95, replacement amounts (ISO 8583:1987, `an` 42): what stands of the
/// original after a partial reversal. Actual transaction amount n12, actual
/// settlement amount n12, then the transaction and settlement fees, each a
/// sign (`C` or `D`) and n8. Fees are checked for form only; an acquirer
/// may zero-fill the ones it does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplacementAmounts {
    /// What stands of the original's amount, in DE4's currency.
    pub transaction: Amount,
    /// The same in the settlement currency.
    pub settlement: Amount,
}

impl ReplacementAmounts {
    /// The 42 characters of DE95.
    pub fn parse(field: &[u8]) -> Option<ReplacementAmounts> {
        let fee = |part: &[u8]| {
            part.split_first().is_some_and(|(sign, digits)| {
                matches!(sign, b'C' | b'D' | b'0') && digits.iter().all(u8::is_ascii_digit)
            })
        };
        if field.len() != 42 || !fee(field.get(24..33)?) || !fee(field.get(33..42)?) {
            return None;
        }
        Some(ReplacementAmounts {
            transaction: Amount::from_field(field.get(0..12)?)?,
            settlement: Amount::from_field(field.get(12..24)?)?,
        })
    }
}

/// A reversal (0400/0401) or reversal advice (0420/0421).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRequest {
    pub kind: RequestKind,
    pub repeat: bool,
    /// DE2, when the acquirer sends it.
    pub pan: Option<Pan>,
    pub processing_code: Text<6>,
    /// DE4: the amount being reversed, or with DE95 the original's amount.
    pub amount: Amount,
    pub currency: Currency,
    pub transmitted_at: Option<TransmissionTime>,
    pub stan: Stan,
    pub rrn: Option<Rrn>,
    pub terminal_id: TerminalId,
    pub merchant_id: MerchantId,
    /// DE39 in an advice: why the acquirer reversed.
    pub reason: Option<ResponseCode>,
    /// DE90.
    pub original: Option<OriginalData>,
    /// DE95: what stands of the original, never more than DE4.
    pub replacement: Option<ReplacementAmounts>,
}

impl ReversalRequest {
    /// The view of a 0400, 0401, 0420 or 0421.
    pub fn parse(message: &Message) -> Result<ReversalRequest, DecodeError> {
        let mti = message.mti();
        let kind = match RequestKind::of(mti) {
            Some(kind @ (RequestKind::Reversal | RequestKind::ReversalAdvice)) => kind,
            _ => return Err(DecodeError::UnsupportedMti { mti }),
        };
        Ok(ReversalRequest {
            kind,
            repeat: mti.is_repeat(),
            pan: message
                .get(2)
                .map(|digits| {
                    Pan::parse(digits).ok_or(DecodeError::InvalidField {
                        field: 2,
                        reason: "PAN must be 12 to 19 digits",
                    })
                })
                .transpose()?,
            processing_code: required_text(message, 3)?,
            amount: amount(message, 4)?,
            currency: currency(message)?,
            transmitted_at: text(message, 7)?,
            stan: required_text(message, 11)?,
            rrn: text(message, 37)?,
            terminal_id: required_text(message, 41)?,
            merchant_id: required_text(message, 42)?,
            reason: message
                .get(39)
                .map(|code| {
                    ResponseCode::parse(code).ok_or(DecodeError::InvalidField {
                        field: 39,
                        reason: "response code must be 2 letters or digits",
                    })
                })
                .transpose()?,
            original: message
                .get(90)
                .map(|digits| {
                    OriginalData::parse(digits).ok_or(DecodeError::InvalidField {
                        field: 90,
                        reason: "original data elements must be 42 digits starting with an MTI",
                    })
                })
                .transpose()?,
            replacement: replacement(message)?,
        })
    }

    /// What the reversal takes off the original: DE4 less what DE95 says
    /// stands, or all of DE4 without DE95 (the switch's reading of a DE4
    /// below the original's amount: that much is reversed).
    pub fn reversed_amount(&self) -> Amount {
        self.replacement
            .and_then(|stands| self.amount.checked_sub(stands.transaction))
            .unwrap_or(self.amount)
    }
}

/// DE95 of a reversal, checked against its DE4: more cannot stand than
/// there was, so that is a format error (answered 30), not a reversal of
/// nothing or of everything.
fn replacement(message: &Message) -> Result<Option<ReplacementAmounts>, DecodeError> {
    let Some(field) = message.get(95) else {
        return Ok(None);
    };
    let stands = ReplacementAmounts::parse(field).ok_or(DecodeError::InvalidField {
        field: 95,
        reason: "replacement amounts must be n12, n12, then C or D and n8 twice",
    })?;
    if stands.transaction > amount(message, 4)? {
        return Err(DecodeError::InvalidField {
            field: 95,
            reason: "replacement amount above DE4",
        });
    }
    Ok(Some(stands))
}

/// DE70 of an 0800.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkCode {
    /// 001.
    SignOn,
    /// 002.
    SignOff,
    /// 301.
    Echo,
    /// Any other code, answered 12 by the switch.
    Other(Text<3>),
}

/// A network management request (0800).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkRequest {
    pub code: NetworkCode,
    pub transmitted_at: Option<TransmissionTime>,
    pub stan: Stan,
}

impl NetworkRequest {
    /// The view of an 0800.
    pub fn parse(message: &Message) -> Result<NetworkRequest, DecodeError> {
        let mti = message.mti();
        if RequestKind::of(mti) != Some(RequestKind::NetworkManagement) {
            return Err(DecodeError::UnsupportedMti { mti });
        }
        let code: Text<3> = required_text(message, 70)?;
        Ok(NetworkRequest {
            code: match code.as_bytes() {
                b"001" => NetworkCode::SignOn,
                b"002" => NetworkCode::SignOff,
                b"301" => NetworkCode::Echo,
                _ => NetworkCode::Other(code),
            },
            transmitted_at: text(message, 7)?,
            stan: required_text(message, 11)?,
        })
    }
}

/// The fields a response copies from its request, in the wire contract:
/// processing code, amount, transmission time, STAN, local time and date,
/// RRN, terminal, merchant, currency; and DE70 for network management.
pub const ECHOED_FIELDS: [u8; 11] = [3, 4, 7, 11, 12, 13, 37, 41, 42, 49, 70];

/// The response to `request`: its response MTI, the echoed fields and header,
/// DE39 `code`, and DE38 `auth_code` when approved. `None` if `request` is
/// itself a response.
pub fn response(
    request: &Message,
    code: ResponseCode,
    auth_code: Option<&AuthCode>,
) -> Option<Message> {
    let mut response = Message::new(request.mti().response()?);
    if let Some(header) = request.header() {
        response.set_header(header);
    }
    for field in ECHOED_FIELDS {
        if let Some(value) = request.get(field) {
            response.set(field, value);
        }
    }
    response.set(39, code.as_str());
    if let (true, Some(auth_code)) = (code.is_approved(), auth_code) {
        response.set(38, auth_code.as_bytes());
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization() -> Message {
        let mut message = Message::new(Mti::AUTHORIZATION_REQUEST);
        message
            .set(2, "4111111111111111")
            .set(3, "000000")
            .set(4, "000000012345")
            .set(7, "1122183000")
            .set(11, "000042")
            .set(12, "183000")
            .set(13, "1122")
            .set(14, "2812")
            .set(18, "5411")
            .set(22, "051")
            .set(37, "532618000042")
            .set(41, "TERM0001")
            .set(42, "MERCHANT0000001")
            .set(49, "840")
            .set(52, [0x12u8; 8]);
        message
    }

    #[test]
    fn a_card_request_reads_its_fields() {
        let Request::Card(request) = Request::parse(&authorization()).unwrap() else {
            panic!("not a card request");
        };
        assert_eq!(request.kind, RequestKind::Authorization);
        assert!(!request.repeat);
        assert_eq!(request.pan.last4(), "1111");
        assert_eq!(request.amount.minor(), 12345);
        assert_eq!(request.currency.alpha(), "USD");
        assert_eq!(request.stan.as_str(), "000042");
        assert_eq!(request.terminal_id.as_str(), "TERM0001");
        assert_eq!(request.merchant_id.as_str(), "MERCHANT0000001");
        assert_eq!(request.expiry, Expiry::parse(b"2812"));
        assert_eq!(request.mcc.unwrap().as_str(), "5411");
        assert!(request.pin_block.is_some());
        let shown = format!("{request:?}");
        assert!(!shown.contains("4111111111111111"), "{shown}");
    }

    #[test]
    fn the_pan_and_expiry_can_come_from_track_2() {
        let mut message = authorization();
        message
            .remove(2)
            .remove(14)
            .set(35, "5500005555555559=29011010000000000");
        let request = CardRequest::parse(&message).unwrap();
        assert_eq!(request.pan.last4(), "5559");
        assert_eq!(request.expiry, Expiry::parse(b"2901"));
        let shown = format!("{request:?}");
        assert!(!shown.contains("5500005555555559"), "{shown}");
        assert!(!shown.contains("29011010000000000"), "{shown}");
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let mut message = authorization();
        message.remove(41);
        assert_eq!(
            CardRequest::parse(&message),
            Err(DecodeError::MissingField {
                field: 41,
                mti: Mti::AUTHORIZATION_REQUEST
            })
        );
        let mut message = authorization();
        message.set(49, "001");
        assert_eq!(CardRequest::parse(&message).unwrap_err().field(), Some(49));
        let mut message = authorization();
        message.set(14, "2813");
        assert_eq!(CardRequest::parse(&message).unwrap_err().field(), Some(14));
        let mut message = authorization();
        message.set(55, [0x9F, 0x26, 0x08, 0x01]);
        assert_eq!(CardRequest::parse(&message).unwrap_err().field(), Some(55));
        let mut message = authorization();
        message.set_mti(Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(
            Request::parse(&message),
            Err(DecodeError::UnsupportedMti {
                mti: Mti::AUTHORIZATION_RESPONSE
            })
        );
    }

    #[test]
    fn reversals_read_de90() {
        let mut message = authorization();
        message
            .set_mti(Mti::REVERSAL_ADVICE_REPEAT)
            .set(39, "68")
            .set(90, "010000004211221830000000000123400000000000");
        let Request::Reversal(reversal) = Request::parse(&message).unwrap() else {
            panic!("not a reversal");
        };
        assert_eq!(reversal.kind, RequestKind::ReversalAdvice);
        assert!(reversal.repeat);
        assert_eq!(reversal.reason, Some(ResponseCode::Other(*b"68")));
        let original = reversal.original.unwrap();
        assert_eq!(original.mti, Mti::AUTHORIZATION_REQUEST);
        assert_eq!(original.stan.as_str(), "000042");
        assert_eq!(original.acquirer_id.as_str(), "00000001234");
        assert_eq!(
            &original.to_field(),
            b"010000004211221830000000000123400000000000"
        );
        message.set(90, "01000000421122183000");
        assert_eq!(Request::parse(&message).unwrap_err().field(), Some(90));
    }

    #[test]
    fn reversals_read_de95_as_what_stands() {
        // authorization() carries DE4 = 12345.
        let mut message = authorization();
        message.set_mti(Mti::REVERSAL_REQUEST);
        let reversed = |message: &Message| match Request::parse(message) {
            Ok(Request::Reversal(reversal)) => Ok(reversal.reversed_amount()),
            Ok(other) => panic!("not a reversal: {other:?}"),
            Err(error) => Err(error.field()),
        };
        // Without DE95, DE4 is what the acquirer reverses.
        assert_eq!(reversed(&message), Ok(Amount::from_minor(12345).unwrap()));
        message.set(95, "000000008000000000008000C00000000D00000150");
        assert_eq!(reversed(&message), Ok(Amount::from_minor(4345).unwrap()));
        // All of it stands: nothing is reversed. Unused fees zero-filled.
        message.set(95, "000000012345000000012345000000000000000000");
        assert_eq!(reversed(&message), Ok(Amount::default()));
        for bad in [
            // More stands than DE4 says there was.
            "000000012346000000012346C00000000C00000000",
            "00000000080A000000000800C00000000C00000000",
            "000000000800000000000800X00000000C00000000",
            "000000000800000000000800C00000000C0000000 ",
        ] {
            message.set(95, bad);
            assert_eq!(reversed(&message), Err(Some(95)), "{bad}");
        }
    }

    #[test]
    fn network_management_codes() {
        let mut message = Message::new(Mti::NETWORK_MANAGEMENT_REQUEST);
        message
            .set(7, "1122183000")
            .set(11, "000001")
            .set(70, "301");
        assert_eq!(
            NetworkRequest::parse(&message).unwrap().code,
            NetworkCode::Echo
        );
        message.set(70, "001");
        assert_eq!(
            NetworkRequest::parse(&message).unwrap().code,
            NetworkCode::SignOn
        );
        message.set(70, "002");
        assert_eq!(
            NetworkRequest::parse(&message).unwrap().code,
            NetworkCode::SignOff
        );
        message.set(70, "161");
        assert!(matches!(
            NetworkRequest::parse(&message).unwrap().code,
            NetworkCode::Other(_)
        ));
        message.remove(70);
        assert_eq!(
            NetworkRequest::parse(&message).unwrap_err().field(),
            Some(70)
        );
    }

    #[test]
    fn responses_echo_the_contract_fields() {
        let request = authorization();
        let auth_code = AuthCode::parse(b"A1B2C3").unwrap();
        let approved = response(&request, ResponseCode::Approved, Some(&auth_code)).unwrap();
        assert_eq!(approved.mti(), Mti::AUTHORIZATION_RESPONSE);
        for field in [3, 4, 7, 11, 12, 13, 37, 41, 42, 49] {
            assert_eq!(approved.get(field), request.get(field), "field {field}");
        }
        assert_eq!(approved.get(39), Some(&b"00"[..]));
        assert_eq!(approved.get(38), Some(&b"A1B2C3"[..]));
        for field in [2, 14, 18, 22, 52] {
            assert!(!approved.has(field), "field {field} must not be echoed");
        }
        let declined = response(
            &request,
            ResponseCode::ExceedsFrequencyLimit,
            Some(&auth_code),
        )
        .unwrap();
        assert_eq!(declined.get(39), Some(&b"65"[..]));
        assert!(!declined.has(38));
        assert!(response(&approved, ResponseCode::Approved, None).is_none());
    }
}
