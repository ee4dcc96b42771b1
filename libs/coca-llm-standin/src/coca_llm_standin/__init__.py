"""NOT A MODEL: a scripted OpenAI-compatible stand-in for vLLM."""
