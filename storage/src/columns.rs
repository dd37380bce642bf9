//! The columns of the tables and turning rows back into typed values, the
//! same for both backends: [`transaction_columns!`] lists the columns of
//! `transactions`, a [`Columns`] reads one row column by column, and
//! [`record_from`] builds a [`JournalRecord`] from a `transactions` row.

/// The columns of `transactions`, in the writers' bind order; a macro so
/// that SQL text can be built with `concat!` at compile time. Both backends
/// select and insert exactly this list.
macro_rules! transaction_columns {
    () => {
        "id, created_at_ms, channel, kind, mti, processing_code, amount_minor, \
         currency_numeric, merchant_id, terminal_id, stan, rrn, transmitted_at, token, bin, \
         last4, response_code, auth_code, reason, original_id, decode_us, decide_us, vault_us, \
         acquirer"
    };
}

use sqlx::{ColumnIndex, Decode, Row, Type};

use protocol::domain::{Channel, DeclineReason, Token, TransactionId};
use protocol::iso::Text;
use protocol::{Amount, Currency, Mti, ResponseCode};

use crate::error::StorageError;
use crate::record::{
    IdempotencyEntry, JournalRecord, RecordKind, ReplayRow, SealedPan, StageTimings,
    StoredTransaction,
};

/// A [`JournalRecord`] from a row holding every column of `transactions`
/// (without its sealed PAN and idempotency entry, which live elsewhere).
pub(crate) fn record_from<'r, R: Row>(
    columns: &Columns<'r, R>,
) -> Result<JournalRecord, StorageError>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(JournalRecord {
        id: columns.id("id")?,
        created_at_ms: columns.number("created_at_ms")?,
        channel: columns.parsed("channel", |name| match name {
            "iso" => Some(Channel::Iso),
            "http" => Some(Channel::Http),
            _ => None,
        })?,
        kind: columns.parsed("kind", RecordKind::from_name)?,
        mti: columns.parsed("mti", |text| Mti::parse(text.as_bytes()))?,
        processing_code: columns.optional_text("processing_code")?,
        amount: columns.amount("amount_minor")?,
        currency: columns.currency("currency_numeric")?,
        merchant_id: columns.text("merchant_id")?,
        terminal_id: columns.text("terminal_id")?,
        stan: columns.optional_text("stan")?,
        rrn: columns.optional_text("rrn")?,
        transmitted_at: columns.optional_text("transmitted_at")?,
        token: columns.optional_bytes("token")?.map(Token::from_bytes),
        bin: columns.get("bin")?,
        last4: columns.get("last4")?,
        response_code: columns
            .parsed("response_code", |code| ResponseCode::parse(code.as_bytes()))?,
        auth_code: columns.optional_text("auth_code")?,
        reason: columns
            .get::<Option<&str>>("reason")?
            .map(|name| DeclineReason::from_name(name).ok_or(columns.corrupt("reason")))
            .transpose()?,
        original_id: columns.optional_id("original_id")?,
        acquirer: columns.get("acquirer")?,
        timings: StageTimings {
            decode_us: columns.number("decode_us")?,
            decide_us: columns.number("decide_us")?,
            vault_us: columns.number("vault_us")?,
        },
        sealed_pan: None,
        idempotency: None,
    })
}

/// A [`SealedPan`] from a `vault` row (token, key_id, nonce, ciphertext).
pub(crate) fn sealed_pan_from<'r, R: Row>(row: &'r R) -> Result<SealedPan, StorageError>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let columns = Columns::new(row, "vault");
    Ok(SealedPan {
        token: Token::from_bytes(columns.bytes("token")?),
        key_id: columns.number("key_id")?,
        nonce: columns.bytes("nonce")?,
        ciphertext: columns.get("ciphertext")?,
    })
}

/// A [`StoredTransaction`] from a row holding every column of
/// `transactions` and `reversed_by`.
pub(crate) fn stored_transaction_from<'r, R: Row>(
    row: &'r R,
) -> Result<StoredTransaction, StorageError>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let columns = Columns::new(row, "transactions");
    Ok(StoredTransaction {
        record: record_from(&columns)?,
        reversed_by: columns.optional_id("reversed_by")?,
    })
}

/// An [`IdempotencyEntry`] from an `idempotency` row (merchant_id,
/// idempotency_key, request_hash, response_json, status).
pub(crate) fn idempotency_entry_from<'r, R: Row>(
    row: &'r R,
) -> Result<IdempotencyEntry, StorageError>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let columns = Columns::new(row, "idempotency");
    Ok(IdempotencyEntry {
        merchant_id: columns.get("merchant_id")?,
        key: columns.get("idempotency_key")?,
        request_hash: columns.bytes("request_hash")?,
        response_json: columns.get("response_json")?,
        status: columns.number("status")?,
    })
}

