//! What a reload of the configuration file may change while the switch
//! runs, and what it changed. The file is read and checked exactly as at
//! start ([`Config::load`]); this compares the result with the running
//! configuration.
//!
//! - Live (swapped atomically, see `engine/policy.rs`): `[rules]`,
//!   `[card_limits]`, `[merchants.ID]` (limits, API key, admission rate,
//!   and `[security]`'s default rate that feeds them), `[admin]`,
//!   `[admins.NAME]` and `[operators.NAME]`.
//! - Fixed ([`fixed_changes`]): what the switch was built with at start:
//!   listeners and TLS, the journal and its storage, `data_dir`, shards and
//!   their mailboxes, the runtime, duplicates, the lockout, the audit log,
//!   the admission limit, the fleet, and the acquirers (each one's identity
//!   is taken at its TLS handshake and held by its connection). A file that
//!   changes any of them is refused, naming each.
//! - `[vault]` is neither: its keys are reloaded by the vault's own reload
//!   (SIGHUP does both; `POST /admin/vault/reload`), which checks them
//!   against the rows they must still open.

use serde::Serialize;

use crate::config::{Config, MerchantConfig, StaffKey};

/// The keys of the settings that differ between `running` and `next` and
/// cannot change while the switch runs, in the file's order. Empty: the
/// file may be applied.
pub fn fixed_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    // Every field named: a setting added to `Config` does not compile
    // until it is listed here as fixed or as live.
    let Config {
        mode: _,
        data_dir: _,
        iso: _,
        http: _,
        storage: _,
        vault: _, // the vault's own reload
        shards: _,
        worker_threads: _,
        rules: _, // live
        duplicates: _,
        admins: _,    // live
        operators: _, // live
        merchants: _, // live
        security: _,
        audit: _,
        fleet: _,
        acquirers: _,
        overload: _,
    } = running;
    let (a, b) = (running, next);
    let (iso, http) = ((&a.iso, &b.iso), (&a.http, &b.http));
    let same_backend = a.storage.backend() == b.storage.backend();
    let fixed = [
        ("mode", a.mode != b.mode),
        ("data_dir", a.data_dir != b.data_dir),
        ("iso.listen", iso.0.listen != iso.1.listen),
        ("iso.spec", iso.0.spec != iso.1.spec),
        (
            "iso.connections_max",
            iso.0.connections_max != iso.1.connections_max,
        ),
        (
            "iso.in_flight_max",
            iso.0.in_flight_max != iso.1.in_flight_max,
        ),
        (
            "iso.idle_timeout_ms",
            iso.0.idle_timeout_ms != iso.1.idle_timeout_ms,
        ),
        (
            "iso.write_timeout_ms",
            iso.0.write_timeout_ms != iso.1.write_timeout_ms,
        ),
        (
            "iso.frame_length_max",
            iso.0.frame_length_max != iso.1.frame_length_max,
        ),
        ("iso.deadline_ms", iso.0.deadline_ms != iso.1.deadline_ms),
        ("iso.tls", iso.0.tls != iso.1.tls),
        ("http.listen", http.0.listen != http.1.listen),
        ("http.tls", http.0.tls != http.1.tls),
        (
            "http.body_bytes_max",
            http.0.body_bytes_max != http.1.body_bytes_max,
        ),
        (
            "http.header_read_timeout_ms",
            http.0.header_read_timeout_ms != http.1.header_read_timeout_ms,
        ),
        (
            "http.request_timeout_ms",
            http.0.request_timeout_ms != http.1.request_timeout_ms,
        ),
        (
            "http.write_timeout_ms",
            http.0.write_timeout_ms != http.1.write_timeout_ms,
        ),
        (
            "http.connections_max",
            http.0.connections_max != http.1.connections_max,
        ),
        ("http.deadline_ms", http.0.deadline_ms != http.1.deadline_ms),
        ("storage.backend", !same_backend),
        // The same backend with other settings: its queue, batches,
        // segments, connections or URL (never printed: it may hold a
        // password).
        (
            "storage and journal",
            same_backend && a.storage != b.storage,
        ),
        ("shards.count", a.shards.shard_count != b.shards.shard_count),
        (
            "shards.mailbox_capacity",
            a.shards.mailbox_capacity != b.shards.mailbox_capacity,
        ),
        (
            "runtime.worker_threads",
            a.worker_threads != b.worker_threads,
        ),
        ("duplicates", a.duplicates != b.duplicates),
        // Its default merchant rate is live, with the merchants.
        ("security (lockout)", a.security != b.security),
        ("audit", a.audit != b.audit),
        ("overload", a.overload != b.overload),
        ("fleet", a.fleet != b.fleet),
        // A fleet's Redis scripts confirm card velocity with the limits
        // the node started with.
        (
            "card_limits (in a fleet)",
            a.fleet.is_some() && a.shards.card_limits != b.shards.card_limits,
        ),
        ("acquirers", a.acquirers != b.acquirers),
    ];
    fixed
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

