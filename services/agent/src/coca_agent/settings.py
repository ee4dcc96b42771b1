"""The agent service's settings (environment variables, case-insensitive)."""

from __future__ import annotations

from coca_platform.settings import (
    AmqpSettings,
    DatabaseSettings,
    KafkaSettings,
    PlatformSettings,
    RedisSettings,
)
from pydantic import Field, SecretStr


class Settings(PlatformSettings, DatabaseSettings, RedisSettings, KafkaSettings, AmqpSettings):
    service_name: str = "agent"
    http_port: int = 8002

    # The OpenAI-compatible LLM server (vLLM in production; the stand-in in tests and `make dev`).
    llm_base_url: str = "http://127.0.0.1:8090/v1"
    llm_model: str = "qwen2.5-1.5b-instruct"  # used by agents that name no model
    llm_api_key: SecretStr | None = None
    # Seconds until the first streamed chunk arrives (connect and queueing included).
    llm_timeout_s: float = Field(default=60.0, gt=0)
    # Longest silence between two chunks of a stream, in seconds.
    llm_idle_timeout_s: float = Field(default=30.0, gt=0)

    # Longest user message, in characters.
    max_message_chars: int = Field(default=32_000, ge=1)
    # LLM turns that may ask for tools in one run; a run that needs more fails (too_many_tool_steps).
    max_tool_steps: int = Field(default=5, ge=0)
    # Earlier messages of the conversation sent to the LLM with a new one.
    history_messages: int = Field(default=20, ge=0)
    # Runs executing at once in this process; more are refused with 503 (at_capacity).
    max_concurrent_runs: int = Field(default=64, ge=1)
    # An idle SSE stream gets a `: ping` comment this often, in seconds.
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    # How long shutdown waits for cancelled runs to record their failure, in seconds.
    run_shutdown_grace_s: float = Field(default=5.0, gt=0)

    # Billing: quotas are reserved there before each run ("" turns quotas off; usage is still recorded).
    billing_service_addr: str = "http://127.0.0.1:8005"
    # Tokens held for a run's reply on top of its context when reserving quota.
    billing_reserve_tokens: int = Field(default=4096, ge=0)
    # Plugin service: tool definitions and invocations ("" turns tools off).
    plugin_service_addr: str = "http://127.0.0.1:8006"
    # Seconds the agent waits for one tool invocation (keep above the plugin service's TOOL_TIMEOUT_S).
    plugin_timeout_s: float = Field(default=30.0, gt=0)
    # Ended runs whose usage record Kafka never acknowledged are republished: checked this often,
    # for runs that ended at least this long ago (seconds).
    usage_sweep_interval_s: float = Field(default=30.0, gt=0)
    usage_sweep_grace_s: float = Field(default=60.0, ge=0)
    # Memory service gRPC address, for knowledge-base retrieval before the LLM call ("" turns it off).
    memory_grpc_addr: str = "127.0.0.1:50051"
    # Chunks retrieved per question from the agent's knowledge bases.
    retrieval_top_k: int = Field(default=5, ge=1, le=50)
    # Answer chat-channel messages (RabbitMQ channel.inbound.*) in this process.
    channel_worker_enabled: bool = True
    # Channel turns run at once per channel type, and the longest one may take (seconds).
    channel_worker_prefetch: int = Field(default=8, ge=1)
    channel_turn_timeout_s: float = Field(default=300.0, gt=0)
