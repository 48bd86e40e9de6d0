//! `Admin.GetStats`: this replica's decision statistics ([`crate::service::stats`]) with the model's
//! queue and cache, and the database's action and appeal counts (every replica's).

use std::collections::HashMap;
use std::time::SystemTime;

use tonic::{Response, Status};

use super::convert;
use super::status::FieldError;
use crate::proto::*;
use crate::service::Services;
use crate::service::stats;

/// `GetStats`. `channel` (empty: all) is checked like any id; `since`, when set, must be a
/// valid time no later than now. The replica's counts cover `since` as far back as it keeps
/// them (`Stats.since` says from when); actions and appeals cover all of `since`.
pub async fn get_stats(
    services: &Services,
    request: GetStatsRequest,
) -> Result<Response<Stats>, Status> {
    let now = SystemTime::now();
    let channel = convert::optional_id(request.channel, "channel")?;
    let since = convert::timestamp_field(request.since, "since")?;
    if since.is_some_and(|since| since > now) {
        return Err(FieldError::new("since", "is in the future").into());
    }

    let report = services.stats.report_at(channel.as_deref(), since, now);
    let outcomes = services.outcome_counts(channel.as_deref(), since).await?;
    let scorer = services.moderator.scorer();
    let period = &report.period;
    Ok(Response::new(Stats {
        messages: period.messages,
        decisions: names(&period.decisions),
        rules: period.rules.clone().into_iter().collect(),
        labels: period.labels.clone().into_iter().collect(),
        actions: outcomes.actions.into_iter().collect(),
        appeals: outcomes.appeals.into_iter().collect(),
        since: Some(period.start.into()),
        windows: report.windows.iter().map(window).collect(),
        queue_depth: scorer.queued() as u64,
        cache_hit_ratio: scorer.cache_hit_ratio(),
        replica: services.stats.replica().to_owned(),
        replica_started_at: Some(report.started_at.into()),
        raids: services
            .moderator
            .raids()
            .active(crate::domain::unix_millis(now))
            .iter()
            .filter(|(c, _)| channel.as_ref().is_none_or(|wanted| wanted == c))
            .map(|(c, r)| convert::raid(c, r))
            .collect(),
    }))
}

fn window(window: &stats::Window) -> StatsWindow {
    StatsWindow {
        name: window.name.to_owned(),
        length: Some(convert::duration(window.length)),
        messages: window.messages,
        decisions: names(&window.decisions),
        rules: window.rules.clone().into_iter().collect(),
        labels: window.labels.clone().into_iter().collect(),
        latency_p50: Some(convert::duration(window.latency.p50)),
        latency_p90: Some(convert::duration(window.latency.p90)),
        latency_p99: Some(convert::duration(window.latency.p99)),
        latency_max: Some(convert::duration(window.latency.max)),
        degraded_verdicts: names(&window.degraded_verdicts),
        degraded_time: window
            .degraded_time
            .iter()
            .map(|(&name, &time)| (name.to_owned(), convert::duration(time)))
            .collect(),
    }
}

fn names<V: Copy>(map: &std::collections::BTreeMap<&'static str, V>) -> HashMap<String, V> {
    map.iter().map(|(&k, &v)| (k.to_owned(), v)).collect()
}
