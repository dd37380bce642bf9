//! The token vault: PAN -> token by keyed hash, PAN at rest by AES-256-GCM.
//!
//! - [`Vault::tokenize`] is HMAC-SHA256 of the PAN digits under the
//!   tokenization key, truncated to 16 bytes. Pure CPU: the hot path never
//!   reads the vault, and the same PAN always gives the same token, so card
//!   actors can be keyed by token.
//! - [`Vault::seal`] encrypts the PAN under the active encryption key with a
//!   random 96-bit nonce and the token as associated data. The key id is
//!   stored beside the ciphertext, so after a rotation old entries open with
//!   their old key while new ones use the new key.
//! - The encryption keys and the active id form a keyring held in an
//!   [`ArcSwap`]: [`Vault::rotate`] swaps in a new one while the switch
//!   serves, and `seal`/`open` on the hot path only load a pointer, no lock.
//!   [`rewrap_batch`](crate::rewrap::rewrap_batch) then moves old rows to the
//!   new key a bounded batch at a time.
//! - [`Vault::seal_if_new`] skips sealing a card this process has already
//!   stored, using a fixed-size, lossy set of tokens. Forgetting is safe: the
//!   vault row is written with "insert unless the token is there".
//! - [`Vault::digest`] is HMAC-SHA256 under a key derived from the
//!   tokenization key, for what must be matched later but never read back:
//!   an idempotency key (a client may type a PAN into it) and the card data
//!   of the request stored under it.
//!
//! The tokenization key cannot rotate without changing every token (and so
//! every card's velocity history); only encryption keys rotate.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use protocol::Pan;
use protocol::domain::Token;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::StorageError;
use crate::record::SealedPan;
use crate::store::StoreReader;

/// The vault's keys, from the switch's configuration or environment.
/// Wiped from memory when dropped; `Debug` shows key ids only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VaultKeys {
    /// The HMAC key that turns a PAN into its token.
    pub tokenization_key: [u8; 32],
    /// Every AES-256 key that may have sealed a stored PAN, by key id.
    pub encryption_keys: Vec<(u32, [u8; 32])>,
    /// The key new PANs are sealed under.
    pub active_key_id: u32,
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u32> = self.encryption_keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("VaultKeys")
            .field("encryption_key_ids", &ids)
            .field("active_key_id", &self.active_key_id)
            .finish_non_exhaustive()
    }
}

/// Tokenizes, seals and opens PANs. Shared by reference (`Arc`) across the
/// ingress tasks; every method takes `&self`.
pub struct Vault {
    /// Keyed once; each token clones this state instead of re-deriving the
    /// HMAC pads from the key.
    tokenizer: Hmac<Sha256>,
    /// A keyed fingerprint of the tokenization key (never the key), so a
    /// reload can tell whether it changed.
    tokenization_check: [u8; 16],
    /// The encryption keys and the active id. Swapped whole by
    /// [`Vault::rotate`]; readers load it without a lock.
    keyring: ArcSwap<Keyring>,
    sealed: SealedSet,
    /// Keyed once with the key derived for [`Vault::digest`].
    digester: Hmac<Sha256>,
}

/// What a [`Vault::digest`] stands for. Each purpose is hashed under its own
/// label, so a digest made for one can never be taken for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestPurpose {
    /// An `Idempotency-Key` header, which a client may have filled with a
    /// PAN: stored and looked up by its digest only.
    IdempotencyKey,
    /// The canonical form of a request stored under an idempotency key,
    /// which holds its PAN, expiry and CVV.
    IdempotencyRequest,
}

impl DigestPurpose {
    /// Labels hold no NUL, which ends them in the hashed bytes.
    fn label(self) -> &'static [u8] {
        match self {
            DigestPurpose::IdempotencyKey => b"idempotency key",
            DigestPurpose::IdempotencyRequest => b"idempotency request",
        }
    }
}

/// The encryption keys at one moment. Immutable: a rotation builds a new
/// one. aes-gcm wipes each key schedule on drop (its `zeroize` feature), so
/// an old keyring leaves no key behind once its last reader lets go.
struct Keyring {
    /// Key id, cipher, and the key's check value (see [`key_check`]).
    ciphers: Vec<(u32, Aes256Gcm, [u8; 16])>,
    active_key_id: u32,
}

