//! Tokens pinned to values computed outside this code base. A token is what
//! every stored card is found by (its velocity history, its vault row, its
//! idempotent replays), so a change to how tokens are derived would orphan
//! every stored card while the other tests, which only compare tokens with
//! each other, stay green.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::Pan;
use protocol::domain::Token;
use storage::{Vault, VaultKeys};

/// The token of each PAN under the development tokenization key
/// (`dev:000102…1f`, bytes 0x00 to 0x1f): HMAC-SHA256 of the PAN's ASCII
/// digits, its first 16 bytes, as `tok_` and lower-case hex. Computed with
/// Python's hmac, not with this code:
///
/// ```text
/// python3 -c 'import hmac,hashlib;k=bytes(range(32));[print(p,"tok_"+hmac.new(k,p.encode(),hashlib.sha256).hexdigest()[:32]) for p in ["4111111111111111","5500005555555559","378282246310005","123456789012","6011000000000000004"]]'
/// ```
///
/// (`printf %s 4111111111111111 | openssl dgst -sha256 -mac HMAC -macopt
/// hexkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f`
/// gives the same digests.) The PANs span 12 to 19 digits: the digits are
/// hashed as they are, with no padding to a fixed length.
const PINNED: [(&str, &str); 5] = [
    ("4111111111111111", "tok_0622241201382a45912fb22828b3f7db"),
    ("5500005555555559", "tok_440bdd9d87e6fced6c3751966741e1df"),
    ("378282246310005", "tok_800bccdcf62a4908b23b49512a49f8ea"),
    ("123456789012", "tok_15e5b9b8ab2df6f5d9a217f3f36bdf87"),
    (
        "6011000000000000004",
        "tok_e1d2989fc9c240e317b4d9d4b23b1133",
    ),
];

/// `first`, `first + 1`, … `first + 31`: the development keys' pattern.
fn counting_key(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first + u8::try_from(i).unwrap())
}

/// A vault over the development keys. The encryption key (`dev:2021…3f`)
/// plays no part in a token; the vault only refuses to start without one.
fn dev_vault() -> Vault {
    let keys = VaultKeys {
        tokenization_key: counting_key(0x00),
        encryption_keys: vec![(1, counting_key(0x20))],
        active_key_id: 1,
    };
    Vault::new(keys, 16).unwrap()
}

#[test]
fn tokens_are_the_hmac_computed_outside_the_switch() {
    let vault = dev_vault();
    for (digits, expected) in PINNED {
        let token = vault.tokenize(&Pan::parse(digits.as_bytes()).unwrap());
        assert_eq!(token.to_string(), expected, "the token of {digits}");
        assert_eq!(
            Token::parse(expected),
            Some(token),
            "{expected} parses back"
        );
    }
}
