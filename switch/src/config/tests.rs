use protocol::domain::pad;

use super::secret::url_has_password;
use super::*;
use crate::fleet::OnRedisDown;

const SHIPPED: &str = include_str!("../../../config/switch.toml");

fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("switch.toml"), &Overrides::default(), env)
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn worker_threads_leave_a_core_to_the_journal_unless_configured() {
    assert_eq!(decisions::worker_threads(0, 2), 1);
    assert_eq!(decisions::worker_threads(0, 8), 7);
    assert_eq!(decisions::worker_threads(0, 1), 1, "never none");
    assert_eq!(decisions::worker_threads(0, 0), 1, "never none");
    assert_eq!(decisions::worker_threads(3, 2), 3);
    let configured = SHIPPED.replace("worker_threads = 0", "worker_threads = 4");
    assert_eq!(parse(&configured, &no_env).unwrap().worker_threads, 4);
    let misspelt = SHIPPED.replace("worker_threads = 0", "workers = 4");
    let error = parse(&misspelt, &no_env).unwrap_err().to_string();
    assert!(error.contains("workers"), "{error}");
}

#[test]
fn the_shipped_configuration_loads() {
    let config = parse(SHIPPED, &no_env).unwrap();
    assert_eq!(config.mode, Mode::Dev);
    assert_eq!(
        config.iso.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:8583")
    );
    assert!(config.iso.tls.is_none(), "TLS is off by default");
    assert!(config.http.tls.is_none());
    assert_eq!(config.iso.write_timeout_ms, 5_000);
    assert_eq!(config.http.write_timeout_ms, 5_000);
    assert_eq!(config.http.connections_max, 1024);
    assert_eq!(config.merchants.len(), 2);
    assert_eq!(config.shards.card_limits.per_minute.count_max, Some(5));
    assert_eq!(config.admins.len(), 1);
    assert_eq!(config.admins[0].name, "admin");
    assert_eq!(
        protocol::encoding::from_hex(DEV_SECRETS[2].1).as_deref(),
        Some(&config.admins[0].api_key_sha256[..]),
        "[admin]'s key"
    );
    assert_eq!(config.operators.len(), 1);
    assert_eq!(config.operators[0].name, "ops");
    assert_eq!(config.security.lockout_failures, 10);
    assert_eq!(config.security.lockout_ms, 1_800_000);
    assert_eq!(config.audit.success_interval_ms, 60_000);
    let bistro = config
        .merchants
        .iter()
        .find(|m| m.id.as_str().starts_with("BISTRO"))
        .unwrap();
    assert_eq!(
        bistro.rate,
        Some(RateLimit {
            per_second: 100,
            burst: 200
        })
    );
    assert_eq!(
        format!("{:?}", config.vault),
        "VaultKeys { encryption_key_ids: [1], active_key_id: 1, .. }"
    );
}

/// The database URL and settings of a PostgreSQL configuration.
fn postgres_of(config: &Config) -> (&str, &storage::PostgresConfig) {
    match &config.storage {
        StorageSettings::Postgres {
            database_url,
            postgres,
        } => (database_url, postgres),
        StorageSettings::Sqlite { .. } | StorageSettings::Log { .. } => {
            panic!("not PostgreSQL: {:?}", config.storage)
        }
    }
}

#[test]
fn the_segment_log_is_the_default_journal() {
    let shipped = parse(SHIPPED, &no_env).unwrap();
    assert_eq!(shipped.storage.backend(), Backend::Log);
    match &shipped.storage {
        StorageSettings::Log { log } => assert_eq!(log.segment_bytes, 64 << 20),
        other => panic!("not the log: {other:?}"),
    }
}

#[test]
fn the_segment_log_is_chosen_with_its_segment_size() {
    let bench_log = parse(include_str!("../../../config/bench.log.toml"), &no_env).unwrap();
    assert_eq!(bench_log.storage.backend(), Backend::Log);
    match &bench_log.storage {
        StorageSettings::Log { log } => {
            assert_eq!(log.segment_bytes, 64 << 20);
            assert_eq!(log.journal.batch_rows_max, 1024);
        }
        other => panic!("not the log: {other:?}"),
    }
    let zero_sized = include_str!("../../../config/bench.log.toml")
        .replace("segment_bytes = 67108864", "segment_bytes = 0");
    let error = parse(&zero_sized, &no_env).unwrap_err().to_string();
    assert!(error.contains("storage.segment_bytes"), "{error}");
}

