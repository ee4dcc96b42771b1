from __future__ import annotations

from coca_platform.settings import KafkaSettings, PlatformSettings, RedisSettings
from pydantic import Field


class Settings(PlatformSettings, RedisSettings, KafkaSettings):
    service_name: str = "ws_gateway"
    http_port: int = 8081
    # The user service, for the JWKS (JWTs) and API-key checks.
    user_service_addr: str = "127.0.0.1:8001"
    # The Kafka topic of agent events; every ws_gateway instance reads all of it.
    events_topic: str = "agent.events"
    # Frames waiting for one client; a live event that finds the queue full disconnects it (1013).
    ws_send_queue_max: int = Field(default=1000, ge=8, le=100_000)
    # Seconds between the server's {"type": "ping"} frames.
    ws_heartbeat_s: float = Field(default=20.0, gt=0)
    # Seconds a client has to authenticate after connecting without ?token=.
    ws_auth_timeout_s: float = Field(default=5.0, gt=0)
    # Conversations one connection may follow at once.
    ws_max_subscriptions: int = Field(default=100, ge=1)
    # Largest message a client may send; a bigger one closes the connection (1009).
    ws_max_message_bytes: int = Field(default=65_536, ge=1024)
    # Event-log entries read per request while replaying.
    ws_replay_batch: int = Field(default=500, ge=1, le=10_000)
