#!/usr/bin/env python3
"""Write a random-weight SmolVLM- or Qwen2.5-VL-style vision-language model as two GGUF files.

    .venv/bin/python tools/gen_model.py --shape tiny --out models/tiny [--seed 0] [--fast-weights]
    .venv/bin/python tools/gen_model.py --shape tiny --lora-out A.gguf [--lora-init random|zero]

writes
    <out>/model.gguf   - the language model (general.architecture = llama)
    <out>/mmproj.gguf  - the vision projector (clip.projector_type = idefics3:
                         SigLIP ViT + pixel shuffle + one linear layer)
or, with --lora-out, only a LoRA adapter for that shape's language model (see
"LoRA adapters" below).

THE WEIGHTS ARE RANDOM.  The files have the exact layout llama.cpp (libllama +
libmtmd) expects for SmolVLM, so they load and generate, but what they say about
an image is noise.  They exist so that sluice can be built, tested and
benchmarked without downloading a real model.

Where the format comes from (paths inside the llama.cpp tree):
  tools/mtmd/clip-impl.h      KEY_* metadata names and TN_* tensor names
  tools/mtmd/clip.cpp         clip_model_loader::load_hparams / load_tensors
                              (case PROJECTOR_TYPE_IDEFICS3)
  tools/mtmd/models/siglip.cpp  the SigLIP + idefics3 graph
  tools/mtmd/mtmd-image.cpp   mtmd_image_preprocessor_idefics3 (slicing)
  tools/mtmd/mtmd.cpp         idefics3 special tokens around image embeddings
  conversion/smolvlm.py, conversion/base.py (MmprojModel.set_gguf_parameters)
  src/models/llama.cpp        llama tensors and hparams
  src/llama-vocab.cpp         tokenizer keys, the "smollm" pre-tokenizer, EOG
  src/llama-chat.cpp          chat-template detection (SMOLVLM)

Shapes (and what each is for)
  tiny          ~4 MB, F32: the tests (models/tiny, made by scripts/setup.sh;
                the tests depend on its exact bytes).  text: 4 layers, n_embd
                128, 4 heads / 2 KV heads, vocab 1152, ctx 2048.  vision: 128
                px, patch 16, 2 layers, hidden 64, scale_factor 2 -> 16 tokens
                per encoded tile.
  smolvlm-256m  ~0.5 GB, F16 matrices + F32 norms/biases/vision embeddings:
                benchmarks (make bench-engine, make models-256m, bench/gpu).
                The real dimensions of HuggingFaceTB/SmolVLM-256M-Instruct
                (SmolLM2-135M text model with tied embeddings, vocab 49280;
                SigLIP-B/16 at 512 px, scale_factor 4 -> 64 tokens per tile).
  qwen3b-like   ~6.2 GB, F16: the GPU check (bench/gpu/run.sh, generated on
                the GPU host with --fast-weights).  The compute profile of
                Qwen2.5-VL-3B on the idefics3 layout llama.cpp loads: text 36
                layers x 2048, 16 heads / 2 KV heads, ffn 11008, vocab 151680
                tied, ctx 32768 (Qwen2.5-3B's dimensions); vision SigLIP-so400m
                (27 layers x 1152, ffn 4304) at 448 px, patch 14 -> 1024
                patches, scale_factor 2 -> 256 tokens per image (Qwen2.5-VL
                also gives 256 tokens for 448 x 448 after its 2 x 2 merge).
                longest_edge 448: one tile per image, no slicing.
  tiny-qwen     ~5 MB, F32: Qwen2.5-VL's own architecture for the tests
                (models/tiny-qwen, made by scripts/setup.sh; tests/e2e/test_qwen.py):
                a "qwen2vl" text model (M-RoPE sections, q/k/v biases, the
                Qwen chat template, <|im_end|> ends an answer) 4 layers x 128,
                and the "qwen2.5vl_merger" projector: patch 14 (Conv3D split in
                two Conv2Ds), 4 blocks x 64 with window attention (full in
                every 2nd), 2D RoPE, SwiGLU, RMSNorm, 2x2 merge -> an MLP.
                Images are resized to multiples of 28 px: 512 x 512 gives
                324 tokens in 18 positions.  Source: conversion/qwenvl.py,
                tools/mtmd/models/qwen2vl.cpp, src/models/qwen2vl.cpp.
  qwen25vl-3b   ~7.5 GB, F16: Qwen2.5-VL-3B-Instruct's dimensions on that
                architecture (text as qwen3b-like; vision 32 blocks x 1280,
                16 heads, ffn 3420, full attention in blocks 7/15/23/31,
                merger 5120 -> 2048): the GPU check, with --image-max-tokens
                256 (448 x 448).  qwen25vl-3b-2l: 2 + 2 layers (CPU smoke).
  qwen3b-like-2l  ~1 GB: the same widths and the same 152k vocabulary with 2
                text and 2 vision layers (make models-qwen3b-2l): the CPU
                benchmark of a step's host cost (sampling over 152k logits
                for 128 sequences), and a check that llama.cpp loads the
                qwen3b-like layout without generating 6 GB.

--fast-weights takes every tensor from one shared pool of 16 M random floats
(a window per tensor name, scaled as usual) instead of drawing each value: the
6 GB shape is written in well under a minute.  The files are still
deterministic but differ from the default ones; use it only where the values
do not matter (speed measurements).

Determinism: every tensor is drawn from numpy.random.default_rng([seed,
crc32(tensor name)]), the vocabulary is trained by a deterministic BPE on a
corpus embedded in this file, and GGUFWriter writes no timestamps, so two runs
with the same arguments give byte-identical files.

The "bias channel" trick (why the captions have a length)
----------------------------------------------------------
A llama output head has no bias, and with random weights the end-of-sequence
token <end_of_utterance> would be chosen (or never chosen) purely by chance.
We reserve residual-stream dimension 0 as a bias channel:
  * token embeddings carry a constant 1.0 in dim 0 (untied output) ;
  * every attn_norm / ffn_norm weight is 0 in dim 0 and every attn_output /
    ffn_down matrix writes 0 into dim 0, so the transformer blocks neither read
    nor change it: at the last layer dim 0 still holds exactly the embedding's
    value for the current token;
  * output_norm.weight[0] = sqrt(n_embd), so after the final RMSNorm h[0] is a
    large positive number at every generated position (h0_ref below);
  * column 0 of the output matrix (or of token_embd when tied) is then
    bias_t / h0_ref, which adds roughly bias_t to token t's logit.
We use it to (a) give every structural/control token (<image>, <row_..>,
<|im_start|>, <|im_end|>, <|endoftext|>, fillers) a bias of -40 so a caption
never contains them, and (b) give <end_of_utterance> a bias (--eos-bias) tuned
so that greedy captions usually run for some tens of tokens but do end
sometimes, instead of ending at once or never.  The other logits come from a
random matrix scaled so that their standard deviation is about 1.5.
For the smolvlm-256m shape (tied embeddings, meant for benchmarks) the default
EOS bias is very negative so generation always runs to the token limit, which
makes throughput numbers comparable.  Two more tweaks keep its 30-layer greedy
output from collapsing into one repeated token: the block output projections
are scaled by resid_scale = 0.1, and (tied only) output_norm.weight has random
+-1 signs so the current token's own embedding gives no systematic self-logit.
Greedy output of that shape still falls into short loops; sampling varies.

LoRA adapters (--lora-out)
--------------------------
A GGUF as llama.cpp's convert_lora_to_gguf.py writes one (general.type
"adapter", adapter.type "lora", adapter.lora.alpha; checked by
src/llama-adapter.cpp): for each target matrix W of every block (numpy shape
[out, in], --lora-targets, default attn_q, attn_v, ffn_up) a pair
"<W's name>.lora_a" [rank, in] and "<W's name>.lora_b" [out, rank] (PEFT's
A and B), F32. llama.cpp adds scale * alpha / rank * B (A x) to W x.
--lora-init random draws A and B so that B A x is about as large as W x
(alpha = rank): at scale 1 the captions change. --lora-init zero makes B all
zeros (as PEFT initialises an adapter before training): the adapter adds
exactly 0.0, so greedy captions equal the base model's. The targets read the
normed residual (dim 0 zero) and feed attention or the FFN, whose output
projections never write dim 0: the bias channel (above) is untouched and
captions still end. An adapter written for
another shape (e.g. smolvlm-256m) loads onto the tiny model with a shape
error: "made for another model".
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("gen_model.py needs the 'gguf' package (pip install -r tools/requirements.txt)")


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    name: str
    # text model
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    vocab_base: int        # ids [0, vocab_base) are BPE/filler, then 128 added tokens
    tied: bool
    text_dtype: str      # f32, f16, bf16 or q8_0 for the text model's matrices
    # vision tower
    image_size: int
    patch_size: int
    v_embd: int
    v_layer: int
    v_head: int
    v_ff: int
    v_eps: float
    scale_factor: int
    longest_edge: int      # clip.vision.preproc_image_size
    vision_f16: bool
    eos_bias: float
    resid_scale: float = 1.0   # extra factor on attn_output/ffn_down (deep stacks collapse otherwise)
    # "smolvlm": llama text model + SigLIP/idefics3 projector.  "qwen25vl":
    # qwen2vl text model (M-RoPE) + Qwen2.5-VL's own vision tower (window
    # attention, 2D RoPE, SwiGLU, RMSNorm, 2x2 patch merger).
    family: str = "smolvlm"
    v_wa_pattern: int = 0      # qwen25vl: every n-th vision block attends fully (fullatt_block_indexes + 1)

    @property
    def n_vocab(self) -> int:
        return self.vocab_base + N_ADDED


SHAPES = {
    "tiny": Shape(
        name="tiny",
        n_layer=4, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_ctx=2048,
        rope_theta=100000.0, rms_eps=1e-5, vocab_base=1024, tied=False, text_dtype="f32",
        image_size=128, patch_size=16, v_embd=64, v_layer=2, v_head=4, v_ff=256,
        v_eps=1e-6, scale_factor=2, longest_edge=128, vision_f16=False,
        eos_bias=2.5,
    ),
    "smolvlm-256m": Shape(
        name="smolvlm-256m",
        n_layer=30, n_embd=576, n_head=9, n_head_kv=3, n_ff=1536, n_ctx=8192,
        rope_theta=100000.0, rms_eps=1e-5, vocab_base=49152, tied=True, text_dtype="f16",
        image_size=512, patch_size=16, v_embd=768, v_layer=12, v_head=12, v_ff=3072,
        v_eps=1e-6, scale_factor=4, longest_edge=2048, vision_f16=True,
        eos_bias=-40.0, resid_scale=0.1,
    ),
    # Qwen2.5-VL-3B's compute profile on the idefics3 layout llama.cpp loads
    # (see the docstring); only for speed measurements.
    "qwen3b-like": Shape(
        name="qwen3b-like",
        n_layer=36, n_embd=2048, n_head=16, n_head_kv=2, n_ff=11008, n_ctx=32768,
        rope_theta=1000000.0, rms_eps=1e-6, vocab_base=151552, tied=True, text_dtype="f16",
        image_size=448, patch_size=14, v_embd=1152, v_layer=27, v_head=16, v_ff=4304,
        v_eps=1e-6, scale_factor=2, longest_edge=448, vision_f16=True,
        eos_bias=-40.0, resid_scale=0.1,
    ),
    # Qwen2.5-VL's real architecture (tests): qwen2vl text with M-RoPE
    # sections, the Qwen2.5-VL vision tower, patch 14, 2x2 merge.
    "tiny-qwen": Shape(
        name="tiny-qwen",
        n_layer=4, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_ctx=4096,
        rope_theta=1000000.0, rms_eps=1e-6, vocab_base=1024, tied=False, text_dtype="f32",
        image_size=560, patch_size=14, v_embd=64, v_layer=4, v_head=4, v_ff=128,
        v_eps=1e-6, scale_factor=2, longest_edge=0, vision_f16=False,
        eos_bias=2.5, family="qwen25vl", v_wa_pattern=2,
    ),
    # Qwen2.5-VL-3B-Instruct's dimensions on its own architecture (the GPU
    # check): text 36 x 2048 as qwen3b-like; vision 32 blocks x 1280, 16
    # heads, SwiGLU ffn 3420, full attention in blocks 7, 15, 23, 31, merger
    # 5120 -> 5120 -> 2048.  448 x 448 is 1024 patches, 256 image tokens.
    "qwen25vl-3b": Shape(
        name="qwen25vl-3b",
        n_layer=36, n_embd=2048, n_head=16, n_head_kv=2, n_ff=11008, n_ctx=32768,
        rope_theta=1000000.0, rms_eps=1e-6, vocab_base=151552, tied=True, text_dtype="f16",
        image_size=560, patch_size=14, v_embd=1280, v_layer=32, v_head=16, v_ff=3420,
        v_eps=1e-6, scale_factor=2, longest_edge=0, vision_f16=True,
        eos_bias=-40.0, resid_scale=0.1, family="qwen25vl", v_wa_pattern=8,
    ),
}
# The same widths and vocabulary with 2 text and 2 vision layers: on a CPU the
# host-side cost of a step (sampling over 152k logits) is what it measures.
SHAPES["qwen3b-like-2l"] = Shape(**{**SHAPES["qwen3b-like"].__dict__,
                                    "name": "qwen3b-like-2l", "n_layer": 2, "v_layer": 2})
SHAPES["qwen25vl-3b-2l"] = Shape(**{**SHAPES["qwen25vl-3b"].__dict__,
                                    "name": "qwen25vl-3b-2l", "n_layer": 2, "v_layer": 2,
                                    "v_wa_pattern": 2})

# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------

# SmolVLM's own chat template (chat_template.json of HuggingFaceTB/SmolVLM-*-Instruct).
# It contains both "<|im_start|>" and "<end_of_utterance>", which is what
# llama_chat_apply_template() uses to pick LLM_CHAT_TEMPLATE_SMOLVLM.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

LEADING_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]   # ids 0, 1, 2

# 128 added tokens at ids [vocab_base, vocab_base + 128), laid out like SmolVLM's
# (<global-img>, 36 row/col tags, <fake_token_around_image>, <image>, reserved, <end_of_utterance>).
ADDED = (["<global-img>"]
         + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
         + ["<fake_token_around_image>", "<image>"])
ADDED += [f"<|reserved_special_token_{i}|>" for i in range(127 - len(ADDED))]
ADDED += ["<end_of_utterance>"]
N_ADDED = len(ADDED)
assert N_ADDED == 128
# added tokens that are plain added words in the HF tokenizer (not "special"):
USER_DEFINED = {"<global-img>"} | {f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)}

# Qwen2.5-VL's added tokens (tokenizer_config.json's added_tokens_decoder past
# <|im_end|>), then reserved ones up to 128.  libmtmd looks up
# <|vision_start|> and <|vision_end|> by text around every image.
QWEN_ADDED = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
              "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
              "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
              "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>"]
QWEN_ADDED += [f"<|reserved_special_token_{i}|>" for i in range(N_ADDED - len(QWEN_ADDED))]
assert len(QWEN_ADDED) == N_ADDED

# Qwen2.5-VL's chat template, without video and tool calls.  llama.cpp
# renders it as ChatML (it holds <|im_start|> and no <end_of_utterance>).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Training text for the byte-level BPE: caption-like English plus chat/prompt words.
CORPUS = """
User: Describe the image. Assistant: The image shows a cat sitting on a wooden table.
User: What is in this picture? Assistant: A woman in an orange space suit is smiling in front of a flag.
User: Write a short caption for the photo. Assistant: A cup of coffee on a saucer, seen from above.
User: Describe this image in one sentence. Assistant: A rocket is launching into a clear blue sky.
User: Give a detailed description of the scene. Assistant: Thousands of distant galaxies glow against the dark of space.
User: What do you see? Assistant: A man with a camera on a tripod stands in a grassy field.

