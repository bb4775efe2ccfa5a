"""Mutation check of the kernels, quantizers, dequantizers and ops (`python -m tests.mutation`).

Not a pytest module: no file here matches test_*.py, so CI's pytest never collects it."""
