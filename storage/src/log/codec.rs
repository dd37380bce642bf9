//! The payload of a frame: a compact binary encoding of what one writer
//! turn commits (a batch of records with their riders, a turn of
//! idempotency claims, or a batch of vault rows sealed again). Fixed-width
//! fields as their bytes, numbers little-endian, strings and byte strings
//! with a 16-bit length (the longest, a stored response, is 16 KiB), an
//! optional field behind one byte. About 230 bytes for a card record with
//! a new card's sealed PAN.
//!
//! Decoding is total: bytes this build cannot read (a frame whose checksum
//! holds, so not torn, but whose content is not what this build wrote) are
//! an error naming what did not decode, never a panic.

use protocol::domain::{Channel, DeclineReason, Token, TransactionId};
use protocol::ids::Text;
use protocol::{Amount, Currency, Mti, ResponseCode};

use crate::convert::count_u64;
use crate::record::{
    IdempotencyClaim, IdempotencyEntry, JournalRecord, KeyClaim, RecordKind, SealedPan,
    StageTimings,
};
use crate::rewrap::Rewrapped;
use crate::tables::Keyed;

/// What a frame carries.
#[derive(Debug)]
pub(super) enum Entry {
    Batch(Vec<JournalRecord>),
    Claims(Vec<KeyClaim>),
    Rewrap(Vec<Rewrapped>),
}

const BATCH: u8 = 1;
const CLAIMS: u8 = 2;
const REWRAP: u8 = 3;

/// Why a payload did not decode: the field.
pub(super) type DecodeError = &'static str;

/// Appends the payload of a batch frame to `out`.
pub(super) fn encode_batch(out: &mut Vec<u8>, batch: &[JournalRecord]) {
    out.push(BATCH);
    put_count(out, batch.len());
    for record in batch {
        put_record(out, record);
    }
}

/// Appends the payload of a claims frame to `out`.
pub(super) fn encode_claims(out: &mut Vec<u8>, claims: &[KeyClaim]) {
    out.push(CLAIMS);
    put_count(out, claims.len());
    for claim in claims {
        match claim {
            KeyClaim::Claim(claim) => {
                out.push(0);
                put_str(out, &claim.merchant_id);
                put_str(out, &claim.key);
                out.extend_from_slice(&claim.request_hash);
                out.extend_from_slice(claim.claimed_by.as_bytes());
                out.extend_from_slice(&claim.claimed_at_ms.to_le_bytes());
                out.extend_from_slice(&claim.stale_before_ms.to_le_bytes());
            }
            KeyClaim::Release {
                merchant_id,
                key,
                claimed_by,
            } => {
                out.push(1);
                put_str(out, merchant_id);
                put_str(out, key);
                out.extend_from_slice(claimed_by.as_bytes());
            }
        }
    }
}

/// Appends the payload of a rewrap frame to `out`.
pub(super) fn encode_rewrap(out: &mut Vec<u8>, rows: &[Rewrapped]) {
    out.push(REWRAP);
    put_count(out, rows.len());
    for row in rows {
        out.extend_from_slice(&row.old_key_id.to_le_bytes());
        out.extend_from_slice(&row.old_nonce);
        put_sealed(out, &row.sealed);
    }
}