#[test]
fn the_latency_target_follows_the_journal_unless_set() {
    let target_ms = |text: &str| parse(text, &no_env).unwrap().overload.latency_target_us / 1_000;
    let log = include_str!("../../../config/bench.log.toml");
    let sqlite = include_str!("../../../config/bench.toml");
    let postgres = format!(
        "{SHIPPED}\n[storage]\nbackend = \"postgres\"\ndatabase_url = \"dev:postgres://switch@127.0.0.1/switch\"\n"
    );
    assert_eq!(target_ms(SHIPPED), 20, "the segment log");
    assert_eq!(target_ms(log), 20);
    assert_eq!(target_ms(sqlite), 40);
    assert_eq!(target_ms(&postgres), 20);
    let set = format!("{sqlite}\n[overload]\nlatency_target_ms = 25\n");
    assert_eq!(target_ms(&set), 25, "a target set is kept");
    let zero = format!("{sqlite}\n[overload]\nlatency_target_ms = 0\n");
    let error = parse(&zero, &no_env).unwrap_err().to_string();
    assert!(error.contains("overload.latency_target_ms"), "{error}");
}

#[test]
fn the_stall_room_is_half_a_second_unless_set_and_zero_turns_it_off() {
    let room_ms = |text: &str| parse(text, &no_env).unwrap().overload.stall_room_us / 1_000;
    let sqlite = include_str!("../../../config/bench.toml");
    assert_eq!(room_ms(SHIPPED), 500);
    assert_eq!(room_ms(sqlite), 500, "unset");
    assert_eq!(
        room_ms(&format!("{sqlite}\n[overload]\nstall_room_ms = 250\n")),
        250
    );
    assert_eq!(
        room_ms(&format!("{sqlite}\n[overload]\nstall_room_ms = 0\n")),
        0
    );
    let wrong = format!("{sqlite}\n[overload]\nstall_room_ms = \"half a second\"\n");
    let error = parse(&wrong, &no_env).unwrap_err().to_string();
    // A value of the wrong type is named by its line, as every key's is.
    let line = wrong
        .lines()
        .position(|line| line.starts_with("stall_room_ms"))
        .unwrap()
        + 1;
    assert!(
        error.contains(&format!("line {line},")) && error.contains("invalid type"),
        "{error}"
    );
}

#[test]
fn the_shipped_postgres_and_bench_configurations_load() {
    let postgres = include_str!("../../../config/switch.postgres.toml");
    let error = parse(postgres, &no_env).unwrap_err().to_string();
    assert!(
        error.starts_with("switch.toml: storage.database_url: backend \"postgres\" needs a URL"),
        "{error}"
    );
    let overrides = Overrides {
        database_url: Some("postgres://switch@127.0.0.1:5432/switch".to_owned()),
        ..Overrides::default()
    };
    let config = Config::parse(postgres, Path::new("switch.toml"), &overrides, &no_env).unwrap();
    assert_eq!(config.storage.backend(), Backend::Postgres);
    assert_eq!(postgres_of(&config).1.writer_connections, 2);
    assert!(
        !format!("{:?}", config.storage).contains("127.0.0.1"),
        "the URL is never printed"
    );
    let from_env = postgres.replace(
        "[storage]\n",
        "[storage]\ndatabase_url = \"env:SWITCH_DATABASE_URL\"\n",
    );
    let env = |name: &str| (name == "SWITCH_DATABASE_URL").then(|| "postgres://a@b/c".to_owned());
    assert_eq!(
        postgres_of(&parse(&from_env, &env).unwrap()).0,
        "postgres://a@b/c"
    );
    let bench = parse(include_str!("../../../config/bench.toml"), &no_env).unwrap();
    assert_eq!(bench.storage.backend(), Backend::Sqlite);
    let bench_postgres = Config::parse(
        include_str!("../../../config/bench.postgres.toml"),
        Path::new("bench.postgres.toml"),
        &overrides,
        &no_env,
    )
    .unwrap();
    assert_eq!(bench_postgres.storage.backend(), Backend::Postgres);
    let fleet_overrides = Overrides {
        redis_url: Some("redis://127.0.0.1:6379".to_owned()),
        ..overrides.clone()
    };
    let bench_fleet = Config::parse(
        include_str!("../../../config/bench.fleet.toml"),
        Path::new("bench.fleet.toml"),
        &fleet_overrides,
        &no_env,
    )
    .unwrap();
    assert_eq!(bench_fleet.storage.backend(), Backend::Postgres);
    assert!(bench_fleet.fleet.is_some());
}

