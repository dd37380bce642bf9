//! The keys a card request is known by for duplicates and reversals: the
//! acquirer's own (DE41, DE11, DE7) and the request's owner, the merchant
//! (DE42) and the acquirer a mutual-TLS certificate named. Terminal ids
//! repeat across acquirers and merchants (`TERM0001` is everywhere), so
//! without the owner one acquirer's request could be answered with, or
//! reversed by, another's. The same keys in each place they are looked up:
//! this node's in-flight map and recent index, the fleet's Redis, and the
//! journal.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use protocol::ids::{MerchantId, Stan, TerminalId, TransmissionTime};
use storage::OriginalKeys;

use crate::fleet::request_key;

/// Keys an acquirer identifies one request by, and the request's owner.
///
/// Hashed once, when made: a request's keys are looked up and stored
/// several times (the in-flight map, the recent index, their evictions), and
/// hashing some forty bytes of them with SipHash each time was 10% of a
/// request's instructions. The hash is still keyed (SipHash under a key
/// drawn once per process), because acquirers choose these keys and a hash
/// they could predict would let one of them fill a single bucket; the maps
/// ([`KeyMap`]) then take it as it is.
#[derive(Debug, Clone)]
pub(crate) struct DuplicateKey {
    terminal_id: TerminalId,
    stan: Stan,
    transmitted_at: Option<TransmissionTime>,
    merchant_id: MerchantId,
    /// The acquirer a mutual-TLS certificate named; `None` on plain TCP.
    acquirer: Option<Arc<str>>,
    hash: u64,
}

/// The per-process key of [`DuplicateKey`]'s hash.
static KEYED: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl PartialEq for DuplicateKey {
    fn eq(&self, other: &DuplicateKey) -> bool {
        self.hash == other.hash
            && self.terminal_id == other.terminal_id
            && self.stan == other.stan
            && self.transmitted_at == other.transmitted_at
            && self.merchant_id == other.merchant_id
            && self.acquirer == other.acquirer
    }
}

impl Eq for DuplicateKey {}

impl Hash for DuplicateKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A map by [`DuplicateKey`], hashing each key by the hash it was made with.
pub(crate) type KeyMap<V> = HashMap<DuplicateKey, V, BuildHasherDefault<KeyedAlready>>;

/// The hasher of [`KeyMap`]: a [`DuplicateKey`] writes its own keyed hash,
/// which this passes on.
#[derive(Debug, Default)]
pub(crate) struct KeyedAlready(u64);

impl Hasher for KeyedAlready {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called; anything else is folded in so
        // the map stays correct if that changes.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl DuplicateKey {
    /// A request's keys and owner.
    pub(crate) fn new(
        terminal_id: TerminalId,
        stan: Stan,
        transmitted_at: Option<TransmissionTime>,
        merchant_id: MerchantId,
        acquirer: Option<Arc<str>>,
    ) -> DuplicateKey {
        let hash = KEYED.hash_one((
            &terminal_id,
            &stan,
            &transmitted_at,
            &merchant_id,
            acquirer.as_deref(),
        ));
        DuplicateKey {
            terminal_id,
            stan,
            transmitted_at,
            merchant_id,
            acquirer,
            hash,
        }
    }

    /// The keys a reversal names its original by.
    pub(crate) fn of_original(keys: &OriginalKeys) -> DuplicateKey {
        DuplicateKey::new(
            keys.terminal_id,
            keys.stan,
            keys.transmitted_at,
            keys.merchant_id,
            keys.acquirer.as_deref().map(Arc::from),
        )
    }

    /// Whether the keys carry a transmission time (DE7); a reversal without
    /// DE90 names its original without one.
    pub(crate) fn names_its_time(&self) -> bool {
        self.transmitted_at.is_some()
    }

    /// The same keys but for the transmission time, which `other` (a
    /// reversal's keys for its original, without DE90) does not name.
    pub(crate) fn matches_at_any_time(&self, other: &DuplicateKey) -> bool {
        self.terminal_id == other.terminal_id
            && self.stan == other.stan
            && self.merchant_id == other.merchant_id
            && self.acquirer == other.acquirer
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

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ids::Text;

    fn key(stan: &str, acquirer: Option<&str>) -> DuplicateKey {
        DuplicateKey::new(
            Text::parse(b"TERM0001").unwrap(),
            Text::parse(stan.as_bytes()).unwrap(),
            None,
            protocol::domain::pad("ACME0000001").unwrap(),
            acquirer.map(Arc::from),
        )
    }

    #[test]
    fn keys_made_apart_find_each_other_and_others_do_not() {
        let mut map: KeyMap<u32> = KeyMap::default();
        map.insert(key("000001", None), 1);
        map.insert(key("000001", Some("bank-a")), 2);
        map.insert(key("000002", None), 3);
        assert_eq!(map.get(&key("000001", None)), Some(&1));
        assert_eq!(map.get(&key("000001", Some("bank-a"))), Some(&2));
        assert_eq!(map.get(&key("000001", Some("bank-b"))), None);
        assert_eq!(map.get(&key("000003", None)), None);
        assert_eq!(key("000001", None), key("000001", None));
        assert_ne!(key("000001", None), key("000001", Some("bank-a")));
        assert!(key("000001", None).matches_at_any_time(&key("000001", None)));
        assert!(!key("000001", None).matches_at_any_time(&key("000001", Some("bank-a"))));
    }

    #[test]
    fn the_hash_is_keyed_not_the_fields_alone() {
        // The same fields under SipHash with a fixed key: an acquirer could
        // compute that; the keys' own hash it cannot.
        let fields = key("000001", None);
        let unkeyed = BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one((
            &fields.terminal_id,
            &fields.stan,
            &fields.transmitted_at,
            &fields.merchant_id,
            fields.acquirer.as_deref(),
        ));
        assert_ne!(fields.hash, unkeyed);
        assert_eq!(fields.hash, key("000001", None).hash, "one key per process");
    }
}