/// The entry a payload holds.
pub(super) fn decode(payload: &[u8]) -> Result<Entry, DecodeError> {
    let mut input = Input(payload);
    let tag = input.u8("entry")?;
    let count = input.u32("entry count")?;
    let count = usize::try_from(count).map_err(|_| "entry count")?;
    // Every item takes at least a byte: a count past the bytes left is
    // refused before anything is allocated for it.
    if count > input.0.len() {
        return Err("entry count");
    }
    let entry = match tag {
        BATCH => Entry::Batch(
            (0..count)
                .map(|_| input.record())
                .collect::<Result<_, _>>()?,
        ),
        CLAIMS => Entry::Claims(
            (0..count)
                .map(|_| input.claim())
                .collect::<Result<_, _>>()?,
        ),
        REWRAP => Entry::Rewrap(
            (0..count)
                .map(|_| {
                    Ok(Rewrapped {
                        old_key_id: input.u32("rewrap.old_key_id")?,
                        old_nonce: input.array("rewrap.old_nonce")?,
                        sealed: input.sealed()?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
        ),
        _ => return Err("entry kind"),
    };
    if !input.0.is_empty() {
        return Err("bytes after the entry");
    }
    Ok(entry)
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    // A batch is bounded by the journal's queue, far below 2^32.
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
}

/// A string or byte string with its 16-bit length. Every one the journal
/// stores is shorter (`JournalRecord::validate` and `KeyClaim::validate`
/// bound them); a longer one would be cut, so it is bounded here too.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_option<T>(out: &mut Vec<u8>, value: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put(out, value);
        }
    }
}

fn put_fixed<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N]) {
    out.extend_from_slice(bytes);
}

fn put_sealed(out: &mut Vec<u8>, sealed: &SealedPan) {
    out.extend_from_slice(sealed.token.as_bytes());
    out.extend_from_slice(&sealed.key_id.to_le_bytes());
    out.extend_from_slice(&sealed.nonce);
    put_bytes(out, &sealed.ciphertext);
}

fn channel_code(channel: Channel) -> u8 {
    match channel {
        Channel::Iso => 0,
        Channel::Http => 1,
    }
}

fn kind_code(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Authorization => 0,
        RecordKind::Purchase => 1,
        RecordKind::Reversal => 2,
        RecordKind::ReversalAdvice => 3,
    }
}

fn put_record(out: &mut Vec<u8>, record: &JournalRecord) {
    out.extend_from_slice(record.id.as_bytes());
    out.extend_from_slice(&record.created_at_ms.to_le_bytes());
    out.push(channel_code(record.channel));
    out.push(kind_code(record.kind));
    out.extend_from_slice(record.mti.as_bytes());
    put_option(out, record.processing_code.as_ref(), |o, t| {
        put_fixed(o, t.as_bytes())
    });
    out.extend_from_slice(&record.amount.minor().to_le_bytes());
    out.extend_from_slice(&record.currency.numeric().to_le_bytes());
    put_fixed(out, record.merchant_id.as_bytes());
    put_fixed(out, record.terminal_id.as_bytes());
    put_option(out, record.stan.as_ref(), |o, t| put_fixed(o, t.as_bytes()));
    put_option(out, record.rrn.as_ref(), |o, t| put_fixed(o, t.as_bytes()));
    put_option(out, record.transmitted_at.as_ref(), |o, t| {
        put_fixed(o, t.as_bytes())
    });
    put_option(out, record.token.as_ref(), |o, t| {
        put_fixed(o, t.as_bytes())
    });
    put_option(out, record.bin.as_ref(), |o, t| put_str(o, t));
    put_option(out, record.last4.as_ref(), |o, t| put_str(o, t));
    put_str(out, record.response_code.as_str());
    put_option(out, record.auth_code.as_ref(), |o, t| {
        put_fixed(o, t.as_bytes())
    });
    put_option(out, record.reason.as_ref(), |o, r| put_str(o, r.as_str()));
    put_option(out, record.original_id.as_ref(), |o, id| {
        put_fixed(o, id.as_bytes())
    });
    put_option(out, record.acquirer.as_ref(), |o, t| put_str(o, t));
    let timings = &record.timings;
    for us in [timings.decode_us, timings.decide_us, timings.vault_us] {
        out.extend_from_slice(&us.to_le_bytes());
    }
    put_option(out, record.sealed_pan.as_ref(), put_sealed);
    put_option(out, record.idempotency.as_ref(), put_entry);
}

fn put_entry(out: &mut Vec<u8>, entry: &IdempotencyEntry) {
    put_str(out, &entry.merchant_id);
    put_str(out, &entry.key);
    out.extend_from_slice(&entry.request_hash);
    put_str(out, &entry.response_json);
    out.extend_from_slice(&entry.status.to_le_bytes());
}