#[test]
fn fleet_mode_needs_a_redis_url_and_defaults_to_declining() {
    let single = parse(SHIPPED, &no_env).unwrap();
    assert!(single.fleet.is_none(), "no [fleet]: one node");
    let fleet_file = include_str!("../../../config/switch.fleet.toml");
    let database_only = Overrides {
        database_url: Some("postgres://a@b/c".to_owned()),
        ..Overrides::default()
    };
    let error = Config::parse(fleet_file, Path::new("fleet.toml"), &database_only, &no_env)
        .unwrap_err()
        .to_string();
    assert!(error.contains("fleet.redis_url"), "{error}");
    let overrides = Overrides {
        database_url: Some("postgres://a@b/c".to_owned()),
        redis_url: Some("redis://:secret@127.0.0.1:6379/".to_owned()),
        ..Overrides::default()
    };
    let config = Config::parse(fleet_file, Path::new("fleet.toml"), &overrides, &no_env).unwrap();
    let fleet = config.fleet.unwrap();
    assert_eq!(fleet.on_redis_down, OnRedisDown::Decline);
    assert_eq!(fleet.timeout_ms, 200);
    assert!(!format!("{fleet:?}").contains("secret"), "never printed");
    // REDIS_URL without [fleet] (a test environment exports it for
    // every test) leaves a single node alone.
    let config = Config::parse(SHIPPED, Path::new("switch.toml"), &overrides, &no_env).unwrap();
    assert!(config.fleet.is_none());
    let local = SHIPPED.to_owned()
        + "\n[fleet]\nredis_url = \"env:R\"\non_redis_down = \"local\"\ntimeout_ms = 50\n";
    let env = |name: &str| (name == "R").then(|| "redis://r/".to_owned());
    let fleet = parse(&local, &env).unwrap().fleet.unwrap();
    assert_eq!(fleet.redis_url, "redis://r/");
    assert_eq!(fleet.on_redis_down, OnRedisDown::Local);
    assert_eq!(fleet.timeout_ms, 50);
}

#[test]
fn overrides_win_over_the_file() {
    let overrides = Overrides {
        iso_listen: Some("127.0.0.1:0".to_owned()),
        http_listen: Some("127.0.0.1:9".to_owned()),
        data_dir: Some(PathBuf::from("/tmp/node-2")),
        database_url: None,
        redis_url: None,
    };
    let config = Config::parse(SHIPPED, Path::new("switch.toml"), &overrides, &no_env).unwrap();
    assert_eq!(config.iso.listen.map(|a| a.port()), Some(0));
    assert_eq!(config.http.listen.port(), 9);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/node-2"));
}

#[test]
fn production_takes_keys_from_the_environment_only() {
    let production = SHIPPED.replace("mode = \"dev\"", "mode = \"production\"");
    let error = parse(&production, &no_env).unwrap_err().to_string();
    assert!(
        error.starts_with("switch.toml: vault.encryption_keys.1: a `dev:` key is refused"),
        "{error}"
    );

    let from_env = production
        .replace(
            "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
            "\"env:SWITCH_TOKENIZATION_KEY\"",
        )
        .replace(
            "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
            "\"env:SWITCH_VAULT_KEY_1\"",
        );
    let error = parse(&from_env, &no_env).unwrap_err().to_string();
    assert_eq!(
        error,
        "switch.toml: vault.encryption_keys.1: environment variable SWITCH_VAULT_KEY_1 is not set"
    );
    let from_env = without_dev_api_keys(&from_env);
    let env = |name: &str| match name {
        "SWITCH_TOKENIZATION_KEY" => Some("ab".repeat(32)),
        "SWITCH_VAULT_KEY_1" => Some("cd".repeat(32)),
        _ => None,
    };
    let config = parse(&from_env, &env).unwrap();
    assert_eq!(config.vault.tokenization_key, [0xAB; 32]);
    let short = |name: &str| {
        (name == "SWITCH_VAULT_KEY_1")
            .then(|| "cd".to_owned())
            .or_else(|| env(name))
    };
    let error = parse(&from_env, &short).unwrap_err().to_string();
    assert!(error.contains("must be 64 hex digits"), "{error}");
    let literal = production.replace("\"dev:2021", "\"2021");
    assert!(
        parse(&literal, &no_env)
            .unwrap_err()
            .to_string()
            .contains("keys are never written in the file")
    );
}