impl Keyring {
    fn key_ids(&self) -> Vec<u32> {
        self.ciphers.iter().map(|(id, _, _)| *id).collect()
    }
}

/// The key ids and the active id of a vault's keyring; no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringView {
    /// Every key id that can open a stored PAN, ascending.
    pub key_ids: Vec<u32>,
    /// The key id new PANs are sealed under.
    pub active_key_id: u32,
}

/// What a rotation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringChange {
    /// The keyring before.
    pub before: KeyringView,
    /// The keyring now.
    pub after: KeyringView,
}

impl KeyringChange {
    /// Whether anything changed at all.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyring = self.keyring.load();
        f.debug_struct("Vault")
            .field("encryption_key_ids", &keyring.key_ids())
            .field("active_key_id", &keyring.active_key_id)
            .field("sealed_cache_slots", &self.sealed.slots.len())
            .finish_non_exhaustive()
    }
}

/// A key check value: AES-GCM of nothing under the key with a fixed nonce,
/// i.e. the tag alone. It tells two keys apart without revealing either
/// (the usual KCV of key ceremonies); the fixed nonce never seals data.
fn key_check(cipher: &Aes256Gcm) -> Result<[u8; 16], StorageError> {
    let tag = cipher
        .encrypt(
            Nonce::from_slice(&[0xFF; 12]),
            Payload {
                msg: b"",
                aad: b"switch vault key check",
            },
        )
        .map_err(|_| StorageError::Keys("a key check value cannot be computed"))?;
    let mut check = [0u8; 16];
    check.copy_from_slice(tag.get(..16).unwrap_or(&[0; 16]));
    Ok(check)
}

/// The keyring for `keys`, checked: no all-zero key, no duplicate id, no
/// encryption key equal to the tokenization key, an active id that names a
/// key.
fn build_keyring(keys: &VaultKeys) -> Result<Keyring, StorageError> {
    let mut ciphers = Vec::with_capacity(keys.encryption_keys.len());
    for (id, key) in &keys.encryption_keys {
        if *key == [0; 32] {
            return Err(StorageError::Keys("an encryption key is all zeros"));
        }
        if *key == keys.tokenization_key {
            return Err(StorageError::Keys(
                "an encryption key equals the tokenization key",
            ));
        }
        if ciphers.iter().any(|(seen, _, _)| seen == id) {
            return Err(StorageError::Keys("two encryption keys share an id"));
        }
        let cipher = Aes256Gcm::new_from_slice(key)
            .map_err(|_| StorageError::Keys("an encryption key has the wrong length"))?;
        let check = key_check(&cipher)?;
        ciphers.push((*id, cipher, check));
    }
    if !ciphers.iter().any(|(id, _, _)| *id == keys.active_key_id) {
        return Err(StorageError::Keys(
            "the active key id names no encryption key",
        ));
    }
    ciphers.sort_by_key(|(id, _, _)| *id);
    Ok(Keyring {
        ciphers,
        active_key_id: keys.active_key_id,
    })
}

/// The HMAC keyed for [`Vault::digest`]: HMAC(tokenization key, a fixed
/// label) as its key. Derived, so there is no other secret to configure and
/// the PAN's token (the HMAC of digits only) is never a digest; from the
/// tokenization key, which never rotates, so a stored digest keeps matching.
fn digester(tokenizer: &Hmac<Sha256>) -> Result<Hmac<Sha256>, StorageError> {
    let mut mac = tokenizer.clone();
    mac.update(b"switch vault digest key");
    let key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
        .map_err(|_| StorageError::Keys("the digest key has the wrong length"))
}

/// A fingerprint of the tokenization key: HMAC of a fixed label under it.
fn tokenization_check(tokenizer: &Hmac<Sha256>) -> [u8; 16] {
    let mut mac = tokenizer.clone();
    mac.update(b"switch vault tokenization key check");
    let digest = mac.finalize().into_bytes();
    let mut check = [0u8; 16];
    check.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    check
}