/// Appends what a snapshot holds (`log::snapshot`): the vault, the
/// idempotency entries with their records, the claims, and the latest
/// record's time. Maps are written in key order, so the same state is the
/// same bytes.
pub(super) fn encode_keyed(out: &mut Vec<u8>, keyed: &Keyed) {
    put_option(out, keyed.latest_ms.as_ref(), |o, ms| {
        o.extend_from_slice(&ms.to_le_bytes());
    });
    out.extend_from_slice(&count_u64(keyed.vault.len()).to_le_bytes());
    for sealed in keyed.vault.values() {
        put_sealed(out, sealed);
    }
    let mut entries: Vec<_> = keyed.idempotency.values().collect();
    entries.sort_by(|a, b| (&a.0.merchant_id, &a.0.key).cmp(&(&b.0.merchant_id, &b.0.key)));
    out.extend_from_slice(&count_u64(entries.len()).to_le_bytes());
    for (entry, by) in entries {
        put_entry(out, entry);
        out.extend_from_slice(by.as_bytes());
    }
    let mut claims: Vec<_> = keyed.claims.iter().collect();
    claims.sort_by(|a, b| a.0.cmp(b.0));
    out.extend_from_slice(&count_u64(claims.len()).to_le_bytes());
    for ((merchant_id, key), (request_hash, by, at_ms)) in claims {
        put_str(out, merchant_id);
        put_str(out, key);
        out.extend_from_slice(request_hash);
        out.extend_from_slice(by.as_bytes());
        out.extend_from_slice(&at_ms.to_le_bytes());
    }
}

/// What [`encode_keyed`] wrote.
pub(super) fn decode_keyed(payload: &[u8]) -> Result<Keyed, DecodeError> {
    let mut input = Input(payload);
    let mut keyed = Keyed {
        latest_ms: input.option("latest_ms", |i| i.u64("latest_ms"))?,
        ..Keyed::default()
    };
    let count = |input: &mut Input<'_>, field| -> Result<u64, DecodeError> {
        let count = input.u64(field)?;
        // Every item takes at least a byte.
        if count > count_u64(input.0.len()) {
            return Err(field);
        }
        Ok(count)
    };
    for _ in 0..count(&mut input, "vault count")? {
        let sealed = input.sealed()?;
        *keyed.vault_keys.entry(sealed.key_id).or_insert(0) += 1;
        keyed.vault.insert(sealed.token, sealed);
    }
    for _ in 0..count(&mut input, "idempotency count")? {
        let entry = input.entry()?;
        let by = input.id("idempotency.claimed_by")?;
        keyed
            .idempotency
            .insert((entry.merchant_id.clone(), entry.key.clone()), (entry, by));
    }
    for _ in 0..count(&mut input, "claims count")? {
        let merchant_id = input.string("claim.merchant_id")?;
        let key = input.string("claim.key")?;
        let row = (
            input.array("claim.request_hash")?,
            input.id("claim.claimed_by")?,
            input.u64("claim.claimed_at_ms")?,
        );
        keyed.claims.insert((merchant_id, key), row);
    }
    if !input.0.is_empty() {
        return Err("bytes after the snapshot");
    }
    Ok(keyed)
}

