"""``python -m coca_llm_standin --port 8090 [--token-delay-ms 8]``: the stand-in as a process."""

from __future__ import annotations

import argparse
import os

import uvicorn

from coca_llm_standin.app import StandinConfig, create_app, quiet_simulated_crashes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m coca_llm_standin",
        description="NOT A MODEL: a scripted OpenAI-compatible server for tests and `make dev`.",
    )
    parser.add_argument("--host", default=os.environ.get("LLM_STANDIN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LLM_STANDIN_PORT", "8090")))
    parser.add_argument(
        "--token-delay-ms",
        type=float,
        default=float(os.environ.get("LLM_STANDIN_TOKEN_DELAY_MS", "0")),
        help="wait before each streamed token (env LLM_STANDIN_TOKEN_DELAY_MS; default 0)",
    )
    args = parser.parse_args(argv)
    quiet_simulated_crashes()
    uvicorn.run(
        create_app(StandinConfig(token_delay_ms=args.token_delay_ms)),
        host=args.host,
        port=args.port,
        access_log=False,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