/// The shipped file with its published API key digests replaced.
fn without_dev_api_keys(text: &str) -> String {
    let mut text = text.to_owned();
    for (i, (_, hex)) in DEV_SECRETS.iter().enumerate().skip(2) {
        text = text.replace(hex, &format!("{i:064x}"));
    }
    text
}

#[test]
fn production_refuses_the_published_dev_secrets_however_given() {
    let production = SHIPPED
        .replace("mode = \"dev\"", "mode = \"production\"")
        .replace(
            "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
            "\"env:T\"",
        )
        .replace(
            "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
            "\"env:K\"",
        );
    let fresh = |name: &str| match name {
        "T" => Some("ab".repeat(32)),
        "K" => Some("cd".repeat(32)),
        _ => None,
    };
    // The published API key digests are still in the file.
    let error = parse(&production, &fresh).unwrap_err().to_string();
    assert!(
        error.contains(".api_key_sha256: is the SHA-256 of the development"),
        "{error}"
    );
    let production = without_dev_api_keys(&production);
    assert!(parse(&production, &fresh).is_ok());
    for (name, value, key) in [
        ("T", DEV_SECRETS[0].1, "vault.tokenization_key"),
        ("K", DEV_SECRETS[1].1, "vault.encryption_keys.1"),
        ("K", DEV_SECRETS[0].1, "vault.encryption_keys.1"),
    ] {
        let env = |asked: &str| {
            if asked == name {
                Some(value.to_owned())
            } else {
                fresh(asked)
            }
        };
        let error = parse(&production, &env).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("switch.toml: {key}: is the development")),
            "{error}"
        );
        assert!(error.contains("production"), "{error}");
        assert!(
            !error.contains(value),
            "the key itself is never printed: {error}"
        );
    }
    // Dev mode still takes them.
    assert!(parse(SHIPPED, &no_env).is_ok());
}

#[test]
fn production_refuses_a_password_written_in_the_file() {
    assert!(url_has_password("postgres://switch:secret@db:5432/switch"));
    assert!(url_has_password("redis://:secret@127.0.0.1:6379/"));
    assert!(url_has_password("postgres://db/switch?user=a&password=b"));
    assert!(!url_has_password("postgres://switch@db:5432/switch"));
    assert!(!url_has_password("redis://127.0.0.1:6379/"));
    let production = without_dev_api_keys(
        &SHIPPED
            .replace("mode = \"dev\"", "mode = \"production\"")
            .replace(
                "\"dev:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
                "\"env:T\"",
            )
            .replace(
                "\"dev:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"",
                "\"env:K\"",
            ),
    );
    let env = |name: &str| match name {
        "T" => Some("ab".repeat(32)),
        "K" => Some("cd".repeat(32)),
        "DB" => Some("postgres://switch:secret@db/switch".to_owned()),
        _ => None,
    };
    let literal = format!(
        "{production}\n[storage]\nbackend = \"postgres\"\ndatabase_url = \"postgres://switch:secret@db/switch\"\n"
    );
    let error = parse(&literal, &env).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "switch.toml: storage.database_url: a password written in the file is refused"
        ),
        "{error}"
    );
    assert!(!error.contains("secret"), "{error}");
    let from_env = literal.replace("\"postgres://switch:secret@db/switch\"", "\"env:DB\"");
    assert!(parse(&from_env, &env).is_ok());
    let no_password = literal.replace("switch:secret@", "switch@");
    assert!(parse(&no_password, &env).is_ok());
    let redis = format!("{production}\n[fleet]\nredis_url = \"redis://:pw@r:6379/\"\n");
    let error = parse(&redis, &env).unwrap_err().to_string();
    assert!(
        error.contains("fleet.redis_url: a password written"),
        "{error}"
    );
}

