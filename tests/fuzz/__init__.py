"""GGUF fuzzing of the loading path (`python -m tests.fuzz`; README.md here)."""
