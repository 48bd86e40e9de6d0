#!/usr/bin/env python3
"""Writes helm/modbot/dashboards/modbot.json, modbot's Grafana dashboard.

The dashboard is generated so that its PromQL stays readable and reviewable here, one panel a
line or two; helm/test_chart.py checks that the committed JSON is this script's output and
that every metric it queries is one modbot exports (README.md's "Metrics" table and bridge
section). Edit this file, then run it:

    python3 helm/dashboard.py            # rewrites the JSON
    python3 helm/dashboard.py --check    # exit 1 if the JSON is stale

Every query selects `namespace="$namespace", pod=~"$pod"`: the labels the Prometheus
Operator puts on targets found by the chart's ServiceMonitor (serve) and PodMonitor (bridges).
`*_seconds` metrics and the batch sizes are histograms (buckets shared by every replica, so
quantiles are taken over the sum of all pods' buckets).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "modbot" / "dashboards" / "modbot.json"

SEL = 'namespace="$namespace", pod=~"$pod"'
RATE = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


def sel(extra: str = "") -> str:
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric: str, by: str = "", extra: str = "") -> str:
    inner = f"rate({metric}{sel(extra)}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, metric: str, by: str = "", extra: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel(extra)}[{RATE}])))"


class Builder:
    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "id": self._id(), "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def panel(self, title: str, targets: list[tuple[str, str]], *, unit: str = "short",
              kind: str = "timeseries", w: int = 8, h: int = 8, description: str = "",
              stack: bool = False, max_: float | None = None, mappings: list | None = None) -> None:
        if self.x + w > 24:
            self._newline()
        defaults: dict = {"unit": unit}
        if max_ is not None:
            defaults["min"] = 0
            defaults["max"] = max_
        if mappings:
            defaults["mappings"] = mappings
        if kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                  "showPoints": "never", "spanNulls": False,
                                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        panel = {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self._options(kind),
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                 "range": True, "instant": False}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    @staticmethod
    def _options(kind: str) -> dict:
        legend = {"displayMode": "list", "placement": "bottom", "showLegend": True}
        if kind == "timeseries":
            return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "state-timeline":
            return {"legend": legend, "tooltip": {"mode": "single"}, "showValue": "never",
                    "mergeValues": True, "alignValue": "left", "rowHeight": 0.9}
        return {}

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


UP_DOWN = [{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                         "1": {"text": "up", "color": "green"}}}]
OK_DEGRADED = [{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                             "1": {"text": "degraded", "color": "red"}}}]
# gRPC codes that are the server's fault (or its load), not the caller's.
SERVER_CODES = "internal|unknown|unavailable|resource_exhausted|deadline_exceeded|data_loss|aborted"


def build() -> dict:
    b = Builder()

    b.row("gRPC")
    b.panel("Calls by RPC and code", [(rate("modbot_grpc_requests_total", "rpc, code"), "{{rpc}} {{code}}")],
            unit="reqps", description="Calls per second, counted when they end (refused ones too).")
    not_ok = rate("modbot_grpc_requests_total", "rpc", 'code!="ok"')
    server_side = rate("modbot_grpc_requests_total", "", f'code=~"{SERVER_CODES}"')
    b.panel("Error ratio by RPC", [
        (not_ok + " / " + rate("modbot_grpc_requests_total", "rpc"), "{{rpc}} not ok"),
        (server_side + " / " + rate("modbot_grpc_requests_total"), "all RPCs, server-side codes"),
    ], unit="percentunit", description="Share of calls ending with a code other than ok; the second "
            "line counts only codes that are the server's doing (internal, unavailable, "
            "resource_exhausted, ...), not the caller's (invalid_argument, unauthenticated, cancelled).")
    b.panel("In flight by RPC", [(f'sum by (rpc) (modbot_grpc_requests_in_flight{sel()})', "{{rpc}}")],
            description="Calls and streams open now.")
    unary = 'rpc!="Moderation/StreamModerate"'
    b.panel("Latency p50 / p99 by RPC (unary)", [
        (quantile(0.5, "modbot_grpc_request_duration_seconds", "rpc", unary), "p50 {{rpc}}"),
        (quantile(0.99, "modbot_grpc_request_duration_seconds", "rpc", unary), "p99 {{rpc}}"),
    ], unit="s", w=12, description="Request to end of response. StreamModerate is left out (its "
            "duration is a stream's whole life); per-message latency is the decision latency panel.")
    b.panel("Refused by auth", [(rate("modbot_auth_rejected_total", "code"), "{{code}}")], unit="reqps", w=12)

    b.row("Decisions")
    b.panel("Verdicts by decision", [(rate("modbot_verdicts_total", "decision"), "{{decision}}")],
            unit="ops", stack=True, description="Verdicts per second from Classify and streams.")
    b.panel("Decision latency (receipt to verdict)", [
        (quantile(0.5, "modbot_decision_seconds"), "p50"),
        (quantile(0.9, "modbot_decision_seconds"), "p90"),
        (quantile(0.99, "modbot_decision_seconds"), "p99"),
    ], unit="s", description="Per message, all pods together.")
    b.panel("Reasons (top 15) by kind, reason, mode", [
        (f'topk(15, {rate("modbot_verdict_reasons_total", "kind, reason, mode")})', "{{kind}} {{reason}} ({{mode}})"),
    ], unit="ops", description="Rules by id, model reasons by label; shadow mode would-have-been reasons too.")
    b.panel("Degraded verdicts by component", [
        (rate("modbot_verdicts_degraded_total", "component"), "{{component}}"),
    ], unit="ops", description="Verdicts per second made without a component (model, user_state, store).")
    b.panel("Degraded now, by pod and component", [
        (f"max by (pod, component) (modbot_degraded{sel()})", "{{pod}} {{component}}"),
    ], kind="state-timeline", mappings=OK_DEGRADED)
    b.panel("Model up, by pod", [(f"max by (pod) (modbot_model_up{sel()})", "{{pod}}")],
            kind="state-timeline", mappings=UP_DOWN, description="1 while the model scores, 0 when off or failed.")

    b.row("Model")
    b.panel("Queue depth", [(f"max by (pod) (modbot_model_queue_depth{sel()})", "{{pod}}")],
            description="Messages waiting for the model after a batch was taken.")
    b.panel("Queue wait p50 / p99", [
        (quantile(0.5, "modbot_model_queue_wait_seconds"), "p50"),
        (quantile(0.99, "modbot_model_queue_wait_seconds"), "p99"),
    ], unit="s")
    b.panel("Inference time per batch p50 / p99", [
        (quantile(0.5, "modbot_model_inference_seconds"), "p50"),
        (quantile(0.99, "modbot_model_inference_seconds"), "p99"),
    ], unit="s")
    b.panel("Batch size p50 / p99", [
        (quantile(0.5, "modbot_model_batch_messages"), "messages p50"),
        (quantile(0.99, "modbot_model_batch_messages"), "messages p99"),
        (quantile(0.5, "modbot_model_batch_tokens"), "tokens p50"),
        (quantile(0.99, "modbot_model_batch_tokens"), "tokens p99"),
    ], description="Messages and tokens per model batch.")
    b.panel("Batches per second", [(rate("modbot_model_batch_messages_count", "pod"), "{{pod}}")], unit="ops")
    hits = rate("modbot_model_cache_lookups_total", "", 'result="hit"')
    b.panel("Score cache hit ratio", [
        (hits + " / " + rate("modbot_model_cache_lookups_total"), "window"),
        (f"max by (pod) (modbot_model_cache_hit_ratio{sel()})", "{{pod}} since start"),
    ], unit="percentunit", max_=1)
    b.panel("Held in memory", [
        (f"max by (pod) (modbot_users_in_memory{sel()})", "users {{pod}}"),
        (f"max by (pod) (modbot_model_cache_entries{sel()})", "cached texts {{pod}}"),
    ], description="Users' state and score cache entries each replica holds; both are bounded "
                   "(state.max_users, model.cache_entries), so they level off under load.")
    b.panel("Dropped and failed", [
        (rate("modbot_model_rejected_total"), "rejected (queue full)"),
        (rate("modbot_model_expired_total"), "expired"),
        (rate("modbot_model_cancelled_total"), "cancelled"),
        (rate("modbot_model_timeouts_total"), "timeouts"),
        (rate("modbot_model_failures_total"), "failed batches"),
        (rate("modbot_model_unavailable_total"), "decided without the model"),
    ], unit="ops", w=16)

    b.row("Actions and streams")
    b.panel("Actions by status", [(rate("modbot_actions_total", "status"), "{{status}}")], unit="ops",
            description="Actions by status they reached: pending, recorded, executed, failed, expired.")
    b.panel("Actions recorded by source, commands sent", [
        (rate("modbot_actions_recorded_total", "source"), "recorded {{source}}"),
        (rate("modbot_actions_sent_total"), "commands sent"),
    ], unit="ops")
    b.panel("Bridges connected, streams open", [
        (f"sum(modbot_bridges_connected{sel()})", "bridges connected"),
        (f"sum(modbot_streams_open{sel()})", "streams open"),
    ])
    b.panel("Write failures", [
        (f"sum(increase(modbot_audit_write_failures_total{sel()}[{RATE}]))", "audit"),
        (f"sum(increase(modbot_action_write_failures_total{sel()}[{RATE}]))", "moderator actions"),
        (f"sum(increase(modbot_feedback_write_failures_total{sel()}[{RATE}]))", "feedback"),
    ], description="Records lost: each should be zero.")
    b.panel("Stream errors", [(rate("modbot_stream_errors_total"), "in-band StreamErrors")], unit="ops")
    b.panel("Rule set revision by pod", [
        (f"max by (pod) (modbot_rules_revision{sel()})", "{{pod}}"),
        (f"sum by (pod) (increase(modbot_rules_reload_failures_total{sel()}[{RATE}]))", "{{pod}} reload failures"),
    ], description="Replicas should agree within rules.reload_interval_ms.")

    b.row("Bridges")
    b.panel("Connected (chat, modbot)", [
        (f"max by (pod) (modbot_bridge_chat_connected{sel()})", "{{pod}} chat"),
        (f"max by (pod) (modbot_bridge_server_connected{sel()})", "{{pod}} modbot"),
    ], kind="state-timeline", mappings=UP_DOWN, w=12)
    b.panel("Reconnects", [
        (rate("modbot_bridge_chat_reconnects_total", "pod"), "{{pod}} chat"),
        (rate("modbot_bridge_server_reconnects_total", "pod"), "{{pod}} modbot"),
    ], unit="ops", w=12)
    b.panel("Buffered events (modbot unreachable)", [
        (f"max by (pod) (modbot_bridge_buffered_events{sel()})", "{{pod}}"),
    ], description="Chat events held for modbot; beyond bridge.buffer_events the oldest are dropped.")
    b.panel("Events dropped, stream errors", [
        (rate("modbot_bridge_events_dropped_total", "pod"), "{{pod}} dropped"),
        (rate("modbot_bridge_stream_errors_total", "pod"), "{{pod}} stream errors"),
    ], unit="ops")
    b.panel("Frames skipped by reason", [
        (rate("modbot_bridge_frames_skipped_total", "pod, reason"), "{{pod}} {{reason}}"),
    ], unit="ops")
    b.panel("Commands by outcome", [
        (rate("modbot_bridge_commands_total", "outcome"), "{{outcome}}"),
        (rate("modbot_bridge_commands_repeated_total"), "answered from memory (repeats)"),
    ], unit="ops", w=12)
    b.panel("Throttled by the chat", [(rate("modbot_bridge_throttled_total", "pod"), "{{pod}}")], unit="ops", w=12)
    b.panel("Raid mode (bridges)", [
        (f"sum by (ended) (increase(modbot_bridge_raid_alerts_total{sel()}[{RATE}]))", "alerts, ended={{ended}}"),
        (f"sum by (on, sent) (increase(modbot_bridge_subonly_total{sel()}[{RATE}]))", "SUBONLY on={{on}} sent={{sent}}"),
    ], w=12, description="Raid alerts the bridges got, and the subscriber-only changes they asked of the chat.")
    b.panel("Channels in raid mode", [
        (f"sum by (channel) (modbot_raid_active{sel()})", "{{channel}}"),
        (f"sum(increase(modbot_raids_total{sel()}[{RATE}]))", "raids started"),
    ], w=12, description="1 while a channel is in raid mode on a replica ([policy.raid]).")

    def variable(name: str, label: str, query: str, *, multi: bool) -> dict:
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi,
            **({"allValue": ".+"} if multi else {}),
            "current": {}, "options": [], "hide": 0,
        }

    return {
        "title": "modbot",
        "uid": "modbot-overview",
        "description": "modbot serve and bridges: gRPC, decisions, model, actions, bridges. "
                       "Generated by helm/dashboard.py.",
        "tags": ["modbot"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "options": [], "refresh": 1, "hide": 0},
            variable("namespace", "Namespace", "label_values(modbot_model_up, namespace)", multi=False),
            variable("pod", "Pod",
                     'label_values({__name__=~"modbot_model_up|modbot_bridge_server_connected", '
                     'namespace="$namespace"}, pod)', multi=True),
        ]},
        "panels": b.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python3 helm/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(build()['panels'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
