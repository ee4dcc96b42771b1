"""Prometheus metrics of the WebSocket push path."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("coca_ws_connections", "Open WebSocket connections")
DELIVERIES = Counter("coca_ws_deliveries_total", "Envelopes queued to clients", ["source"])
SLOW_CLIENTS_DROPPED = Counter(
    "coca_ws_slow_clients_dropped_total", "Clients disconnected because their send queue overflowed"
)
