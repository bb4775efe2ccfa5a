"""Time opening a GGUF file (GGUFFile) and building its tokenizer, against gguf-py's GGUFReader.

    python benchmarks/bench_gguf_open.py [MODEL.gguf] [--repeat N] [--reader]

Prints the best and median of N runs. Without a path it uses the default model (Gemma 3 270M).
"""
import argparse
import statistics
import time


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="GGUF file (default: the default model)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reader", action="store_true", help="also time gguf-py's GGUFReader once")
    args = ap.parse_args()

    from tinyllm.default_model import resolve_model
    from tinyllm.gguf_io import GGUFFile

    path = resolve_model(args.model)
    f, best, med = timed(lambda: GGUFFile(path), args.repeat)
    print(f"{path.name}: {len(f.tensors)} tensors, {len(f.metadata)} keys, "
          f"{len(f.metadata.get('tokenizer.ggml.tokens', []))} tokens")
    print(f"GGUFFile(path)              best {best * 1e3:8.1f} ms   median {med * 1e3:8.1f} ms")
    try:
        from tinyllm.tokenizer import Tokenizer
    except ImportError:
        Tokenizer = None
    if Tokenizer is not None and "tokenizer.ggml.tokens" in f.metadata:
        _, best, med = timed(lambda: Tokenizer.from_gguf(f), args.repeat)
        print(f"Tokenizer.from_gguf(file)   best {best * 1e3:8.1f} ms   median {med * 1e3:8.1f} ms")
    if args.reader:
        import gguf

        _, best, _ = timed(lambda: gguf.GGUFReader(path), 1)
        print(f"gguf.GGUFReader(path)       once {best * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