impl Vault {
    /// A vault over `keys`, remembering up to about `sealed_cache_slots`
    /// cards already stored (8 bytes each).
    ///
    /// Refuses keys that are all zeros (an unset configuration value, not a
    /// key), a missing active key, duplicate key ids, and an encryption key
    /// equal to the tokenization key.
    pub fn new(keys: VaultKeys, sealed_cache_slots: usize) -> Result<Vault, StorageError> {
        if keys.tokenization_key == [0; 32] {
            return Err(StorageError::Keys("the tokenization key is all zeros"));
        }
        let keyring = build_keyring(&keys)?;
        let tokenizer = <Hmac<Sha256> as Mac>::new_from_slice(&keys.tokenization_key)
            .map_err(|_| StorageError::Keys("the tokenization key has the wrong length"))?;
        Ok(Vault {
            tokenization_check: tokenization_check(&tokenizer),
            digester: digester(&tokenizer)?,
            tokenizer,
            keyring: ArcSwap::from_pointee(keyring),
            sealed: SealedSet::new(sealed_cache_slots),
        })
    }

    /// The id of the key new PANs are sealed under.
    pub fn active_key_id(&self) -> u32 {
        self.keyring.load().active_key_id
    }

    /// The key ids and the active id now.
    pub fn keyring(&self) -> KeyringView {
        let keyring = self.keyring.load();
        KeyringView {
            key_ids: keyring.key_ids(),
            active_key_id: keyring.active_key_id,
        }
    }

    /// Replaces the encryption keys and the active id while the vault is in
    /// use: seals after the swap use the new active key, and every key kept
    /// goes on opening its rows. On `Err` the running keyring is untouched.
    ///
    /// Refused:
    /// - a different tokenization key: every token, and so every card's
    ///   velocity history, idempotency and vault row, would change;
    /// - a key id that is kept but now names another key: its rows would no
    ///   longer open (a key id names one key for ever);
    /// - removing a key id listed in `key_ids_in_use` (ids that still seal
    ///   stored rows; the caller counts them);
    /// - removing the key that is active now: seals already made under it may
    ///   still be on their way to the journal. Make another key active first,
    ///   rewrap, then remove it in a later rotation;
    /// - everything [`Vault::new`] refuses.
    pub fn rotate(
        &self,
        keys: &VaultKeys,
        key_ids_in_use: &[u32],
    ) -> Result<KeyringChange, StorageError> {
        let tokenizer = <Hmac<Sha256> as Mac>::new_from_slice(&keys.tokenization_key)
            .map_err(|_| StorageError::Keys("the tokenization key has the wrong length"))?;
        if !bool::from(tokenization_check(&tokenizer).ct_eq(&self.tokenization_check)) {
            return Err(StorageError::Keys(
                "the tokenization key cannot change while serving: every token would change",
            ));
        }
        let next = build_keyring(keys)?;
        let current = self.keyring.load();
        for (id, _, check) in &current.ciphers {
            match next.ciphers.iter().find(|(next_id, _, _)| next_id == id) {
                Some((_, _, next_check)) if !bool::from(next_check.ct_eq(check)) => {
                    return Err(StorageError::KeyChanged { key_id: *id });
                }
                Some(_) => {}
                None if *id == current.active_key_id => {
                    return Err(StorageError::KeyActive { key_id: *id });
                }
                None if key_ids_in_use.contains(id) => {
                    return Err(StorageError::KeyInUse { key_id: *id });
                }
                None => {}
            }
        }
        let change = KeyringChange {
            before: KeyringView {
                key_ids: current.key_ids(),
                active_key_id: current.active_key_id,
            },
            after: KeyringView {
                key_ids: next.key_ids(),
                active_key_id: next.active_key_id,
            },
        };
        self.keyring.store(Arc::new(next));
        Ok(change)
    }

