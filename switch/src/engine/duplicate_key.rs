//! The keys a card request is known by for duplicates and reversals: the
//! acquirer's own (DE41, DE11, DE7) and the request's owner, the merchant
//! (DE42) and the acquirer a mutual-TLS certificate named. Terminal ids
//! repeat across acquirers and merchants (`TERM0001` is everywhere), so
//! without the owner one acquirer's request could be answered with, or
//! reversed by, another's. The same keys in each place they are looked up:
//! this node's in-flight map and recent index, the fleet's Redis, and the
//! journal.

use std::sync::Arc;

use protocol::ids::{MerchantId, Stan, TerminalId, TransmissionTime};
use storage::OriginalKeys;

use crate::fleet::request_key;

/// Keys an acquirer identifies one request by, and the request's owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DuplicateKey {
    pub(crate) terminal_id: TerminalId,
    pub(crate) stan: Stan,
    pub(crate) transmitted_at: Option<TransmissionTime>,
    pub(crate) merchant_id: MerchantId,
    /// The acquirer a mutual-TLS certificate named; `None` on plain TCP.
    pub(crate) acquirer: Option<Arc<str>>,
}

impl DuplicateKey {
    /// The keys a reversal names its original by.
    pub(crate) fn of_original(keys: &OriginalKeys) -> DuplicateKey {
        DuplicateKey {
            terminal_id: keys.terminal_id,
            stan: keys.stan,
            transmitted_at: keys.transmitted_at,
            merchant_id: keys.merchant_id,
            acquirer: keys.acquirer.as_deref().map(Arc::from),
        }
    }

    /// The same keys, to look the request up in the journal.
    pub(crate) fn original_keys(&self) -> OriginalKeys {
        OriginalKeys {
            terminal_id: self.terminal_id,
            stan: self.stan,
            transmitted_at: self.transmitted_at,
            merchant_id: self.merchant_id,
            acquirer: self.acquirer.as_deref().map(str::to_owned),
        }
    }

    /// The same keys in the fleet's Redis.
    pub(crate) fn redis_key(&self) -> String {
        request_key(
            self.terminal_id.as_str().trim_end(),
            self.stan.as_str(),
            self.transmitted_at.as_ref().map(|at| at.as_str()),
            self.merchant_id.as_str(),
            self.acquirer.as_deref(),
        )
    }
}