The photograph shows a small brown and white dog running across a green park on a sunny day.
There are two people walking along the beach at sunset, and the water is calm and blue.
A red car is parked on the side of a busy street in the city, next to a tall building.
In the background there are mountains covered with snow, and trees line the road.
The picture is a close-up of a bowl of fresh fruit: apples, oranges, bananas and grapes.
A group of children are playing football on a field while their parents watch.
This is a black and white photo of an old house with large windows and a wooden door.
The sky is cloudy and grey, and it looks like it is about to rain over the river.
A young girl is reading a book under a tree, with a bicycle leaning against the trunk.
The kitchen has white walls, a wooden floor, a table with four chairs and a lamp.
Several boats are floating in the harbor, and birds are flying above the water.
The image contains text written in large letters on a sign near the entrance.
A plate of food with rice, vegetables and chicken sits on a table in a restaurant.
The cat has green eyes, striped fur and long whiskers, and it is looking at the camera.
An astronaut in a white space suit floats outside the station, with the earth below.
The bright light of the launch lit up the smoke and clouds around the tower.
A person is holding a phone and taking a picture of the view from the top of the hill.
The room is dark except for the light coming through the window on the left side.
The street is full of people, shops, signs and colorful lights at night.
There is a small white boat on a lake surrounded by green hills and a forest.
A horse is standing in a field of yellow flowers near a wooden fence.
The camera is pointed at a building with many windows, and the photo is slightly blurry.
An image of a plant in a pot, placed on a shelf next to some books and a clock.
The man is wearing a blue shirt, a black jacket and glasses, and he is smiling.
Two cups of tea and a piece of cake are on the table, with a spoon beside them.
The road goes through a desert with sand, rocks and a few dry bushes under a hot sun.
There are many stars and a bright galaxy in the center of the picture.
It is a photo of a computer screen showing a chart, some numbers and a short title.
The dog is sleeping on a soft red blanket next to the fire in the living room.
This picture was taken from an airplane window, showing the wing and the clouds.
A bridge crosses the river in the middle of the town, and cars are driving over it.
The woman in the picture has long dark hair and is standing near a large window.
Describe the image in detail. Summarize the picture. What colors are in the photo?
How many people are there? Where was this photo taken? What is the person doing?
Answer the question about the image. Caption: a cat. Caption: a rocket. Caption: a cup.
numbers: 0 1 2 3 4 5 6 7 8 9 10 20 100 2024 3.5 50% (left) [right] {top} "quote" 'single'
Punctuation, commas; semicolons: colons! questions? dashes - and -- more... end.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
first second third image photo picture scene view object objects animal animals person people
left right top bottom center front back near far above below inside outside between
red orange yellow green blue purple pink brown black white gray grey dark light bright
big small large tiny long short tall round square old new young happy sad beautiful
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (as used by llama.cpp's BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


# Python approximation (ASCII corpus) of the "smollm" pre-tokenizer in
# src/llama-vocab.cpp: digits split individually, then the GPT-2 pattern.
PRETOK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Plain byte-level BPE; ties broken by the lexicographically smallest pair."""
    b2u = bytes_to_unicode()
    counts = collections.Counter(
        "".join(b2u[b] for b in m.encode("utf-8")) for m in PRETOK.findall(text))
    words = {w: list(w) for w in counts}
    merges: list[tuple[str, str]] = []
    # make sure "\n\n" is a single token: mtmd looks it up by text for idefics3
    forced = [("\u010a", "\u010a")]
    while len(merges) < n_merges:
        if forced:
            best = forced.pop(0)
        else:
            pairs: collections.Counter = collections.Counter()
            for w, syms in words.items():
                c = counts[w]
                for a, b in zip(syms, syms[1:]):
                    pairs[(a, b)] += c
            if not pairs:
                break
            top = max(pairs.values())
            best = min(p for p, c in pairs.items() if c == top)
        merges.append(best)
        a, b = best
        for w, syms in words.items():
            i, out = 0, []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    return merges


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bias: np.ndarray        # per-token logit bias applied through the bias channel
    bos: int
    eos: int
    pad: int


def build_vocab(shape: Shape, eos_bias: float) -> Vocab:
    T = gguf.TokenType
    b2u = bytes_to_unicode()
    tokens = list(LEADING_SPECIALS)
    types = [T.CONTROL] * len(tokens)
    tokens += [b2u[b] for b in range(256)]
    types += [T.NORMAL] * 256
    n_merges = 1024 - len(tokens)          # the same ~765 merges for every shape
    merges = train_bpe(CORPUS, n_merges)
    seen = set(tokens)
    for a, b in merges:
        t = a + b
        assert t not in seen, t
        seen.add(t)
        tokens.append(t)
        types.append(T.NORMAL)
    if len(tokens) > shape.vocab_base:
        raise SystemExit(f"vocab_base {shape.vocab_base} too small for {len(tokens)} BPE tokens")
    # never-produced filler up to vocab_base (no merge leads to them)
    i = 0
    while len(tokens) < shape.vocab_base:
        tokens.append(f"<|unused_{i}|>")
        types.append(T.UNUSED)
        i += 1
    qwen = shape.family == "qwen25vl"
    for t in QWEN_ADDED if qwen else ADDED:
        tokens.append(t)
        types.append(T.USER_DEFINED if t in USER_DEFINED else T.CONTROL)
    assert len(tokens) == shape.n_vocab == len(set(tokens))

    bias = np.zeros(len(tokens), dtype=np.float64)
    for tid, ty in enumerate(types):
        if ty in (T.CONTROL, T.USER_DEFINED, T.UNUSED):
            bias[tid] = -40.0
    # keep captions printable ASCII: suppress byte tokens that are control
    # characters (except "\n") or non-ASCII (they would form invalid UTF-8)
    for byte in list(range(0x00, 0x20)) + list(range(0x7f, 0x100)):
        if byte != 0x0a:
            bias[tokens.index(b2u[byte])] = -40.0
    # favour word-initial tokens ("Ġ..." = leading space) so output looks wordy
    for tid, t in enumerate(tokens):
        if types[tid] == T.NORMAL and t.startswith("\u0120") and len(t) > 1:
            bias[tid] = 1.0
    eos = tokens.index("<|im_end|>" if qwen else "<end_of_utterance>")
    bias[eos] = eos_bias
    # Qwen's GGUFs: bos = pad = <|endoftext|> (never added), eos = <|im_end|>
    return Vocab(tokens=tokens, types=[int(t) for t in types],
                 merges=[f"{a} {b}" for a, b in merges], bias=bias,
                 bos=tokens.index("<|endoftext|>" if qwen else "<|im_start|>"), eos=eos,
                 pad=tokens.index("<|endoftext|>" if qwen else "<|im_end|>"))


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------

FAST_POOL = 1 << 24            # floats in the --fast-weights pool (64 MB)


class Weights:
    def __init__(self, seed: int, fast: bool = False):
        self.seed = seed
        # --fast-weights: every tensor is a window of one random pool, repeated
        # to its size.  Drawing 3.5 G normals one by one takes minutes; the
        # values do not matter for speed, only their scale (kept per tensor).
        self.pool = (np.random.default_rng([seed, 0x9e3779b9]).standard_normal(FAST_POOL, dtype=np.float32)
                     if fast else None)

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def normal(self, name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
        if self.pool is not None:
            n = int(np.prod(shape))
            off = zlib.crc32(name.encode()) % (FAST_POOL // 4)
            a = np.resize(self.pool[off:], n).reshape(shape)
            a *= np.float32(std)
            return a
        return (self.rng(name).standard_normal(shape, dtype=np.float32) * np.float32(std))


QTYPES = {"bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


def store(w: gguf.GGUFWriter, name: str, a: np.ndarray, dtype) -> None:
    """Matrices in `dtype` (True: f16, False: f32); vectors stay f32."""
    dtype = {True: "f16", False: "f32"}.get(dtype, dtype)
    a = np.ascontiguousarray(a.astype(np.float32, copy=False))   # no second copy of a 1 GB matrix
    if a.ndim < 2 or dtype == "f32":
        w.add_tensor(name, a)
    elif dtype == "f16":
        w.add_tensor(name, a.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(a, QTYPES[dtype]), raw_dtype=QTYPES[dtype])


def describe(shape: Shape, seed: int, what: str) -> str:
    kind = "Qwen2.5-VL" if shape.family == "qwen25vl" else "SmolVLM"
    return (f"RANDOM WEIGHTS - not a trained model. {what} of a {kind}-shaped test model "
            f"(shape '{shape.name}', seed {seed}) written by sluice tools/gen_model.py; "
            "its output is meaningless and exists only to exercise the llama.cpp / libmtmd code paths.")


def write_text_model(path: Path, shape: Shape, vocab: Vocab, W: Weights) -> None:
    s = shape
    d, hd = s.n_embd, s.n_embd // s.n_head
    qwen = s.family == "qwen25vl"
    w = gguf.GGUFWriter(str(path), "qwen2vl" if qwen else "llama")
    w.add_type("model")
    w.add_name(f"sluice-{s.name}-random")
    w.add_description(describe(s, W.seed, "Language model"))
    w.add_string("general.comment", "Random weights, seed-deterministic; see tools/gen_model.py for the bias-channel trick.")
    w.add_license("mit")
    w.add_file_type(int(FILE_TYPES[s.text_dtype]))

    w.add_vocab_size(s.n_vocab)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(d)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(s.rope_theta)
    w.add_layer_norm_rms_eps(s.rms_eps)
    if qwen:
        # M-RoPE: temporal, height, width sections of the hd/2 rotary pairs
        # (Qwen2.5-VL's mrope_section [16, 24, 24] at hd 128)
        t = hd // 8
        w.add_rope_dimension_sections([t, (hd // 2 - t) // 2, (hd // 2 - t) // 2, 0])

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if qwen else "smollm")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    w.add_bos_token_id(vocab.bos)
    w.add_eos_token_id(vocab.eos)
    w.add_eot_token_id(vocab.eos)
    w.add_pad_token_id(vocab.pad)
    w.add_add_bos_token(False)   # the chat template already starts with <|im_start|>
    w.add_add_eos_token(False)
    w.add_chat_template(QWEN_CHAT_TEMPLATE if qwen else CHAT_TEMPLATE)

    # --- bias channel (see module docstring) ---
    g_logit = 1.5                       # std of the random part of the logits
    gamma = math.sqrt(d)                # output_norm.weight[0]
    # At the last layer the residual is emb + sum of layer outputs (~unit rms per
    # dim each), so rms(x) ~ sqrt(1 + n_layer * 0.5); h0 = gamma * 1.0 / rms(x).
    h0_ref = gamma / math.sqrt(1.0 + 0.5 * s.n_layer * s.resid_scale ** 2)
    col0 = (vocab.bias / h0_ref).astype(np.float32)

    V = s.n_vocab
    if s.tied:
        emb = W.normal("token_embd.weight", (V, d), g_logit / math.sqrt(d))
        emb[:, 0] = 1.0 + col0          # input value 1.0 for normal tokens, doubles as bias
    else:
        emb = W.normal("token_embd.weight", (V, d), 1.0)
        emb[:, 0] = 1.0
    store(w, "token_embd.weight", emb, s.text_dtype)

    onorm = np.ones(d, np.float32)
    if s.tied:
        # With tied embeddings the current token's own embedding sits in the
        # residual, so logit(current) = sum_i x_i * emb_i^2 / rms > 0 and greedy
        # decoding repeats one token forever.  Random +-1 signs in output_norm
        # make that self term zero-mean.
        onorm = np.where(W.rng("output_norm.weight").random(d) < 0.5, -1.0, 1.0).astype(np.float32)
    onorm[0] = gamma
    store(w, "output_norm.weight", onorm, False)
    if not s.tied:
        out = W.normal("output.weight", (V, d), g_logit / math.sqrt(d))
        out[:, 0] = col0
        store(w, "output.weight", out, s.text_dtype)

    lnorm = np.ones(d, np.float32)
    lnorm[0] = 0.0                      # blocks never read the bias channel
    for i in range(s.n_layer):
        p = f"blk.{i}."
        store(w, p + "attn_norm.weight", lnorm, False)
        store(w, p + "attn_q.weight", W.normal(p + "attn_q.weight", (s.n_head * hd, d), d ** -0.5), s.text_dtype)
        store(w, p + "attn_k.weight", W.normal(p + "attn_k.weight", (s.n_head_kv * hd, d), d ** -0.5), s.text_dtype)
        store(w, p + "attn_v.weight", W.normal(p + "attn_v.weight", (s.n_head_kv * hd, d), d ** -0.5), s.text_dtype)
        if qwen:  # Qwen2 has q/k/v biases
            for t, n in (("attn_q", s.n_head * hd), ("attn_k", s.n_head_kv * hd), ("attn_v", s.n_head_kv * hd)):
                store(w, p + t + ".bias", W.normal(p + t + ".bias", (n,), 0.02), False)
        wo = W.normal(p + "attn_output.weight", (d, s.n_head * hd), s.resid_scale * (s.n_head * hd) ** -0.5)
        wo[0, :] = 0.0                  # ... and never write it
        store(w, p + "attn_output.weight", wo, s.text_dtype)
        store(w, p + "ffn_norm.weight", lnorm, False)
        store(w, p + "ffn_gate.weight", W.normal(p + "ffn_gate.weight", (s.n_ff, d), d ** -0.5), s.text_dtype)
        store(w, p + "ffn_up.weight", W.normal(p + "ffn_up.weight", (s.n_ff, d), d ** -0.5), s.text_dtype)
        wd = W.normal(p + "ffn_down.weight", (d, s.n_ff), s.resid_scale * s.n_ff ** -0.5)
        wd[0, :] = 0.0
        store(w, p + "ffn_down.weight", wd, s.text_dtype)

    finish(w)


def vision_writer(path: Path, s: Shape, W: Weights, what: str, projector: str) -> gguf.GGUFWriter:
    """An mmproj GGUF's writer with the keys every projector has."""
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_type("mmproj")
    w.add_name(f"sluice-{s.name}-random-mmproj")
    w.add_description(describe(s, W.seed, what))
    w.add_license("mit")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16 if s.vision_f16 else gguf.LlamaFileType.ALL_F32))

    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(projector)
    w.add_vision_projection_dim(s.n_embd)
    w.add_vision_image_size(s.image_size)
    w.add_vision_patch_size(s.patch_size)
    w.add_vision_embedding_length(s.v_embd)
    w.add_vision_feed_forward_length(s.v_ff)
    w.add_vision_block_count(s.v_layer)
    w.add_vision_head_count(s.v_head)
    w.add_vision_attention_layernorm_eps(s.v_eps)
    return w


