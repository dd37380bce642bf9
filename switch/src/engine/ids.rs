//! Transaction ids and auth codes, drawn from a random source the engine is
//! given: the operating system's in production, a seeded one in tests and
//! simulations, so a run can be repeated id for id.

use std::sync::atomic::{AtomicU64, Ordering};

use protocol::domain::TransactionId;
use protocol::ids::AuthCode;

/// Where the engine's random bits come from.
pub trait Random: Send + Sync + 'static {
    /// Fills `bytes` with random bits.
    fn fill(&self, bytes: &mut [u8]);
}

/// The operating system's random source, the one the vault's nonces come
/// from, drawn a pool at a time per thread: one system call serves about
/// twenty requests' ids and auth codes instead of two each (`getrandom` was
/// 1.5% of the switch's CPU at its peak). Bytes handed out are wiped from
/// the pool, so none is ever given twice.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

/// Bytes of operating-system randomness a thread draws at once.
const POOL_BYTES: usize = 512;

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; POOL_BYTES], next: POOL_BYTES })
    };
}

/// One thread's unused random bytes: `bytes[next..]`.
struct Pool {
    bytes: [u8; POOL_BYTES],
    next: usize,
}

impl Pool {
    fn fill(&mut self, out: &mut [u8]) {
        if out.len() > POOL_BYTES {
            storage::fill_random(out);
            return;
        }
        if POOL_BYTES - self.next < out.len() {
            storage::fill_random(&mut self.bytes);
            self.next = 0;
        }
        let end = self.next + out.len();
        if let Some(drawn) = self.bytes.get_mut(self.next..end) {
            out.copy_from_slice(drawn);
            drawn.fill(0);
        }
        self.next = end;
    }
}

impl Random for OsRandom {
    fn fill(&self, bytes: &mut [u8]) {
        POOL.with(|pool| pool.borrow_mut().fill(bytes));
    }
}

/// A repeatable source for tests and simulations (SplitMix64): the same seed
/// gives the same bits in the same order of calls. Not for production: its
/// output is predictable.
#[derive(Debug)]
pub struct SeededRandom {
    state: AtomicU64,
}

impl SeededRandom {
    /// A source starting from `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for SeededRandom {
    fn fill(&self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(word.get(..chunk.len()).unwrap_or(&[]));
        }
    }
}

/// A new transaction id for a transaction created at `now_ms`.
pub(crate) fn transaction_id(random: &dyn Random, now_ms: u64) -> TransactionId {
    let mut bits = [0u8; 10];
    random.fill(&mut bits);
    TransactionId::new(now_ms, bits)
}

/// A new six-character auth code.
pub(crate) fn auth_code(random: &dyn Random) -> AuthCode {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKLMNPQRSTUVWX";
    let mut bits = [0u8; 6];
    random.fill(&mut bits);
    let code = bits.map(|b| ALPHABET[usize::from(b % 32)]);
    match AuthCode::parse(&code) {
        Some(code) => code,
        // Six characters of a printable alphabet always parse.
        None => unreachable!("auth code alphabet is printable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_pool_never_hands_out_the_same_bytes_twice() {
        // Draws of every size cross many refills of the pool; 16-byte draws
        // that repeated would mean bytes given twice.
        let mut seen = std::collections::HashSet::new();
        for n in 0..2_000usize {
            let mut bytes = [0u8; 16];
            OsRandom.fill(&mut bytes[..1 + n % 16]);
            let mut whole = [0u8; 16];
            OsRandom.fill(&mut whole);
            assert!(seen.insert(whole), "draw {n} repeated");
        }
        let mut large = vec![0u8; POOL_BYTES + 1];
        OsRandom.fill(&mut large);
        assert!(large.iter().any(|&byte| byte != 0), "larger than the pool");
    }

    #[test]
    fn a_seed_repeats_its_ids_and_codes() {
        let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
        assert_eq!(transaction_id(&a, 1_000), transaction_id(&b, 1_000));
        assert_eq!(auth_code(&a), auth_code(&b));
        assert_ne!(transaction_id(&a, 1_000), transaction_id(&a, 1_000));
        let other = SeededRandom::new(8);
        assert_ne!(transaction_id(&other, 1_000), transaction_id(&b, 1_000));
    }
}