/// Every staff key of `config`, by the name the audit log gives it.
fn staff(config: &Config) -> Vec<(String, &StaffKey)> {
    let admins = config
        .admins
        .iter()
        .map(|key| (format!("admin:{}", key.name), key));
    let operators = config
        .operators
        .iter()
        .map(|key| (format!("operator:{}", key.name), key));
    admins.chain(operators).collect()
}

/// What a reload changed, by name only: never a key or its digest. What
/// the admin route answers and the log and audit log record.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LiveChanges {
    /// `rules`, `card_limits`.
    pub sections: Vec<&'static str>,
    pub merchants_added: Vec<String>,
    pub merchants_removed: Vec<String>,
    /// Merchants whose limits, API key or admission rate changed.
    pub merchants_changed: Vec<String>,
    /// `admin:NAME`, `operator:NAME`, as the audit log names them.
    pub staff_added: Vec<String>,
    pub staff_removed: Vec<String>,
    /// Staff whose key changed.
    pub staff_changed: Vec<String>,
}

impl LiveChanges {
    /// What differs between `running` and `next` among the settings that
    /// change live.
    pub fn between(running: &Config, next: &Config) -> LiveChanges {
        let mut changes = LiveChanges::default();
        if running.rules != next.rules {
            changes.sections.push("rules");
        }
        if running.shards.card_limits != next.shards.card_limits {
            changes.sections.push("card_limits");
        }
        let name = |m: &MerchantConfig| m.id.as_str().trim_end().to_owned();
        for merchant in &next.merchants {
            match running.merchants.iter().find(|old| old.id == merchant.id) {
                None => changes.merchants_added.push(name(merchant)),
                Some(old)
                    if old != merchant
                        || running.shards.merchants.get(&merchant.id)
                            != next.shards.merchants.get(&merchant.id) =>
                {
                    changes.merchants_changed.push(name(merchant));
                }
                Some(_) => {}
            }
        }
        for merchant in &running.merchants {
            if !next.merchants.iter().any(|new| new.id == merchant.id) {
                changes.merchants_removed.push(name(merchant));
            }
        }
        let (before, after) = (staff(running), staff(next));
        for (name, key) in &after {
            match before.iter().find(|(old, _)| old == name) {
                None => changes.staff_added.push(name.clone()),
                Some((_, old)) if old != key => changes.staff_changed.push(name.clone()),
                Some(_) => {}
            }
        }
        for (name, _) in &before {
            if !after.iter().any(|(new, _)| new == name) {
                changes.staff_removed.push(name.clone());
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        *self == LiveChanges::default()
    }

    /// One line for the log and the audit log: `rules, card_limits;
    /// merchants added NEW0000000001; staff changed operator:ops`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.sections.is_empty() {
            parts.push(self.sections.join(", "));
        }
        for (what, names) in [
            ("merchants added", &self.merchants_added),
            ("merchants removed", &self.merchants_removed),
            ("merchants changed", &self.merchants_changed),
            ("staff added", &self.staff_added),
            ("staff removed", &self.staff_removed),
            ("staff changed", &self.staff_changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(" ")));
            }
        }
        if parts.is_empty() {
            "nothing changed".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;

    const SHIPPED: &str = include_str!("../../../../config/switch.toml");

    fn parse(text: &str) -> Config {
        Config::parse(
            text,
            Path::new("switch.toml"),
            &Overrides::default(),
            &|_| None,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let running = parse(SHIPPED);
        let next = parse(SHIPPED);
        assert!(fixed_changes(&running, &next).is_empty());
        let changes = LiveChanges::between(&running, &next);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(changes.summary(), "nothing changed");
    }

    #[test]
    fn limits_merchants_and_keys_change_live_and_are_named() {
        let running = parse(SHIPPED);
        let edited = SHIPPED
            .replace(
                "amount_max = 1000000        # minor units",
                "amount_max = 5000",
            )
            .replace(
                "per_minute = { count_max = 5,",
                "per_minute = { count_max = 2,",
            )
            .replace(
                "amount_max_per_transaction = 20000",
                "amount_max_per_transaction = 100",
            )
            .replace("[operators.ops]", "[operators.night]")
            + "\n[merchants.NEW000000000001]\ntps_max = 5\n";
        let next = parse(&edited);
        assert!(fixed_changes(&running, &next).is_empty());
        let changes = LiveChanges::between(&running, &next);
        assert_eq!(changes.sections, ["rules", "card_limits"]);
        assert_eq!(changes.merchants_added, ["NEW000000000001"]);
        assert_eq!(changes.merchants_changed, ["BISTRO00001"]);
        assert!(changes.merchants_removed.is_empty());
        assert_eq!(changes.staff_added, ["operator:night"]);
        assert_eq!(changes.staff_removed, ["operator:ops"]);
        assert_eq!(
            changes.summary(),
            "rules, card_limits; merchants added NEW000000000001; merchants changed BISTRO00001; \
             staff added operator:night; staff removed operator:ops"
        );
        // Back again: the other way round.
        let back = LiveChanges::between(&next, &running);
        assert_eq!(back.merchants_removed, ["NEW000000000001"]);
    }

    #[test]
    fn a_rotated_key_is_a_change_named_without_the_key() {
        let running = parse(SHIPPED);
        let acme = "c0b25ce7613e713a8149047fa3a32d050b46602e7231a0eb46e83883823f7b57";
        assert!(
            SHIPPED.contains(acme),
            "ACME's key digest in the shipped file"
        );
        let rotated = SHIPPED.replace(acme, &"ab".repeat(32));
        let changes = LiveChanges::between(&running, &parse(&rotated));
        assert_eq!(changes.merchants_changed, ["ACME0000001"]);
        let json = serde_json::to_string(&changes).unwrap();
        assert!(!json.contains(acme), "{json}");
        assert!(!json.contains(&"ab".repeat(32)), "{json}");
    }

    #[test]
    fn settings_fixed_at_start_are_each_named() {
        let running = parse(SHIPPED);
        let edited = SHIPPED
            .replace("listen = \"127.0.0.1:8583\"", "listen = \"127.0.0.1:9583\"")
            .replace("count = 0                   # one per core", "count = 7")
            // A live change beside them does not hide them.
            .replace(
                "amount_max = 1000000        # minor units",
                "amount_max = 5000",
            );
        let next = parse(&edited);
        assert_eq!(
            fixed_changes(&running, &next),
            ["iso.listen", "shards.count"]
        );
    }

    #[test]
    fn overrides_count_not_the_file_under_them() {
        // Started with --iso-listen: the file's own address does not matter.
        let overrides = Overrides {
            iso_listen: Some("127.0.0.1:0".to_owned()),
            ..Overrides::default()
        };
        let load = |text: &str| {
            Config::parse(text, Path::new("switch.toml"), &overrides, &|_| None).unwrap()
        };
        let running = load(SHIPPED);
        let next = load(&SHIPPED.replace("127.0.0.1:8583", "127.0.0.1:9583"));
        assert!(fixed_changes(&running, &next).is_empty());
    }
}
