#!/usr/bin/env python3
"""The baseline of the GPU check: Hugging Face transformers generate() on the
same GPU, on a Qwen2.5-VL-3B-Instruct configuration (3.75 B parameters) with
random weights (nothing is downloaded), 448 x 448 images (1024 patches ->
256 image tokens), greedy, exactly T new tokens per image, static batches
(no continuous batching): the plainest Python loop a user would write.

usage: hf_peer.py N_IMAGES BATCH T [--tiny] [--budget S]
  --tiny      a small configuration on the CPU (tests the script without a GPU)
  --budget S  start no batch after S seconds of generation (the figures are
              over the images done)
Prints progress, then one JSON line: images/s and generated tokens/s.
"""
import argparse
import json
import sys
import time

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("n", type=int)
ap.add_argument("batch", type=int)
ap.add_argument("tokens", type=int)
ap.add_argument("--tiny", action="store_true")
ap.add_argument("--budget", type=float, default=float("inf"))
a = ap.parse_args()
n, B, T, tiny, budget = a.n, a.batch, a.tokens, a.tiny, a.budget
dev = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
if tiny:
    text = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=151936)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                  fullatt_block_indexes=[1])
    rope_sec = [4, 6, 6]
else:  # Qwen2.5-VL-3B-Instruct's config.json
    text = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                num_key_value_heads=2, vocab_size=151936)
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                  fullatt_block_indexes=[7, 15, 23, 31])
    rope_sec = [16, 24, 24]
text.update(max_position_embeddings=32768, tie_word_embeddings=True, rms_norm_eps=1e-6)
vision.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
              in_channels=3, hidden_act="silu")
dtype = torch.bfloat16 if dev == "cuda" else torch.float32


def build(variant):
    """transformers 5 names M-RoPE rope_parameters inside text_config; 4.x
    took rope_scaling and the text fields at the top level."""
    if variant == 5:
        t = dict(text, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": rope_sec})
        cfg = Qwen2_5_VLConfig(text_config=t, vision_config=vision, tie_word_embeddings=True)
    else:
        t = dict(text, rope_theta=1000000.0,
                 rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": rope_sec})
        cfg = Qwen2_5_VLConfig(vision_config=vision, **t)
    with torch.device(dev):
        try:
            m = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)
        except TypeError:
            m = Qwen2_5_VLForConditionalGeneration._from_config(cfg, torch_dtype=dtype)
    return cfg, m


t0 = time.time()
torch.manual_seed(0)
errors = []
for variant in (5, 4):
    try:
        cfg, model = build(variant)
        break
    except Exception as e:  # the other transformers generation's names
        errors.append(f"{variant}: {e!r}")
else:
    sys.exit("cannot build the model: " + "; ".join(errors))
model.eval()
load_s = time.time() - t0
print(f"model built on {dev} in {load_s:.1f} s; params {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B",
      flush=True)

IMG, VS, VE = cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id
gh = gw = 32                                   # 448 / 14
n_img_tok = gh * gw // 4
prompt_pre = [151644, 8948, 198, 151645, 198, 151644, 872, 198]   # <|im_start|>system ... <|im_start|>user\n
prompt_post = [74785, 419, 2168, 304, 825, 11652, 13, 151645, 198, 151644, 77091, 198]
ids = prompt_pre + [VS] + [IMG] * n_img_tok + [VE] + prompt_post
patch_dim = 3 * 2 * 14 * 14


def batch(b):
    input_ids = torch.tensor([ids] * b, device=dev)
    pixel_values = torch.randn(b * gh * gw, patch_dim, device=dev, dtype=dtype)
    grid = torch.tensor([[1, gh, gw]] * b, device=dev)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                pixel_values=pixel_values, image_grid_thw=grid)


with torch.inference_mode():
    model.generate(**batch(min(B, 2)), max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    done = toks = 0
    while done < n and time.time() - t < budget:
        b = min(B, n - done)
        out = model.generate(**batch(b), max_new_tokens=T, min_new_tokens=T, do_sample=False)
        toks += (out.shape[1] - len(ids)) * b
        done += b
        print(f"  {done}/{n} images, {time.time() - t:.1f} s", flush=True)
    if dev == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t
print(json.dumps({"peer": "hf-transformers-generate", "device": dev,
                  "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
                  "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                  "images": done, "batch": B, "max_tokens": T, "wall_s": round(wall, 2),
                  "images_per_s": round(done / wall, 3), "generated_tokens_per_s": round(toks / wall, 1),
                  "model_build_s": round(load_s, 1)}))