/// A [`ReplayRow`] from a row of the replay query (id, token, merchant_id,
/// amount_minor, currency_numeric, created_at_ms).
pub(crate) fn replay_row_from<'r, R: Row>(row: &'r R) -> Result<ReplayRow, StorageError>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let columns = Columns::new(row, "transactions");
    Ok(ReplayRow {
        id: columns.id("id")?,
        token: Token::from_bytes(columns.bytes("token")?),
        merchant_id: columns.text("merchant_id")?,
        amount: columns.amount("amount_minor")?,
        currency: columns.currency("currency_numeric")?,
        at_ms: columns.number("created_at_ms")?,
    })
}

/// One row of `SELECT key_id, count(*) FROM vault GROUP BY key_id`, checked.
pub(crate) fn key_and_count(key_id: i64, count: i64) -> Result<(u32, u64), StorageError> {
    match (u32::try_from(key_id), u64::try_from(count)) {
        (Ok(key_id), Ok(count)) => Ok((key_id, count)),
        _ => Err(StorageError::Corrupt {
            table: "vault",
            column: "key_id",
        }),
    }
}

/// One row of one table, read column by column; any value that does not
/// decode is `StorageError::Corrupt` naming the column. The same for both
/// backends: SQLite and PostgreSQL rows decode the same Rust types.
pub(crate) struct Columns<'r, R> {
    row: &'r R,
    table: &'static str,
}

impl<'r, R: Row> Columns<'r, R>
where
    &'static str: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    pub(crate) fn new(row: &'r R, table: &'static str) -> Self {
        Columns { row, table }
    }

    pub(crate) fn corrupt(&self, column: &'static str) -> StorageError {
        StorageError::Corrupt {
            table: self.table,
            column,
        }
    }

    pub(crate) fn get<T: Decode<'r, R::Database> + Type<R::Database>>(
        &self,
        column: &'static str,
    ) -> Result<T, StorageError> {
        self.row.try_get(column).map_err(|_| self.corrupt(column))
    }

    pub(crate) fn parsed<T>(
        &self,
        column: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, StorageError> {
        parse(self.get::<&str>(column)?).ok_or(self.corrupt(column))
    }

    pub(crate) fn number<T: TryFrom<i64>>(&self, column: &'static str) -> Result<T, StorageError> {
        T::try_from(self.get::<i64>(column)?).map_err(|_| self.corrupt(column))
    }

    pub(crate) fn bytes<const N: usize>(
        &self,
        column: &'static str,
    ) -> Result<[u8; N], StorageError> {
        self.get::<&[u8]>(column)?
            .try_into()
            .map_err(|_| self.corrupt(column))
    }

    pub(crate) fn optional_bytes<const N: usize>(
        &self,
        column: &'static str,
    ) -> Result<Option<[u8; N]>, StorageError> {
        self.get::<Option<&[u8]>>(column)?
            .map(|bytes| bytes.try_into().map_err(|_| self.corrupt(column)))
            .transpose()
    }

    pub(crate) fn id(&self, column: &'static str) -> Result<TransactionId, StorageError> {
        self.bytes(column).map(TransactionId::from_bytes)
    }

    pub(crate) fn optional_id(
        &self,
        column: &'static str,
    ) -> Result<Option<TransactionId>, StorageError> {
        Ok(self.optional_bytes(column)?.map(TransactionId::from_bytes))
    }

    pub(crate) fn text<const N: usize>(
        &self,
        column: &'static str,
    ) -> Result<Text<N>, StorageError> {
        self.parsed(column, |text| Text::parse(text.as_bytes()))
    }

    pub(crate) fn optional_text<const N: usize>(
        &self,
        column: &'static str,
    ) -> Result<Option<Text<N>>, StorageError> {
        self.get::<Option<&str>>(column)?
            .map(|text| Text::parse(text.as_bytes()).ok_or(self.corrupt(column)))
            .transpose()
    }

    pub(crate) fn amount(&self, column: &'static str) -> Result<Amount, StorageError> {
        Amount::from_minor(self.number(column)?).ok_or(self.corrupt(column))
    }

    pub(crate) fn currency(&self, column: &'static str) -> Result<Currency, StorageError> {
        Currency::from_numeric(self.number(column)?).ok_or(self.corrupt(column))
    }
}
