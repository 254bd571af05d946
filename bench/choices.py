"""What --choices costs against generated answers (make bench-choices;
docs/output.md "Choices").

    .venv/bin/python bench/choices.py [--model-dir models/qwen3b-like-2l] [--copies 2] [--runs 3]

The sample images (COPIES times over) captioned with one yes/no question
on the same model, RUNS times each way: with `--choices yes,no` (the answer
and both scores from the logits after the prompt), as a generated answer of
2 tokens (a word and its end: what a model that obeys writes) and of 1
token with `--logprobs 10` (the way to a P(yes) before choices: the first
token's alternatives); and a rating, `--choices 1,2,...,10`, whose "1"
and "10" begin alike on Qwen's vocabulary (a digit a token): each row
decodes one probe after its prompt to read the model after "1". Figures:
images/s, medians of RUNS; ratios of choices against each, and of the
rating against yes/no. The last line is JSON."""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
PROMPT = "Is there a person in this image? Answer yes or no."
IMAGES = (".jpg", ".jpeg", ".png", ".webp")


def run(model_dir, inputs, out, *extra):
    t = time.monotonic()
    r = subprocess.run([str(BUILD / "sluice"), "caption", str(inputs), "-o", str(out),
                        "--model", str(model_dir / "model.gguf"), "--mmproj",
                        str(model_dir / "mmproj.gguf"), "--prompt", PROMPT, "--metrics-addr",
                        "off", "--show", "0", "--progress-every", "3600", *extra],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"sluice failed ({r.returncode}): {r.stderr[-2000:]}")
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(REPO / "models" / "qwen3b-like-2l"))
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    model_dir = pathlib.Path(a.model_dir)
    ways = {"choices": ["--choices", "yes,no"],
            "generate_2_tokens": ["--max-tokens", "2"],
            "logprobs_1_token": ["--max-tokens", "1", "--logprobs", "10"],
            "rating_1_to_10": ["--choices", ",".join(str(k) for k in range(1, 11))]}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-choices-") as tmp:
        tmp = pathlib.Path(tmp)
        inputs = tmp / "in"
        n = 0
        for c in range(a.copies):
            folder = inputs / f"c{c}"
            folder.mkdir(parents=True)
            for p in sorted((REPO / "samples").rglob("*")):
                if p.suffix.lower() in IMAGES:
                    (folder / f"{n}{p.suffix}").symlink_to(p)
                    n += 1
        times = {w: [] for w in ways}
        for i in range(a.runs):
            for w, extra in ways.items():  # interleaved: drift hits each way alike
                times[w].append(run(model_dir, inputs, tmp / f"{w}-{i}", *extra))
        result = {"model": model_dir.name, "images": n, "runs": a.runs}
        for w in ways:
            result[f"{w}_images_per_s"] = round(n / statistics.median(times[w]), 3)
            print(f"{w:>20}: {result[f'{w}_images_per_s']:8.3f} images/s "
                  f"(median of {a.runs}: {[round(t, 2) for t in times[w]]} s)")
        for w in ("generate_2_tokens", "logprobs_1_token"):
            result[f"choices_vs_{w}"] = round(result["choices_images_per_s"] /
                                              result[f"{w}_images_per_s"], 3)
            print(f"choices vs {w}: {result[f'choices_vs_{w}']:.3f}x")
        result["rating_vs_choices"] = round(result["rating_1_to_10_images_per_s"] /
                                            result["choices_images_per_s"], 3)
        print(f"rating (a probe a row) vs yes/no choices: {result['rating_vs_choices']:.3f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
