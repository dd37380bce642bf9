//! Request and response bodies of the JSON/HTTP API.
//!
//! Card data comes in only through [`AuthorizationRequest`], as a [`Pan`] and
//! an optional CVV in [`SensitiveText`], so every `Debug` of a request is
//! masked, and a body that fails to parse never has its PAN quoted back in the
//! error. Replies carry the token and last four digits, never the PAN.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::amount::{Amount, Currency};
use crate::card::{Expiry, Pan, SensitiveText};

/// `POST /v1/authorizations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRequest {
    pub pan: Pan,
    /// YYMM.
    pub expiry: String,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 alphabetic (`"USD"`) or numeric (`"840"`).
    pub currency: String,
    pub merchant_id: String,
    pub terminal_id: String,
    /// Checked if present, never stored.
    #[serde(default)]
    pub cvv: Option<SensitiveText>,
    /// Merchant category code, 4 digits.
    #[serde(default)]
    pub mcc: Option<String>,
}

/// A body field that parsed as JSON but holds a value the API refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The JSON name of the field.
    pub field: &'static str,
    /// What is wrong, without repeating the value.
    pub reason: &'static str,
}

/// The fields of an [`AuthorizationRequest`], checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAuthorization {
    pub pan: Pan,
    pub expiry: Expiry,
    pub amount: Amount,
    pub currency: Currency,
    pub merchant_id: String,
    pub terminal_id: String,
    pub cvv: Option<SensitiveText>,
    pub mcc: Option<String>,
}

fn printable(text: &str, length_max: usize) -> bool {
    !text.is_empty() && text.len() <= length_max && text.bytes().all(|b| (0x20..0x7F).contains(&b))
}

impl AuthorizationRequest {
    /// Checks every field's form, naming the first bad one. Whether the card
    /// is valid (Luhn, expired) is a decision, not a form error, and is left
    /// to the switch's rules.
    pub fn check(self) -> Result<CheckedAuthorization, FieldError> {
        let expiry = Expiry::parse(self.expiry.as_bytes()).ok_or(FieldError {
            field: "expiry",
            reason: "must be YYMM with a month from 01 to 12",
        })?;
        let amount = Amount::from_minor(self.amount).ok_or(FieldError {
            field: "amount",
            reason: "must be at most 999999999999 minor units",
        })?;
        let currency = Currency::parse(&self.currency).ok_or(FieldError {
            field: "currency",
            reason: "must be an ISO 4217 alphabetic or numeric code",
        })?;
        if !printable(&self.merchant_id, 15) {
            return Err(FieldError {
                field: "merchant_id",
                reason: "must be 1 to 15 printable ASCII characters",
            });
        }
        if !printable(&self.terminal_id, 8) {
            return Err(FieldError {
                field: "terminal_id",
                reason: "must be 1 to 8 printable ASCII characters",
            });
        }
        if let Some(cvv) = &self.cvv {
            let digits = cvv.expose();
            if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FieldError {
                    field: "cvv",
                    reason: "must be 3 or 4 digits",
                });
            }
        }
        if let Some(mcc) = &self.mcc
            && (mcc.len() != 4 || !mcc.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(FieldError {
                field: "mcc",
                reason: "must be 4 digits",
            });
        }
        Ok(CheckedAuthorization {
            pan: self.pan,
            expiry,
            amount,
            currency,
            merchant_id: self.merchant_id,
            terminal_id: self.terminal_id,
            cvv: self.cvv,
            mcc: self.mcc,
        })
    }
}

/// Room for every field of a checked request at its longest, with its
/// presence byte and length: the canonical form is never reallocated, so no
/// copy of its card data is left behind unwiped.
const CANONICAL_BYTES_MAX: usize = 128;