    /// The card's token: HMAC-SHA256(tokenization key, PAN digits), first 16
    /// bytes. 128 bits keep collisions out of reach for any card population.
    pub fn tokenize(&self, pan: &Pan) -> Token {
        let mut mac = self.tokenizer.clone();
        mac.update(pan.expose().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        Token::from_bytes(token)
    }

    /// A keyed digest of `data` for `purpose`: HMAC-SHA256, under the key
    /// derived from the tokenization key, of the purpose's label, a NUL and
    /// `data`. Keyed, so whoever reads a stored digest cannot recover short
    /// card data behind it by trying every value; the same for the same
    /// input, so a lookup by digest finds it.
    pub fn digest(&self, purpose: DigestPurpose, data: &[u8]) -> [u8; 32] {
        let mut mac = self.digester.clone();
        mac.update(purpose.label());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The card's token and its PAN sealed under the active key.
    ///
    /// Nonces are random: each card is sealed about once, far below the 2^32
    /// messages per key where random 96-bit GCM nonces start to risk a
    /// repeat.
    pub fn seal(&self, pan: &Pan) -> Result<SealedPan, StorageError> {
        self.seal_as(pan, self.tokenize(pan))
    }

    /// [`Vault::seal`] with the token already computed: `token` must be
    /// [`Vault::tokenize`] of `pan`.
    fn seal_as(&self, pan: &Pan, token: Token) -> Result<SealedPan, StorageError> {
        // One load: the key id written is the key that sealed, even if a
        // rotation swaps the keyring meanwhile.
        let keyring = self.keyring.load();
        let key_id = keyring.active_key_id;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher(&keyring, key_id)?
            .encrypt(
                &nonce,
                Payload {
                    msg: pan.expose().as_bytes(),
                    aad: token.as_bytes(),
                },
            )
            .map_err(|_| StorageError::Seal { key_id })?;
        Ok(SealedPan {
            token,
            key_id,
            nonce: nonce.into(),
            ciphertext,
        })
    }

    /// The card's token, and its sealed PAN unless this process has already
    /// stored it. Attach the sealed PAN to the journal record; once `append`
    /// succeeds, call [`Vault::remember_sealed`], so a card whose record
    /// failed to commit is sealed again next time. (Without that call every
    /// sighting seals again: correct, just slower.)
    ///
    /// Never fails, so the hot path has no error to handle: AES-GCM refuses
    /// only messages of gigabytes, so a failed seal cannot happen with a PAN;
    /// were it to, it is logged and the card goes unsealed until seen again.
    pub fn seal_if_new(&self, pan: &Pan) -> (Token, Option<SealedPan>) {
        let token = self.tokenize(pan);
        (token, self.seal_if_new_with_token(pan, token))
    }

    /// [`Vault::seal_if_new`] for a caller that has already tokenized the
    /// card (the switch does so first, for the duplicate check), so the PAN
    /// is hashed once per request: `token` must be [`Vault::tokenize`] of
    /// `pan`. A wrong token would seal an entry that [`Vault::open`] refuses.
    pub fn seal_if_new_with_token(&self, pan: &Pan, token: Token) -> Option<SealedPan> {
        if self.sealed.contains(&token) {
            return None;
        }
        match self.seal_as(pan, token) {
            Ok(sealed) => Some(sealed),
            Err(error) => {
                tracing::error!(%error, "sealing a PAN failed; it stays out of the vault for now");
                None
            }
        }
    }

    /// Notes that the token's PAN is committed to the vault.
    pub fn remember_sealed(&self, token: &Token) {
        self.sealed.insert(token);
    }

    /// The PAN in a sealed entry, checked against its token.
    pub fn open(&self, sealed: &SealedPan) -> Result<Pan, StorageError> {
        let key_id = sealed.key_id;
        let keyring = self.keyring.load();
        let digits = Zeroizing::new(
            cipher(&keyring, key_id)?
                .decrypt(
                    Nonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: sealed.token.as_bytes(),
                    },
                )
                .map_err(|_| StorageError::Unseal { key_id })?,
        );
        let pan = Pan::parse(&digits).ok_or(StorageError::Corrupt {
            table: "vault",
            column: "ciphertext",
        })?;
        // GCM already binds the ciphertext to the token; this also catches a
        // token made under another tokenization key than the one configured.
        let token = self.tokenize(&pan);
        if !bool::from(token.as_bytes().ct_eq(sealed.token.as_bytes())) {
            return Err(StorageError::Unseal { key_id });
        }
        Ok(pan)
    }

    /// The PAN behind `token`, if the vault holds it. Every call is a place
    /// card data leaves the vault: for issuer routing and operator tools only.
    pub async fn reveal(
        &self,
        store: &(impl StoreReader + ?Sized),
        token: Token,
    ) -> Result<Option<Pan>, StorageError> {
        match store.sealed_pan(token).await? {
            Some(sealed) => self.open(&sealed).map(Some),
            None => Ok(None),
        }
    }
}

fn cipher(keyring: &Keyring, key_id: u32) -> Result<&Aes256Gcm, StorageError> {
    keyring
        .ciphers
        .iter()
        .find(|(id, _, _)| *id == key_id)
        .map(|(_, cipher, _)| cipher)
        .ok_or(StorageError::UnknownKey { key_id })
}

/// Fills `bytes` from the operating system's random source, the one the
/// vault's nonces come from; for transaction ids and auth codes.
///
/// Panics only if the OS has no random source, where the vault could not
/// seal a PAN either.
pub fn fill_random(bytes: &mut [u8]) {
    OsRng.fill_bytes(bytes);
}

/// A fixed-size, lock-free, lossy set of tokens: one `u64` per slot, the
/// slot chosen by the token's first 8 bytes and holding a fingerprint of its
/// last 8. Tokens are HMAC output, so both halves are uniform; a newer token
/// landing in an occupied slot simply replaces the older one, which is then
/// forgotten (and sealed once more, harmlessly, if seen again). A false
/// "already stored" needs two different tokens to agree on 127 bits.
struct SealedSet {
    slots: Box<[AtomicU64]>,
}

impl SealedSet {
    fn new(slots: usize) -> SealedSet {
        SealedSet {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot_and_fingerprint(&self, token: &Token) -> Option<(&AtomicU64, u64)> {
        let bytes = token.as_bytes();
        let (high, low) = bytes.split_at(8);
        let index = u64::from_le_bytes(high.try_into().ok()?);
        // The low bit is forced to 1 so a fingerprint is never the empty 0.
        let fingerprint = u64::from_le_bytes(low.try_into().ok()?) | 1;
        let len = u64::try_from(self.slots.len()).ok()?;
        if len == 0 {
            return None;
        }
        let slot = self.slots.get(usize::try_from(index % len).ok()?)?;
        Some((slot, fingerprint))
    }

    fn contains(&self, token: &Token) -> bool {
        self.slot_and_fingerprint(token)
            .is_some_and(|(slot, fingerprint)| slot.load(Ordering::Relaxed) == fingerprint)
    }

    fn insert(&self, token: &Token) {
        if let Some((slot, fingerprint)) = self.slot_and_fingerprint(token) {
            slot.store(fingerprint, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> VaultKeys {
        VaultKeys {
            tokenization_key: [1; 32],
            encryption_keys: vec![(1, [2; 32])],
            active_key_id: 1,
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        let mut zero = keys();
        zero.tokenization_key = [0; 32];
        assert!(Vault::new(zero, 0).is_err());
        let mut missing = keys();
        missing.active_key_id = 2;
        assert!(Vault::new(missing, 0).is_err());
        let mut duplicate = keys();
        duplicate.encryption_keys.push((1, [3; 32]));
        assert!(Vault::new(duplicate, 0).is_err());
        let mut same = keys();
        same.encryption_keys = vec![(1, [1; 32])];
        assert!(Vault::new(same, 0).is_err());
        assert!(Vault::new(keys(), 0).is_ok());
    }

    #[test]
    fn rotation_keeps_old_keys_opening_and_refuses_what_would_break() {
        let vault = Vault::new(keys(), 0).unwrap();
        let pan = Pan::parse(b"4111111111111111").unwrap();
        let old = vault.seal(&pan).unwrap();
        assert_eq!(old.key_id, 1);
        let mut next = keys();
        next.encryption_keys.push((2, [3; 32]));
        next.active_key_id = 2;
        let change = vault.rotate(&next, &[1]).unwrap();
        assert!(change.changed());
        assert_eq!(change.after.key_ids, vec![1, 2]);
        let new = vault.seal(&pan).unwrap();
        assert_eq!(new.key_id, 2);
        assert_eq!(vault.open(&old).unwrap().expose(), pan.expose());
        assert_eq!(vault.open(&new).unwrap().expose(), pan.expose());

        // Removing key 1 while rows use it, or giving id 1 another key: refused.
        let mut without_one = next.clone();
        without_one.encryption_keys.retain(|(id, _)| *id != 1);
        assert!(matches!(
            vault.rotate(&without_one, &[1, 2]),
            Err(StorageError::KeyInUse { key_id: 1 })
        ));
        let mut changed = next.clone();
        changed.encryption_keys[0].1 = [4; 32];
        assert!(matches!(
            vault.rotate(&changed, &[]),
            Err(StorageError::KeyChanged { key_id: 1 })
        ));
        let mut tokenization = next.clone();
        tokenization.tokenization_key = [9; 32];
        assert!(vault.rotate(&tokenization, &[]).is_err());
        // The active key cannot go in the same step.
        let mut back = keys();
        back.encryption_keys = vec![(1, [2; 32])];
        assert!(matches!(
            vault.rotate(&back, &[]),
            Err(StorageError::KeyActive { key_id: 2 })
        ));
        assert_eq!(vault.active_key_id(), 2);
        // Unused and not active: removed.
        assert!(vault.rotate(&without_one, &[2]).is_ok());
        assert!(vault.open(&old).is_err());
        assert_eq!(vault.open(&new).unwrap().expose(), pan.expose());
    }

    #[test]
    fn digests_are_keyed_pinned_and_apart_by_purpose() {
        let vault = Vault::new(keys(), 0).unwrap();
        let digest = vault.digest(DigestPurpose::IdempotencyKey, b"order-7781");
        // Computed independently (Python's hmac): a change to the derivation
        // would orphan every stored idempotency entry.
        assert_eq!(
            protocol::encoding::to_hex(&digest).to_ascii_lowercase(),
            "ed35e44dfe093876b66afd60c6a570809362e417c728de050b8bdc3c395f31b5"
        );
        assert_ne!(
            vault.digest(DigestPurpose::IdempotencyRequest, b"order-7781"),
            digest
        );
        let mut other_key = keys();
        other_key.tokenization_key = [3; 32];
        let other = Vault::new(other_key, 0).unwrap();
        assert_ne!(
            other.digest(DigestPurpose::IdempotencyKey, b"order-7781"),
            digest
        );
        // Never a token of the same digits.
        let pan = Pan::parse(b"4111111111111111").unwrap();
        let card = vault.digest(DigestPurpose::IdempotencyKey, pan.expose().as_bytes());
        assert_ne!(
            card.get(..16),
            Some(vault.tokenize(&pan).as_bytes().as_slice())
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let text = format!("{:?} {:?}", keys(), Vault::new(keys(), 4).unwrap());
        assert!(!text.contains("[2, 2"), "{text}");
        assert!(text.contains("active_key_id: 1"), "{text}");
    }

    #[test]
    fn the_sealed_set_remembers_and_forgets() {
        let vault = Vault::new(keys(), 1).unwrap();
        let pan = Pan::parse(b"4111111111111111").unwrap();
        let (token, sealed) = vault.seal_if_new(&pan);
        assert!(sealed.is_some());
        vault.remember_sealed(&token);
        assert!(vault.seal_if_new(&pan).1.is_none());
        // One slot: another card pushes the first out, which is then sealed again.
        let other = Pan::parse(b"5500005555555559").unwrap();
        vault.remember_sealed(&vault.tokenize(&other));
        assert!(vault.seal_if_new(&pan).1.is_some());
        let none = Vault::new(keys(), 0).unwrap();
        none.remember_sealed(&token);
        assert!(none.seal_if_new(&pan).1.is_some());
    }
}
