"""Prometheus metrics, one registry per process role set (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "siyu_callbacks_total", "WeCom callbacks by outcome", ["outcome"], registry=r
        )
        self.callback_seconds = Histogram(
            "siyu_callback_seconds",
            "Time to acknowledge a callback",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.archive_records = Counter(
            "siyu_archive_records_total", "Archive records by outcome", ["outcome"], registry=r
        )
        # 1 while the archive puller waits before a record it cannot decrypt (no private
        # key for its publickey_ver, or decryption failing): alert on it, records age.
        self.archive_blocked = Gauge(
            "siyu_archive_blocked",
            "Archive puller stopped before an undecryptable record, by reason",
            ["reason", "publickey_ver"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "siyu_pipeline_stage_seconds",
            "Pipeline stage latency",
            ["stage"],
            registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        )
        self.processed = Counter(
            "siyu_pipeline_items_total", "Stream items by result", ["result"], registry=r
        )
        self.queue_length = Gauge("siyu_queue_length", "Entries in the inbound stream", registry=r)
        self.queue_pending = Gauge(
            "siyu_queue_pending", "Entries delivered but not acknowledged", registry=r
        )
        self.outbox = Gauge("siyu_outbox_items", "Outbox rows by state", ["state"], registry=r)
        self.outbox_calls = Counter(
            "siyu_outbox_calls_total", "Outbox dispatch attempts", ["api", "result"], registry=r
        )
        self.dead_letters = Gauge("siyu_dead_letters_open", "Open dead letters", registry=r)
        # Compliance, counted once per stored message (a redelivery counts nothing).
        self.findings = Counter(
            "siyu_compliance_findings_total",
            "Findings stored, by category and severity",
            ["category", "severity"],
            registry=r,
        )
        self.review_cases = Counter(
            "siyu_review_cases_opened_total", "Compliance review cases opened", registry=r
        )
        self.alerts = Counter("siyu_alerts_total", "Alerts raised, by kind", ["kind"], registry=r)
        # Every periodic job (core.jobs.PeriodicJob): outcome busy | idle | error.
        self.job_runs = Counter(
            "siyu_job_runs_total", "Periodic job runs by outcome", ["job", "outcome"], registry=r
        )
        self.job_seconds = Histogram(
            "siyu_job_seconds",
            "Periodic job run time",
            ["job"],
            registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
        )