impl CheckedAuthorization {
    /// The request in one canonical form, for the keyed digest that tells a
    /// retry from another request under the same idempotency key: every
    /// field in a fixed order, each as a presence byte, its length and its
    /// value (so no two requests share a form), the currency as its numeric
    /// code. Bodies that differ only in whitespace, key order or the
    /// currency's spelling have one form. It holds the PAN and the CVV in
    /// clear, so it is wiped on drop, and only a keyed digest of it may be
    /// kept.
    pub fn canonical_form(&self) -> Zeroizing<Vec<u8>> {
        let expiry = self.expiry.to_field();
        let amount = self.amount.minor().to_be_bytes();
        let currency = self.currency.numeric().to_be_bytes();
        let fields: [Option<&[u8]>; 8] = [
            Some(self.pan.expose().as_bytes()),
            Some(&expiry),
            Some(&amount),
            Some(&currency),
            Some(self.merchant_id.as_bytes()),
            Some(self.terminal_id.as_bytes()),
            self.cvv.as_ref().map(|cvv| cvv.expose().as_bytes()),
            self.mcc.as_ref().map(|mcc| mcc.as_bytes()),
        ];
        let mut form = Zeroizing::new(Vec::with_capacity(CANONICAL_BYTES_MAX));
        for field in fields {
            match field {
                None => form.push(0),
                Some(value) => {
                    form.push(1);
                    // Every field was checked to be far shorter than 256.
                    form.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
                    form.extend_from_slice(value);
                }
            }
        }
        debug_assert!(
            form.len() <= CANONICAL_BYTES_MAX,
            "the form was reallocated"
        );
        form
    }
}

/// Whether the switch approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Approved,
    Declined,
}

/// The reply to `POST /v1/authorizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationResponse {
    pub id: String,
    pub status: Status,
    /// The DE39 value.
    pub response_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    pub token: String,
    pub last4: String,
    pub amount: u64,
    /// ISO 4217 alphabetic code.
    pub currency: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `POST /v1/authorizations/{id}/reversal`: all of it by default, or part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    /// Minor units to give back; the whole amount when absent.
    #[serde(default)]
    pub amount: Option<u64>,
    /// Why, for the journal.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionStatus {
    Approved,
    Declined,
    Reversed,
}