#[test]
fn the_shipped_tls_configuration_loads() {
    let config = parse(include_str!("../../../config/switch.tls.toml"), &no_env).unwrap();
    let iso_tls = config.iso.tls.unwrap();
    assert_eq!(iso_tls.listen.port(), 8584);
    assert_eq!(iso_tls.client_ca, PathBuf::from("dev-certs/ca.pem"));
    assert_eq!(iso_tls.connections_max, 1024);
    assert_eq!(config.iso.connections_max, 1024);
    assert!(config.http.tls.is_some());
    assert_eq!(config.acquirers[0].name, "north");
}

#[test]
fn tls_listeners_and_acquirers_are_checked() {
    let tls = SHIPPED.replace(
        "[http]\n",
        "[iso.tls]\nlisten = \"127.0.0.1:8584\"\ncertificate = \"s.pem\"\nprivate_key = \"s.key\"\nclient_ca = \"ca.pem\"\n\n[http]\n",
    ) + "\n[acquirers.north]\ncertificate_subject = \"acq-north\"\nmerchants = [\"ACME0000001\"]\nterminals = [\"TERM0001\"]\n";
    let config = parse(&tls, &no_env).unwrap();
    let iso_tls = config.iso.tls.unwrap();
    assert_eq!(iso_tls.listen.port(), 8584);
    assert_eq!(iso_tls.handshake_timeout_ms, 5_000);
    assert_eq!(iso_tls.connections_max, 1024, "its own limit, by default");
    assert_eq!(config.acquirers.len(), 1);
    assert_eq!(config.acquirers[0].name, "north");
    assert_eq!(
        config.acquirers[0].merchants.as_deref(),
        Some(&[pad("ACME0000001").unwrap()][..])
    );
    // The plain listener may be left out once TLS takes acquirers.
    let tls_only = tls.replace("listen = \"127.0.0.1:8583\"\n", "");
    assert!(parse(&tls_only, &no_env).unwrap().iso.listen.is_none());
    let neither = SHIPPED.replace("listen = \"127.0.0.1:8583\"\n", "");
    let error = parse(&neither, &no_env).unwrap_err().to_string();
    assert!(error.starts_with("switch.toml: iso.listen: "), "{error}");

    for (text, key) in [
        (
            SHIPPED.to_owned() + "\n[acquirers.north]\ncertificate_subject = \"acq-north\"\n",
            "acquirers.north",
        ),
        (
            // TLS on, but no acquirer its certificates could name.
            tls.split("\n[acquirers.north]").next().unwrap().to_owned(),
            "iso.tls",
        ),
        (
            tls.clone() + "\n[acquirers.again]\ncertificate_subject = \"ACQ-NORTH\"\n",
            "acquirers.north.certificate_subject",
        ),
        (
            tls.replace("[\"TERM0001\"]", "[\"TERMINAL_TOO_LONG\"]"),
            "acquirers.north.terminals",
        ),
        (
            tls.replace("handshake_timeout_ms", "x").replace(
                "client_ca = \"ca.pem\"\n",
                "client_ca = \"ca.pem\"\nhandshake_timeout_ms = 0\n",
            ),
            "iso.tls.handshake_timeout_ms",
        ),
        (
            tls.replace(
                "client_ca = \"ca.pem\"\n",
                "client_ca = \"ca.pem\"\nconnections_max = 0\n",
            ),
            "iso.tls.connections_max",
        ),
    ] {
        let error = parse(&text, &no_env).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("switch.toml: {key}: ")),
            "{key}: {error}"
        );
    }
}