def store_vision_attention(w: gguf.GGUFWriter, p: str, H: int, W: Weights, f16: bool) -> None:
    for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
        store(w, p + t + ".weight", W.normal(p + t + ".weight", (H, H), H ** -0.5), f16)
        store(w, p + t + ".bias", W.normal(p + t + ".bias", (H,), 0.02), False)


def write_mmproj(path: Path, shape: Shape, W: Weights) -> None:
    if shape.family == "qwen25vl":
        write_mmproj_qwen25vl(path, shape, W)
        return
    s = shape
    H, P = s.v_embd, s.patch_size
    n_pos = (s.image_size // P) ** 2
    f16 = s.vision_f16
    w = vision_writer(path, s, W, "Vision projector (SigLIP + idefics3)", "idefics3")
    w.add_vision_image_mean([0.5, 0.5, 0.5])
    w.add_vision_image_std([0.5, 0.5, 0.5])
    w.add_vision_projector_scale_factor(s.scale_factor)
    w.add_vision_use_gelu(True)
    w.add_vision_preproc_image_size(s.longest_edge)

    # embeddings are F32 (as conversion/smolvlm.py forces for ".embeddings.")
    store(w, "v.patch_embd.weight", W.normal("v.patch_embd.weight", (H, 3, P, P), (3 * P * P) ** -0.5), False)
    store(w, "v.patch_embd.bias", W.normal("v.patch_embd.bias", (H,), 0.02), False)
    store(w, "v.position_embd.weight", W.normal("v.position_embd.weight", (n_pos, H), 0.5), False)
    ones, zeros = np.ones(H, np.float32), np.zeros(H, np.float32)
    for i in range(s.v_layer):
        p = f"v.blk.{i}."
        store_vision_attention(w, p, H, W, f16)
        store(w, p + "ln1.weight", ones, False)
        store(w, p + "ln1.bias", zeros, False)
        store(w, p + "ln2.weight", ones, False)
        store(w, p + "ln2.bias", zeros, False)
        # fc1 -> ffn_up [n_ff, H], fc2 -> ffn_down [H, n_ff] (numpy [out, in] order;
        # clip.cpp swaps them back if ffn_down's ne[0] == n_embd, i.e. legacy files)
        store(w, p + "ffn_up.weight", W.normal(p + "ffn_up.weight", (s.v_ff, H), H ** -0.5), f16)
        store(w, p + "ffn_up.bias", W.normal(p + "ffn_up.bias", (s.v_ff,), 0.02), False)
        store(w, p + "ffn_down.weight", W.normal(p + "ffn_down.weight", (H, s.v_ff), s.v_ff ** -0.5), f16)
        store(w, p + "ffn_down.bias", W.normal(p + "ffn_down.bias", (H,), 0.02), False)
    store(w, "v.post_ln.weight", ones, False)
    store(w, "v.post_ln.bias", zeros, False)
    k = H * s.scale_factor ** 2
    store(w, "mm.model.fc.weight", W.normal("mm.model.fc.weight", (s.n_embd, k), k ** -0.5), f16)
    finish(w)


def write_mmproj_qwen25vl(path: Path, shape: Shape, W: Weights) -> None:
    """Qwen2.5-VL's vision tower as conversion/qwenvl.py (Qwen2VLVisionModel)
    writes it: the Conv3D patch embedding split into two Conv2Ds (the two
    temporal frames; a still image feeds both), q/k/v split, RMSNorms without
    bias, a SwiGLU ffn, merger.ln_q as post_ln and its MLP as mm.0 / mm.2."""
    s = shape
    H, P = s.v_embd, s.patch_size
    f16 = s.vision_f16
    w = vision_writer(path, s, W, "Vision projector (Qwen2.5-VL)", "qwen2.5vl_merger")
    # Qwen2.5-VL's preprocessor_config.json (OpenAI CLIP's mean and std)
    w.add_vision_image_mean([0.48145466, 0.4578275, 0.40821073])
    w.add_vision_image_std([0.26862954, 0.26130258, 0.27577711])
    w.add_vision_use_silu(True)
    w.add_vision_n_wa_pattern(s.v_wa_pattern)

    # Conv3D [H, 3, 2, P, P] split by the converter; F16 like the other matrices
    fan = 3 * 2 * P * P
    store(w, "v.patch_embd.weight", W.normal("v.patch_embd.weight", (H, 3, P, P), fan ** -0.5), f16)
    store(w, "v.patch_embd.weight.1", W.normal("v.patch_embd.weight.1", (H, 3, P, P), fan ** -0.5), f16)
    ones = np.ones(H, np.float32)
    for i in range(s.v_layer):
        p = f"v.blk.{i}."
        store_vision_attention(w, p, H, W, f16)
        store(w, p + "ln1.weight", ones, False)
        store(w, p + "ln2.weight", ones, False)
        store(w, p + "ffn_gate.weight", W.normal(p + "ffn_gate.weight", (s.v_ff, H), H ** -0.5), f16)
        store(w, p + "ffn_gate.bias", W.normal(p + "ffn_gate.bias", (s.v_ff,), 0.02), False)
        store(w, p + "ffn_up.weight", W.normal(p + "ffn_up.weight", (s.v_ff, H), H ** -0.5), f16)
        store(w, p + "ffn_up.bias", W.normal(p + "ffn_up.bias", (s.v_ff,), 0.02), False)
        store(w, p + "ffn_down.weight", W.normal(p + "ffn_down.weight", (H, s.v_ff), s.v_ff ** -0.5), f16)
        store(w, p + "ffn_down.bias", W.normal(p + "ffn_down.bias", (H,), 0.02), False)
    store(w, "v.post_ln.weight", ones, False)
    k = H * s.scale_factor ** 2
    store(w, "mm.0.weight", W.normal("mm.0.weight", (k, k), k ** -0.5), f16)
    store(w, "mm.0.bias", W.normal("mm.0.bias", (k,), 0.02), False)
    store(w, "mm.2.weight", W.normal("mm.2.weight", (s.n_embd, k), k ** -0.5), f16)
    store(w, "mm.2.bias", W.normal("mm.2.bias", (s.n_embd,), 0.02), False)
    finish(w)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


LORA_TARGETS = ("attn_q", "attn_v", "ffn_up")


def lora_base_shape(shape: Shape, target: str) -> tuple[int, int]:
    """numpy [out, in] of a block matrix of the text model (see write_text_model)."""
    s, hd = shape, shape.n_embd // shape.n_head
    shapes = {"attn_q": (s.n_head * hd, s.n_embd), "attn_k": (s.n_head_kv * hd, s.n_embd),
              "attn_v": (s.n_head_kv * hd, s.n_embd), "attn_output": (s.n_embd, s.n_head * hd),
              "ffn_gate": (s.n_ff, s.n_embd), "ffn_up": (s.n_ff, s.n_embd),
              "ffn_down": (s.n_embd, s.n_ff)}
    if target not in shapes:
        raise SystemExit(f"--lora-targets: no block matrix '{target}' (one of {', '.join(shapes)})")
    return shapes[target]


def write_lora(path: Path, shape: Shape, init: str, rank: int, seed: int,
               targets: tuple[str, ...] = LORA_TARGETS) -> None:
    """A LoRA adapter for `shape`'s language model (module docstring, "LoRA adapters")."""
    W = Weights(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_name(f"sluice-{shape.name}-lora-{init}")
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for i in range(shape.n_layer):
        for t in targets:
            name = f"blk.{i}.{t}.weight"
            n_out, n_in = lora_base_shape(shape, t)
            a = W.normal(name + ".lora_a", (rank, n_in), n_in ** -0.5)
            b = (np.zeros((n_out, rank), np.float32) if init == "zero"
                 else W.normal(name + ".lora_b", (n_out, rank), rank ** -0.5))
            w.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
            w.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
    finish(w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--out", type=Path, help="output directory (the model and projector)")
    ap.add_argument("--lora-out", type=Path, default=None,
                    help="write only a LoRA adapter for the shape's language model to this file")
    ap.add_argument("--lora-init", choices=["random", "zero"], default="random",
                    help="random: changes the answers at scale 1; zero: lora_b all zeros, "
                         "the base model's answers exactly")
    ap.add_argument("--lora-rank", type=int, default=4)
    ap.add_argument("--lora-targets", default=",".join(LORA_TARGETS),
                    help="block matrices adapted, comma separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eos-bias", type=float, default=None,
                    help="logit bias of <end_of_utterance> (default: per shape)")
    ap.add_argument("--text-dtype", choices=["f32", "f16", "bf16", "q8_0"], default=None,
                    help="the text model's matrices (default: per shape; bf16 is SmolVLM's own "
                         "dtype and uses AVX512-BF16 where the CPU has it)")
    ap.add_argument("--longest-edge", type=int, default=None,
                    help="override clip.vision.preproc_image_size (idefics3 slicing; default: per shape)")
    ap.add_argument("--fast-weights", action="store_true",
                    help="draw every tensor from one shared random pool (seconds instead of minutes "
                         "for qwen3b-like; for speed measurements only, not byte-identical to the default)")
    args = ap.parse_args(argv)

    shape = SHAPES[args.shape]
    if args.longest_edge is not None:
        shape = Shape(**{**shape.__dict__, "longest_edge": args.longest_edge})
    if args.text_dtype is not None:
        shape = Shape(**{**shape.__dict__, "text_dtype": args.text_dtype})
    eos_bias = shape.eos_bias if args.eos_bias is None else args.eos_bias

    if args.lora_out is not None:
        tmp = args.lora_out.with_name(args.lora_out.name + ".tmp")
        write_lora(tmp, shape, args.lora_init, args.lora_rank, args.seed,
                   tuple(t for t in args.lora_targets.split(",") if t))
        os.replace(tmp, args.lora_out)
        print(f"wrote {args.lora_out} ({args.lora_out.stat().st_size / 1e3:.1f} kB)")
        return 0
    if args.out is None:
        ap.error("--out DIR is required (or --lora-out FILE)")
    args.out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(shape, eos_bias)
    W = Weights(args.seed, fast=args.fast_weights)
    # write to temporary names and rename, so a crash never leaves a half file
    for fname, fn in (("model.gguf", lambda p: write_text_model(p, shape, vocab, W)),
                      ("mmproj.gguf", lambda p: write_mmproj(p, shape, W))):
        final = args.out / fname
        tmp = args.out / (fname + ".tmp")
        fn(tmp)
        os.replace(tmp, final)
        print(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB)")
    print(f"vocab {shape.n_vocab}: bos {vocab.bos} {vocab.tokens[vocab.bos]!r}, "
          f"eos/eot {vocab.eos} {vocab.tokens[vocab.eos]!r}, pad {vocab.pad} {vocab.tokens[vocab.pad]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
