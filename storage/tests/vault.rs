//! The vault: tokens, sealing, rotation and tamper detection, with sealed
//! PANs stored and read back through a real SQLite journal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NOW_MS, TestStore, approved, keys};
use protocol::Pan;
use storage::{AppendOutcome, JournalConfig, StorageError, StoreReader, Vault, bin_and_last4};

fn pan(digits: &str) -> Pan {
    Pan::parse(digits.as_bytes()).unwrap()
}

#[test]
fn tokens_are_deterministic_and_depend_on_the_key() {
    let vault = Vault::new(keys(1), 16).unwrap();
    let visa = pan("4111111111111111");
    let token = vault.tokenize(&visa);
    assert_eq!(vault.tokenize(&visa), token);
    assert_eq!(Vault::new(keys(2), 16).unwrap().tokenize(&visa), token);
    assert_ne!(vault.tokenize(&pan("5500005555555559")), token);
    let mut other_keys = keys(1);
    other_keys.tokenization_key = [0x5B; 32];
    let other_key = Vault::new(other_keys, 16).unwrap();
    assert_ne!(other_key.tokenize(&visa), token);
    // The token's text carries nothing of the PAN.
    assert!(!token.to_string().contains("411111"));
}

#[tokio::test]
async fn sealed_pans_round_trip_through_the_journal() {
    let t = TestStore::open(JournalConfig::default()).await;
    let vault = Vault::new(keys(1), 1024).unwrap();
    let visa = pan("4111111111111111");
    let (token, sealed) = vault.seal_if_new(&visa);
    let sealed = sealed.unwrap();
    assert_eq!(sealed.key_id, 1);
    assert!(!sealed.ciphertext.windows(4).any(|w| w == b"1111"));
    let mut record = approved(NOW_MS, token, "000001");
    (record.bin, record.last4) = {
        let (bin, last4) = bin_and_last4(&visa);
        (Some(bin), Some(last4))
    };
    record.sealed_pan = Some(sealed.clone());
    assert_eq!(
        t.journal.append(record).await.unwrap(),
        AppendOutcome::Recorded
    );
    vault.remember_sealed(&token);
    // Seen again: no second seal on the hot path.
    assert_eq!(vault.seal_if_new(&visa), (token, None));

    assert_eq!(t.store.sealed_pan(token).await.unwrap(), Some(sealed));
    let revealed = vault.reveal(&t.store, token).await.unwrap().unwrap();
    assert_eq!(revealed.expose(), visa.expose());
    let unknown = vault.tokenize(&pan("5500005555555559"));
    assert!(vault.reveal(&t.store, unknown).await.unwrap().is_none());
}

#[tokio::test]
async fn pans_sealed_under_an_old_key_open_after_rotation() {
    let t = TestStore::open(JournalConfig::default()).await;
    let before = Vault::new(keys(1), 0).unwrap();
    let old_card = pan("4111111111111111");
    let old = before.seal(&old_card).unwrap();
    let mut record = approved(NOW_MS, old.token, "000001");
    record.sealed_pan = Some(old.clone());
    t.journal.append(record).await.unwrap();

    // Restarted with key 2 active; key 1 still configured for reading.
    let after = Vault::new(keys(2), 0).unwrap();
    let new_card = pan("5500005555555559");
    let new = after.seal(&new_card).unwrap();
    assert_eq!(new.key_id, 2);
    let mut record = approved(NOW_MS, new.token, "000002");
    record.sealed_pan = Some(new.clone());
    t.journal.append(record).await.unwrap();

    let opened = after.reveal(&t.store, old.token).await.unwrap().unwrap();
    assert_eq!(opened.expose(), old_card.expose());
    let opened = after.reveal(&t.store, new.token).await.unwrap().unwrap();
    assert_eq!(opened.expose(), new_card.expose());
    assert_eq!(
        t.store.sealed_pan(old.token).await.unwrap().unwrap().key_id,
        1
    );

    // A process that was never given key 1 says so, naming only the id.
    let mut two_only = keys(2);
    two_only.encryption_keys.retain(|(id, _)| *id == 2);
    let only_two = Vault::new(two_only, 0).unwrap();
    assert!(matches!(
        only_two.reveal(&t.store, old.token).await,
        Err(StorageError::UnknownKey { key_id: 1 })
    ));
}

#[test]
fn tampered_or_moved_ciphertexts_fail_to_open() {
    let vault = Vault::new(keys(1), 0).unwrap();
    let sealed = vault.seal(&pan("4111111111111111")).unwrap();
    assert!(vault.open(&sealed).is_ok());

    let mut flipped = sealed.clone();
    flipped.ciphertext[0] ^= 1;
    assert!(matches!(
        vault.open(&flipped),
        Err(StorageError::Unseal { key_id: 1 })
    ));
    let mut tag = sealed.clone();
    *tag.ciphertext.last_mut().unwrap() ^= 0x80;
    assert!(vault.open(&tag).is_err());
    let mut nonce = sealed.clone();
    nonce.nonce[11] ^= 1;
    assert!(vault.open(&nonce).is_err());

    // The same ciphertext filed under another card's token: the associated
    // data no longer matches.
    let mut moved = sealed.clone();
    moved.token = vault.tokenize(&pan("5500005555555559"));
    assert!(matches!(
        vault.open(&moved),
        Err(StorageError::Unseal { key_id: 1 })
    ));
    // Relabelled as sealed under key 2.
    let mut relabelled = sealed.clone();
    relabelled.key_id = 2;
    assert!(vault.open(&relabelled).is_err());

    // Errors never carry the digits.
    let message = vault.open(&moved).unwrap_err().to_string();
    assert!(!message.contains("4111"), "{message}");
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let vault = Vault::new(keys(1), 0).unwrap();
    let visa = pan("4111111111111111");
    let a = vault.seal(&visa).unwrap();
    let b = vault.seal(&visa).unwrap();
    assert_eq!(a.token, b.token);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}