/// `GET /v1/transactions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: String,
    pub status: TransactionStatus,
    pub response_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    pub token: String,
    pub bin: String,
    pub last4: String,
    pub amount: u64,
    pub currency: String,
    pub merchant_id: String,
    pub terminal_id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversed_at: Option<String>,
    /// The acquirer whose TLS client certificate the request came in under
    /// (ISO 8583 over mutual TLS); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirer: Option<String>,
}

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// The media type of a problem body.
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// A problem with one field of the request.
    pub fn invalid_field(error: &FieldError) -> Problem {
        Problem {
            kind: "/problems/invalid-field".to_owned(),
            title: "A field of the request is invalid".to_owned(),
            status: 400,
            detail: error.to_string(),
            field: Some(error.field.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"pan":"4111111111111111","expiry":"2812","amount":1250,"currency":"EUR",
        "merchant_id":"MERCHANT0000001","terminal_id":"TERM0001","cvv":"123","mcc":"5411"}"#;

    #[test]
    fn a_request_parses_checks_and_stays_masked() {
        let request: AuthorizationRequest = serde_json::from_str(BODY).unwrap();
        let shown = format!("{request:?}");
        assert!(!shown.contains("4111111111111111"), "{shown}");
        assert!(!shown.contains("\"123\""), "{shown}");
        let checked = request.check().unwrap();
        assert_eq!(checked.amount.minor(), 1250);
        assert_eq!(checked.currency.numeric(), 978);
        assert_eq!(checked.expiry, Expiry::parse(b"2812").unwrap());
        let shown = format!("{checked:?}");
        assert!(!shown.contains("4111111111111111"), "{shown}");
    }

    fn canonical(body: &str) -> Vec<u8> {
        let request: AuthorizationRequest = serde_json::from_str(body).unwrap();
        request.check().unwrap().canonical_form().to_vec()
    }

    #[test]
    fn the_canonical_form_ignores_spelling_and_holds_every_field() {
        let form = canonical(BODY);
        // Other whitespace, another key order, the currency by number.
        for same in [
            BODY.replace(['\n', ' '], ""),
            r#"{ "mcc" : "5411", "cvv":"123", "terminal_id":"TERM0001",
                "merchant_id":"MERCHANT0000001", "currency":"978", "amount":1250,
                "expiry":"2812", "pan":"4111111111111111" }"#
                .to_owned(),
        ] {
            assert_eq!(canonical(&same), form, "{same}");
        }
        // Any field changed, added or dropped is another request.
        for (from, to) in [
            ("4111111111111111", "4111111111111129"),
            ("\"2812\"", "\"2901\""),
            ("1250", "1251"),
            ("\"EUR\"", "\"USD\""),
            ("MERCHANT0000001", "MERCHANT0000002"),
            ("TERM0001", "TERM0002"),
            ("\"123\"", "\"124\""),
            (",\"cvv\":\"123\"", ""),
            ("\"5411\"", "\"5412\""),
            (",\"mcc\":\"5411\"", ""),
        ] {
            let other = BODY.replace(from, to);
            assert_ne!(other, BODY, "{from} is in the body");
            assert_ne!(canonical(&other), form, "{from} -> {to}");
        }
        // A value cannot slide into its neighbour: lengths are in the form.
        let ids = |merchant: &str, terminal: &str| {
            BODY.replace("MERCHANT0000001", merchant)
                .replace("TERM0001", terminal)
        };
        assert_ne!(canonical(&ids("M1", "T1")), canonical(&ids("M", "1T1")));
    }

    fn check_error(from: &str, to: &str) -> FieldError {
        let body = BODY.replace(from, to);
        let request: AuthorizationRequest = serde_json::from_str(&body).unwrap();
        request.check().unwrap_err()
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(check_error("\"2812\"", "\"2813\"").field, "expiry");
        assert_eq!(check_error("1250", "1000000000000").field, "amount");
        assert_eq!(check_error("\"EUR\"", "\"EUX\"").field, "currency");
        assert_eq!(
            check_error("MERCHANT0000001", "MERCHANT00000012").field,
            "merchant_id"
        );
        assert_eq!(check_error("TERM0001", "").field, "terminal_id");
        assert_eq!(check_error("\"123\"", "\"12\"").field, "cvv");
        assert_eq!(check_error("\"5411\"", "\"541\"").field, "mcc");
    }

    #[test]
    fn parse_errors_never_quote_card_data() {
        let numeric_pan = BODY.replace("\"4111111111111111\"", "4111111111111111");
        let error = serde_json::from_str::<AuthorizationRequest>(&numeric_pan)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("4111111111111111"), "{error}");
        let unknown = BODY.replace("\"mcc\"", "\"track2\"");
        assert!(
            serde_json::from_str::<AuthorizationRequest>(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown field `track2`")
        );
    }

    #[test]
    fn replies_serialize_as_the_contract_says() {
        let reply = AuthorizationResponse {
            id: "tx_1".to_owned(),
            status: Status::Approved,
            response_code: "00".to_owned(),
            auth_code: Some("A1B2C3".to_owned()),
            token: "tok_abc".to_owned(),
            last4: "1111".to_owned(),
            amount: 1250,
            currency: "EUR".to_owned(),
            created_at: "2026-11-22T19:00:00Z".to_owned(),
        };
        let json: serde_json::Value = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["status"], "approved");
        assert_eq!(json["auth_code"], "A1B2C3");
        let problem = Problem::invalid_field(&FieldError {
            field: "expiry",
            reason: "must be YYMM",
        });
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "/problems/invalid-field");
        assert_eq!(json["field"], "expiry");
        assert_eq!(json["status"], 400);
    }
}