/// The bytes of a payload not read yet.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize, field: DecodeError) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(field);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: DecodeError) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?.try_into().map_err(|_| field)
    }

    fn u8(&mut self, field: DecodeError) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: DecodeError) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: DecodeError) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: DecodeError) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn bytes(&mut self, field: DecodeError) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    fn string(&mut self, field: DecodeError) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| field)
    }

    fn text<const N: usize>(&mut self, field: DecodeError) -> Result<Text<N>, DecodeError> {
        Text::parse(&self.array::<N>(field)?).ok_or(field)
    }

    fn option<T>(
        &mut self,
        field: DecodeError,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(field),
        }
    }

    fn id(&mut self, field: DecodeError) -> Result<TransactionId, DecodeError> {
        self.array(field).map(TransactionId::from_bytes)
    }

    fn sealed(&mut self) -> Result<SealedPan, DecodeError> {
        Ok(SealedPan {
            token: Token::from_bytes(self.array("sealed_pan.token")?),
            key_id: self.u32("sealed_pan.key_id")?,
            nonce: self.array("sealed_pan.nonce")?,
            ciphertext: self.bytes("sealed_pan.ciphertext")?.to_vec(),
        })
    }

    fn claim(&mut self) -> Result<KeyClaim, DecodeError> {
        match self.u8("claim")? {
            0 => Ok(KeyClaim::Claim(IdempotencyClaim {
                merchant_id: self.string("claim.merchant_id")?,
                key: self.string("claim.key")?,
                request_hash: self.array("claim.request_hash")?,
                claimed_by: self.id("claim.claimed_by")?,
                claimed_at_ms: self.u64("claim.claimed_at_ms")?,
                stale_before_ms: self.u64("claim.stale_before_ms")?,
            })),
            1 => Ok(KeyClaim::Release {
                merchant_id: self.string("release.merchant_id")?,
                key: self.string("release.key")?,
                claimed_by: self.id("release.claimed_by")?,
            }),
            _ => Err("claim"),
        }
    }

    fn record(&mut self) -> Result<JournalRecord, DecodeError> {
        Ok(JournalRecord {
            id: self.id("id")?,
            created_at_ms: self.u64("created_at_ms")?,
            channel: match self.u8("channel")? {
                0 => Channel::Iso,
                1 => Channel::Http,
                _ => return Err("channel"),
            },
            kind: match self.u8("kind")? {
                0 => RecordKind::Authorization,
                1 => RecordKind::Purchase,
                2 => RecordKind::Reversal,
                3 => RecordKind::ReversalAdvice,
                _ => return Err("kind"),
            },
            mti: Mti::parse(&self.array::<4>("mti")?).ok_or("mti")?,
            processing_code: self.option("processing_code", |i| i.text("processing_code"))?,
            amount: Amount::from_minor(self.u64("amount")?).ok_or("amount")?,
            currency: Currency::from_numeric(self.u16("currency")?).ok_or("currency")?,
            merchant_id: self.text("merchant_id")?,
            terminal_id: self.text("terminal_id")?,
            stan: self.option("stan", |i| i.text("stan"))?,
            rrn: self.option("rrn", |i| i.text("rrn"))?,
            transmitted_at: self.option("transmitted_at", |i| i.text("transmitted_at"))?,
            token: self.option("token", |i| i.array("token").map(Token::from_bytes))?,
            bin: self.option("bin", |i| i.string("bin"))?,
            last4: self.option("last4", |i| i.string("last4"))?,
            response_code: ResponseCode::parse(self.bytes("response_code")?)
                .ok_or("response_code")?,
            auth_code: self.option("auth_code", |i| i.text("auth_code"))?,
            reason: self.option("reason", |i| {
                DeclineReason::from_name(&i.string("reason")?).ok_or("reason")
            })?,
            original_id: self.option("original_id", |i| i.id("original_id"))?,
            acquirer: self.option("acquirer", |i| i.string("acquirer"))?,
            timings: StageTimings {
                decode_us: self.u32("decode_us")?,
                decide_us: self.u32("decide_us")?,
                vault_us: self.u32("vault_us")?,
            },
            sealed_pan: self.option("sealed_pan", Input::sealed)?,
            idempotency: self.option("idempotency", Input::entry)?,
        })
    }

    fn entry(&mut self) -> Result<IdempotencyEntry, DecodeError> {
        Ok(IdempotencyEntry {
            merchant_id: self.string("idempotency.merchant_id")?,
            key: self.string("idempotency.key")?,
            request_hash: self.array("idempotency.request_hash")?,
            response_json: self.string("idempotency.response_json")?,
            status: self.u16("idempotency.status")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use protocol::domain::pad;

    use super::*;

    fn full_record() -> JournalRecord {
        let token = Token::from_bytes([3; 16]);
        JournalRecord {
            id: TransactionId::new(1_790_000_000_000, [1; 10]),
            created_at_ms: 1_790_000_000_000,
            channel: Channel::Http,
            kind: RecordKind::ReversalAdvice,
            mti: Mti::parse(b"0420").unwrap(),
            processing_code: Text::parse(b"000000"),
            amount: Amount::from_minor(123_456).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            merchant_id: pad("M0001").unwrap(),
            terminal_id: pad("TERM0001").unwrap(),
            stan: Text::parse(b"000042"),
            rrn: Text::parse(b"000000000042"),
            transmitted_at: Text::parse(b"1122183000"),
            token: Some(token),
            bin: Some("41111111".to_owned()),
            last4: Some("1111".to_owned()),
            response_code: ResponseCode::parse(b"51").unwrap(),
            auth_code: Text::parse(b"A1B2C3"),
            reason: Some(DeclineReason::CardCountLimit),
            original_id: Some(TransactionId::new(1_789_999_999_000, [2; 10])),
            acquirer: Some("acq-north".to_owned()),
            timings: StageTimings {
                decode_us: 1,
                decide_us: 2,
                vault_us: 3,
            },
            sealed_pan: Some(SealedPan {
                token,
                key_id: 7,
                nonce: [4; 12],
                ciphertext: vec![5; 32],
            }),
            idempotency: Some(IdempotencyEntry {
                merchant_id: "M0001".to_owned(),
                key: "k".to_owned(),
                request_hash: [6; 32],
                response_json: "{}".to_owned(),
                status: 201,
            }),
        }
    }

    fn bare_record() -> JournalRecord {
        JournalRecord {
            processing_code: None,
            stan: None,
            rrn: None,
            transmitted_at: None,
            token: None,
            bin: None,
            last4: None,
            auth_code: None,
            reason: None,
            original_id: None,
            acquirer: None,
            sealed_pan: None,
            idempotency: None,
            ..full_record()
        }
    }

    #[test]
    fn every_entry_reads_back_as_written() {
        let batch = vec![full_record(), bare_record()];
        let mut payload = Vec::new();
        encode_batch(&mut payload, &batch);
        assert!(matches!(decode(&payload), Ok(Entry::Batch(read)) if read == batch));

        let claims = vec![
            KeyClaim::Claim(IdempotencyClaim {
                merchant_id: "M0001".to_owned(),
                key: "k".to_owned(),
                request_hash: [8; 32],
                claimed_by: TransactionId::new(5, [5; 10]),
                claimed_at_ms: 5,
                stale_before_ms: 1,
            }),
            KeyClaim::Release {
                merchant_id: "M0001".to_owned(),
                key: "k".to_owned(),
                claimed_by: TransactionId::new(5, [5; 10]),
            },
        ];
        payload.clear();
        encode_claims(&mut payload, &claims);
        assert!(matches!(decode(&payload), Ok(Entry::Claims(read)) if read == claims));

        let rows = vec![Rewrapped {
            old_key_id: 1,
            old_nonce: [9; 12],
            sealed: full_record().sealed_pan.unwrap(),
        }];
        payload.clear();
        encode_rewrap(&mut payload, &rows);
        match decode(&payload) {
            Ok(Entry::Rewrap(read)) => {
                assert_eq!(read.len(), 1);
                assert_eq!(read[0].old_key_id, 1);
                assert_eq!(read[0].old_nonce, [9; 12]);
                assert_eq!(read[0].sealed, rows[0].sealed);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A frame whose checksum holds but whose bytes are not what this
    /// build wrote is an error, never a panic, whatever is cut or changed.
    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let mut payload = Vec::new();
        encode_batch(&mut payload, &[full_record(), bare_record()]);
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..payload.len() {
            let mut damaged = payload.clone();
            damaged[at] ^= 0xFF;
            let _ = decode(&damaged);
        }
        payload.push(0);
        assert_eq!(decode(&payload).err(), Some("bytes after the entry"));
    }
}