#[test]
fn bad_values_name_their_key() {
    for (from, to, key) in [
        (
            "listen = \"127.0.0.1:8583\"",
            "listen = \"localhost\"",
            "iso.listen",
        ),
        (
            "connections_max = 1024      # plain",
            "connections_max = 0 # plain",
            "iso.connections_max",
        ),
        (
            "write_timeout_ms = 5000",
            "write_timeout_ms = 0",
            "iso.write_timeout_ms",
        ),
        (
            "connections_max = 1024      # one more",
            "connections_max = 0 # one more",
            "http.connections_max",
        ),
        (
            "write_timeout_ms = 5000     # replies",
            "write_timeout_ms = 0 # replies",
            "http.write_timeout_ms",
        ),
        (
            "active_key_id = 1",
            "active_key_id = 2",
            "vault.active_key_id",
        ),
        (
            "{ from = \"400000\", to = \"400099\" }",
            "{ from = \"4000\", to = \"400099\" }",
            "rules.blocked_bins[0]",
        ),
        (
            "allowed_mccs = [\"5812\", \"5814\"]",
            "allowed_mccs = [\"58\"]",
            "merchants.BISTRO00001.allowed_mccs",
        ),
        (
            "[merchants.BISTRO00001]",
            "[merchants.BISTRO00001_TOO_LONG]",
            "merchants.BISTRO00001_TOO_LONG",
        ),
    ] {
        assert!(SHIPPED.contains(from), "{from}");
        let error = parse(&SHIPPED.replace(from, to), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("switch.toml: {key}: ")),
            "{key}: {error}"
        );
    }
    for (from, to, key) in [
        (
            "lockout_failures = 10",
            "lockout_failures = 0",
            "security.lockout_failures",
        ),
        (
            "rate_per_second = 100",
            "rate_per_second = 0",
            "merchants.BISTRO00001.rate_per_second",
        ),
        (
            "rate_per_second = 100",
            "rate_per_seconds = 100",
            "unknown field `rate_per_seconds`",
        ),
        ("[operators.ops]", "[operators.\"o p\"]", "operators.o p"),
        (
            "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca",
            "df76ff796f70d2c9cb055ea6280553caa27eda26b70e01082c160de75a05a4a9",
            "operators.ops.api_key_sha256",
        ),
    ] {
        assert!(SHIPPED.contains(from), "{from}");
        let error = parse(&SHIPPED.replace(from, to), &no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{key}: {error}");
        assert!(error.starts_with("switch.toml: "), "{error}");
    }
    let only_burst = SHIPPED.replace("rate_per_second = 100       #", "#");
    let error = parse(&only_burst, &no_env).unwrap_err().to_string();
    assert!(
        error.starts_with("switch.toml: merchants.BISTRO00001.rate_burst: needs rate_per_second"),
        "{error}"
    );
    // A default rate in [security] applies to a merchant without its own.
    let default_rate = SHIPPED.replace(
        "lockout_origins_max = 100000",
        "lockout_origins_max = 100000\nrate_per_second = 7",
    );
    let config = parse(&default_rate, &no_env).unwrap();
    let acme = config
        .merchants
        .iter()
        .find(|m| m.id.as_str().starts_with("ACME"))
        .unwrap();
    assert_eq!(
        acme.rate,
        Some(RateLimit {
            per_second: 7,
            burst: 7
        })
    );
    let typo = parse(&SHIPPED.replace("[shards]", "[shard]"), &no_env)
        .unwrap_err()
        .to_string();
    assert!(typo.contains("unknown field `shard`"), "{typo}");
}

/// Every secret the shipped development configurations publish is one
/// production refuses: a key added to config/*.toml without being
/// listed in DEV_SECRETS fails here.
#[test]
fn every_published_development_secret_is_refused_in_production() {
    fn walk(value: &toml::Value, found: &mut Vec<String>) {
        match value {
            toml::Value::String(text) => {
                let hex = text.strip_prefix("dev:").unwrap_or(text);
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    found.push(hex.to_ascii_lowercase());
                }
            }
            toml::Value::Table(table) => table.values().for_each(|v| walk(v, found)),
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for text in [
        include_str!("../../../config/switch.toml"),
        include_str!("../../../config/bench.toml"),
        include_str!("../../../config/bench.postgres.toml"),
        include_str!("../../../config/bench.fleet.toml"),
        include_str!("../../../config/switch.postgres.toml"),
        include_str!("../../../config/switch.fleet.toml"),
    ] {
        walk(&toml::from_str::<toml::Value>(text).unwrap(), &mut found);
    }
    assert!(found.len() >= 6, "{found:?}");
    for hex in found {
        assert!(
            DEV_SECRETS.iter().any(|(_, known)| *known == hex),
            "{hex} is published in config/ but not in DEV_SECRETS"
        );
    }
}
