"""NOT A MODEL: a scripted, deterministic OpenAI-compatible stand-in for vLLM, for tests and `make dev`.

It never generates language: replies are echoes and scripted behaviours (tool calls, crashes, stalls,
errors, delays) chosen by ``[[directives]]`` in the last user message; see ``coca_llm_standin.script``.

    async with run_standin(port=0) as base_url:   # "http://127.0.0.1:<port>/v1"
        ...                                        # point LLM_BASE_URL at it
"""

from coca_llm_standin.app import MODEL_ID, StandinConfig, create_app
from coca_llm_standin.script import parse_script, plan_reply
from coca_llm_standin.server import run_standin

__all__ = ["MODEL_ID", "StandinConfig", "create_app", "parse_script", "plan_reply", "run_standin"]
