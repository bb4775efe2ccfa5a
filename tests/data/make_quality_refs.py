"""Rebuild the llama.cpp reference outputs of the imatrix and KL-divergence tests (run by hand,
never by the tests; see tests/data/README.md):

    LLAMA_BIN=/path/to/llama.cpp/build/bin python tests/data/make_quality_refs.py

1. the tiny model: tests/tinymodels.make_tiny_model(arch="llama", wtype="F32", seed=0,
   n_embd=256, head_dim=64, n_ff=512) (rebuilt bit for bit by the tests; its sha256 is kept);
2. golden/imatrix/: llama-imatrix on it over text.txt (the first 600 bytes of
   golden/gemma/apache-2.0.txt), -c 64 -b 64 -t 1: the GGUF file, with --process-output, the
   legacy .dat of the plain run, and llama-imatrix --in-file of the .dat and the
   --process-output file (a combination), and -b 56 --chunks 5 (each chunk run as 56 + 8
   tokens, so the 8-row matmuls are skipped); stdout of the first two;
3. golden/kld/: tinyllm's Q4_K_M of the tiny model (only its sha256: the tests rebuild it), and
   llama-perplexity -c 64 -b 64 --chunks 4: --kl-divergence-base base.kld on the F32 model, then
   --kl-divergence with the Q4_K_M model on that file; stdout of both.
golden/quality-models.json keeps the recipe and the sha256 of both models.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tinymodels import make_tiny_model  # noqa: E402

MODEL_ARGS = dict(arch="llama", wtype="F32", seed=0, n_embd=256, head_dim=64, n_ff=512)
TEXT_BYTES = 600
IMATRIX = ["-c", "64", "-b", "64", "-t", "1"]
# --no-repack: this build segfaults repacking the tiny Q4_K_M model for its AVX-512 kernels
KLD = ["-c", "64", "-b", "64", "-t", "1", "--chunks", "4", "--no-repack"]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(cmd, cwd, stdout_file=None):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {r.stderr[-2000:]}")
    if stdout_file:
        Path(stdout_file).write_text(r.stdout)


def main():
    bin_dir = Path(os.environ.get("LLAMA_BIN", ""))
    if not (bin_dir / "llama-imatrix").exists():
        sys.exit("set LLAMA_BIN to llama.cpp's build/bin (with llama-imatrix and llama-perplexity)")
    im_dir, kld_dir = HERE / "golden" / "imatrix", HERE / "golden" / "kld"
    im_dir.mkdir(parents=True, exist_ok=True)
    kld_dir.mkdir(parents=True, exist_ok=True)
    text = (HERE / "golden" / "gemma" / "apache-2.0.txt").read_bytes()[:TEXT_BYTES]
    (im_dir / "text.txt").write_bytes(text)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_model(tmp, **MODEL_ARGS)
        shutil.copy(model, im_dir / "model.gguf")  # llama-imatrix records paths relative to cwd
        imatrix = bin_dir / "llama-imatrix"
        run([imatrix, "-m", "model.gguf", "-f", "text.txt", "-o", "imatrix.gguf", *IMATRIX], im_dir, im_dir / "imatrix.stdout.txt")
        run([imatrix, "-m", "model.gguf", "-f", "text.txt", "-o", "imatrix-output.gguf", "--process-output", *IMATRIX],
            im_dir, im_dir / "imatrix-output.stdout.txt")
        run([imatrix, "-m", "model.gguf", "-f", "text.txt", "-o", "imatrix.dat", "--output-format", "dat", *IMATRIX], im_dir)
        # chunks run as 56 + 8 tokens: the 8-token matmuls are left out
        run([imatrix, "-m", "model.gguf", "-f", "text.txt", "-o", "imatrix-b56.gguf", "-c", "64", "-b", "56", "-t", "1",
             "--chunks", "5"], im_dir)
        run([imatrix, "-m", "model.gguf", "--in-file", "imatrix.dat", "--in-file", "imatrix-output.gguf",
             "-o", "imatrix-combined.gguf", "-c", "64"], im_dir)
        (im_dir / "model.gguf").unlink()

        import tinyllm

        q = tmp / "model-Q4_K_M.gguf"
        tinyllm.quantize(model, q, "Q4_K_M")
        shutil.copy(model, kld_dir / "model.gguf")
        shutil.copy(q, kld_dir / "model-Q4_K_M.gguf")
        perplexity = bin_dir / "llama-perplexity"
        run([perplexity, "-m", "model.gguf", "-f", "../imatrix/text.txt", "--kl-divergence-base", "base.kld", *KLD],
            kld_dir, kld_dir / "base.stdout.txt")
        run([perplexity, "-m", "model-Q4_K_M.gguf", "--kl-divergence-base", "base.kld", "--kl-divergence", *KLD],
            kld_dir, kld_dir / "kld-Q4_K_M.stdout.txt")
        models = {"model.gguf": sha256(model), "model-Q4_K_M.gguf": sha256(q), "recipe": MODEL_ARGS}
        (kld_dir / "model.gguf").unlink()
        (kld_dir / "model-Q4_K_M.gguf").unlink()
    (HERE / "golden" / "quality-models.json").write_text(json.dumps(models, indent=1) + "\n")


if __name__ == "__main__":
    main()
