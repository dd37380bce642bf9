//! Checks of the flags several subcommands share (`iso`, `http`,
//! `overload`, `bench`): the JSON API's target, connections and in-flight,
//! the workload. Each error names the flag.

use crate::args::WorkloadArgs;
use crate::error::Error;
use crate::http::HttpUrl;
use crate::run::Target;
use crate::workload::{AmountDistribution, Kind, Mix, Workload};

/// The JSON API at `target` (`http://HOST:PORT`, the path defaulting to
/// `/v1/authorizations`), as `--target` of `http` and `overload` name it.
pub fn http_target(target: &str, api_key: &str, idempotency_keys: bool) -> Result<Target, Error> {
    let url = HttpUrl::parse(target).map_err(|reason| Error::flag("target", reason))?;
    let url = if url.path == "/" {
        url.with_path("/v1/authorizations")
    } else {
        url
    };
    Ok(Target::Http {
        url,
        api_key: api_key.to_owned(),
        idempotency_keys,
    })
}

/// Checks `--connections` and `--in-flight` (`in_flight_flag` names the
/// latter as the subcommand spells it).
pub fn check_connections(
    connections: u64,
    in_flight: usize,
    in_flight_flag: &'static str,
) -> Result<(), Error> {
    if !(1..=10_000).contains(&connections) {
        return Err(Error::flag("connections", "must be from 1 to 10000"));
    }
    if !(1..=4096).contains(&in_flight) {
        return Err(Error::flag(in_flight_flag, "must be from 1 to 4096"));
    }
    Ok(())
}

/// The workload the shared flags describe, checked.
pub fn workload(mix: Mix, args: &WorkloadArgs) -> Result<Workload, Error> {
    let amounts =
        AmountDistribution::parse(&args.amount).map_err(|reason| Error::flag("amount", reason))?;
    let workload = Workload::new(
        args.seed,
        args.cards,
        args.zipf,
        amounts,
        mix,
        &args.merchants,
        args.invalid_cards,
        args.currency,
        &args.mcc,
    )?;
    if protocol::Currency::from_numeric(args.currency).is_none() {
        return Err(Error::flag("currency", "not an ISO 4217 numeric code"));
    }
    Ok(workload)
}

/// The JSON API sends authorizations only.
pub fn check_http_mix(target: &Target, mix: &Mix) -> Result<(), Error> {
    if let Target::Http { .. } = target
        && mix.kinds().any(|k| k != Kind::Authorization)
    {
        return Err(Error::flag(
            "mix",
            "the JSON API load sends authorizations only",
        ));
    }
    Ok(())
}
