#!/usr/bin/env python3
"""PyTorch baseline for train_vlm: the same tiny LLaVA as src/vlm_model.h, timed per training step of each stage.

    python3 dev/vlm_torch_bench.py                                   # GPU, train_vlm's default sizes, every stage
    python3 dev/vlm_torch_bench.py --ours ./train_vlm --data-dir data/scenes   # ours in the same table
    python3 dev/vlm_torch_bench.py --stages e2e,clip --modes eager-tf32,compile-tf32
    python3 dev/vlm_torch_bench.py --device cpu --batch 4 --steps 3 --warmup 1 --image-size 16

Stages (--stages, default all), as train_vlm --stage: the loss its step computes, and what it trains;
the rest is frozen as frozen_for() in train_vlm.cu (requires_grad_(False), not in the optimizer, not
in the gradient clip; gradients still flow through a frozen LM to the projector in align):
  clip      CLIP: image embedding = proj(LN(ViT over all its blocks, [CLS] row)), text embedding =
            proj(LN(causal text encoder over [<bos> caption <eos>] without <image>, at <eos>)),
            symmetric CE over the L2-normalised embeddings x min(exp(log_scale), 100);
            trains vision.*, text.*, clip.* (projector and LM frozen)
  lm        the GPT alone on the text, <image> dropped; trains lm.*
  align     the LLaVA loss below; trains proj.* only
  instruct  the LLaVA loss; trains proj.* and lm.* (ViT frozen)
  e2e       the LLaVA loss; trains vision.* (not its CLIP head ln_f / proj), proj.*, lm.*
The CLIP parts (VLM built from a cfg with t_layers, t_dim, t_heads, clip_dim) have ours' shapes and
names but are not checked numerically against ours; the benchmark's text rows are full length, so
<eos> is the last position.

The model (VLM below; test/torch_vlm_model_check.py loads our parameters into it in float64 and
compares the loss and every gradient with our CPU reference):
  images (B, H, H, 3) in [0, 1] -> patches (P = (H/p)^2, vector order (py, px, c), K = 3p^2)
  -> Linear(K, Dv) -> [CLS] prepended -> + positions (P+1, Dv) -> pre-LN ViT blocks (bidirectional)
  -> the input of the LAST block (LLaVA's penultimate layer; the whole stack when it has one block),
     [CLS] dropped -> projector Linear(Dv, Dl) [-> GELU -> Linear(Dl, Dl)]
  -> LM sequence: <bos>, the P image tokens in <image>'s place, the text after <image>
     (length max_text - 1 + P) -> + positions -> pre-LN GPT blocks (causal) -> LayerNorm
  -> logits = x wte^T (tied) -> cross-entropy over the marked tokens (ignore_index -1), mean.
Block: x += proj(attn(LN1(x))); x += W2 gelu_tanh(W1 LN2(x)); qkv one Linear with bias (q | k | v,
heads contiguous), scale 1/sqrt(hd), LayerNorm eps 1e-5. Parameter names are ours
("vision.blocks.0.attn.qkv.weight", "lm.wte", "proj.fc1.bias", ...). Our LM also masks the padding
keys past each row's length; with causal attention that changes no loss and no gradient (padding
rows come after every target), so the model here is plain causal.

The step: forward + loss, backward, global-norm clip (1.0), AdamW (lr 1e-3, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on the matrices only, fused on CUDA), gradients set to None. The
batches are random (images, text with a few target tokens), a pool of them in (pinned) host memory
copied to the device each step, as train_vlm copies its batch. Modes:
  eager-tf32    fp32 weights and activations, TF32 matmuls (as ours by default)
  eager-fp32    the same with TF32 off
  eager-bf16    bf16 autocast
  compile-tf32  torch.compile of the model (forward + loss; the backward through AOTAutograd)
  compile-bf16  torch.compile under bf16 autocast
Each stage x mode: --warmup steps, then --steps timed steps (CUDA events on the GPU); prints median
ms/step, sequences/s and peak memory (torch.cuda.max_memory_allocated), one line each, then one
markdown table (stage, impl, mode, ms/step, seq/s, peak, speed relative to that stage's torch
compile tf32). --ours BINARY --data-dir DIR also runs train_vlm (ours) once per stage with the same
sizes (--stage S ... --eval-interval 0 --eval-records 64, --ours-args appended) and adds its summary
line ("summary: X ms/step, Y sequences/s": the mean wall time of its steps after the first) to the
table, then ours / torch compile tf32 per stage.
"""
import argparse
import contextlib
import math
import re
import shlex
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BOS, EOS, IMAGE = 1, 2, 3   # src/tokenizer.h's ids (<pad> is 0)
LN_EPS = 1e-5


# ---------------------------------------------------------------------------
# the model


def attention(q, k, v, causal, use_sdpa):
    """q, k, v: (B, NH, T, hd) -> (B, NH, T, hd); softmax(q k^T / sqrt(hd)) v, causal or not."""
    if use_sdpa and hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, C, n_head, causal):
        super().__init__()
        self.n_head, self.causal, self.use_sdpa = n_head, causal, True
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = attention(q, k, v, self.causal, self.use_sdpa)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.fc = nn.Linear(C, 4 * C)
        self.proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C, n_head, causal):
        super().__init__()
        self.ln1 = nn.LayerNorm(C, eps=LN_EPS)
        self.attn = Attention(C, n_head, causal)
        self.ln2 = nn.LayerNorm(C, eps=LN_EPS)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Vision(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.patch_size = cfg["patch"]
        P = (cfg["image_size"] // cfg["patch"]) ** 2
        self.patch = nn.Linear(3 * cfg["patch"] ** 2, cfg["v_dim"])
        self.cls = nn.Parameter(torch.zeros(cfg["v_dim"]))
        self.pos = nn.Parameter(torch.zeros(P + 1, cfg["v_dim"]))
        self.blocks = nn.ModuleList(Block(cfg["v_dim"], cfg["v_heads"], False) for _ in range(cfg["v_layers"]))
        # LLaVA reads the penultimate layer: the input of the last block (the output of a single one)
        self.n_run = cfg["v_layers"] - 1 if cfg["v_layers"] > 1 else 1
        if "clip_dim" in cfg:   # CLIP's image head: final LN at [CLS], projection (no bias)
            self.ln_f = nn.LayerNorm(cfg["v_dim"], eps=LN_EPS)
            self.proj = nn.Linear(cfg["v_dim"], cfg["clip_dim"], bias=False)

    def encode(self, images, n_blocks):
        """images (B, H, H, 3) -> (B, P+1, Dv) after the first n_blocks blocks, [CLS] first."""
        B, H, W, _ = images.shape
        p = self.patch_size
        patches = images.reshape(B, H // p, p, W // p, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, p * p * 3)
        x = self.patch(patches)
        x = torch.cat([self.cls.to(x.dtype).expand(B, 1, -1), x], 1) + self.pos
        for blk in self.blocks[:n_blocks]:
            x = blk(x)
        return x

    def forward(self, images):
        """images (B, H, H, 3) -> features (B, P, Dv), [CLS] dropped."""
        return self.encode(images, self.n_run)[:, 1:]

    def clip_embed(self, images):
        """CLIP's image embedding (B, E), not normalised: every block, LN of the [CLS] row, projection."""
        return self.proj(self.ln_f(self.encode(images, len(self.blocks))[:, 0]))


class Projector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["v_dim"], cfg["l_dim"])
        self.fc2 = nn.Linear(cfg["l_dim"], cfg["l_dim"]) if cfg["proj_mlp"] else None

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(F.gelu(x, approximate="tanh")) if self.fc2 is not None else x


class LM(nn.Module):
    def __init__(self, cfg, T):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(cfg["vocab"], cfg["l_dim"]))
        self.wpe = nn.Parameter(torch.zeros(T, cfg["l_dim"]))
        self.blocks = nn.ModuleList(Block(cfg["l_dim"], cfg["l_heads"], True) for _ in range(cfg["l_layers"]))
        self.ln_f = nn.LayerNorm(cfg["l_dim"], eps=LN_EPS)


class TextEncoder(nn.Module):
    """CLIP's text tower: a causal transformer over [<bos> caption <eos>] (<image> dropped, length
    max_text - 1) with its own token and position embeddings, final LN at <eos>, projection."""

    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(cfg["vocab"], cfg["t_dim"]))
        self.wpe = nn.Parameter(torch.zeros(cfg["max_text"] - 1, cfg["t_dim"]))
        self.blocks = nn.ModuleList(Block(cfg["t_dim"], cfg["t_heads"], True) for _ in range(cfg["t_layers"]))
        self.ln_f = nn.LayerNorm(cfg["t_dim"], eps=LN_EPS)
        self.proj = nn.Linear(cfg["t_dim"], cfg["clip_dim"], bias=False)

    def forward(self, tokens):
        """tokens (B, max_text) as the LM's text batches -> (B, E). The benchmark's rows are full length,
        so <eos> is the last position."""
        x = F.embedding(text_only(tokens), self.wte) + self.wpe
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.ln_f(x[:, -1]))


def text_only(t):
    """the text without its <image> (position 1), as vlm_build_sequences(with_image = false)."""
    return torch.cat([t[:, :1], t[:, 2:]], 1)


def lm_length(cfg):
    return cfg["max_text"] - 1 + (cfg["image_size"] // cfg["patch"]) ** 2


class VLM(nn.Module):
    """cfg: dict with image_size, patch, v_layers, v_dim, v_heads, proj_mlp, vocab, l_layers, l_dim,
    l_heads, max_text (VlmConfig's fields)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.P = (cfg["image_size"] // cfg["patch"]) ** 2
        self.vision = Vision(cfg)
        self.proj = Projector(cfg)
        self.lm = LM(cfg, lm_length(cfg))
        self.has_clip = "clip_dim" in cfg   # cfg with t_layers, t_dim, t_heads, clip_dim: CLIP's parts too
        if self.has_clip:
            self.text = TextEncoder(cfg)
            self.clip = nn.Module()
            self.clip.log_scale = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self):
        """As vlm_init_params: blocks GPT-2's (N(0, 0.02), residual projections / sqrt(2 L), biases 0,
        norms 1, 0); patch embedding and projector nn.Linear's default; [CLS], positions, wte N(0, 0.02)."""
        for stack in (self.vision.blocks, self.lm.blocks) + ((self.text.blocks,) if self.has_clip else ()):
            for blk in stack:
                for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc, blk.mlp.proj):
                    nn.init.normal_(lin.weight, std=0.02)
                    nn.init.zeros_(lin.bias)
                for lin in (blk.attn.proj, blk.mlp.proj):
                    nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * len(stack)))
        for p in (self.vision.cls, self.vision.pos, self.lm.wte, self.lm.wpe):
            nn.init.normal_(p, std=0.02)
        if self.has_clip:   # as ours: projections N(0, width^-1/2), text wte 0.02, wpe 0.01, scale 1/0.07
            nn.init.normal_(self.vision.proj.weight, std=self.cfg["v_dim"] ** -0.5)
            nn.init.normal_(self.text.proj.weight, std=self.cfg["t_dim"] ** -0.5)
            nn.init.normal_(self.text.wte, std=0.02)
            nn.init.normal_(self.text.wpe, std=0.01)
            with torch.no_grad():
                self.clip.log_scale.fill_(math.log(1 / 0.07))

    def set_sdpa(self, on):
        """on: F.scaled_dot_product_attention where torch has it; off: the explicit softmax."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.use_sdpa = on

    def decay_names(self):
        """the tensors AdamW decays: our matrices (weights of the linear maps and wte; not the
        positions, [CLS], norms or biases)."""
        return {n for n, p in self.named_parameters() if (n.endswith(".weight") and p.dim() == 2) or n in ("lm.wte", "text.wte")}

    def forward(self, images, tokens, targets=None):
        """images (B, H, H, 3); tokens, targets (B, max_text) text ids, token 1 = <image>, targets -1
        where not counted (make_lm_batch masks what lies past each row's length).
        Returns the mean loss over the counted targets, or the logits (B, Tl, V) without targets."""
        B = images.shape[0]
        img = self.proj(self.vision(images))                                  # (B, P, Dl)
        tok = F.embedding(tokens, self.lm.wte)                                # (B, Tt, Dl)
        x = torch.cat([tok[:, :1], img.to(tok.dtype), tok[:, 2:]], 1) + self.lm.wpe
        for blk in self.lm.blocks:
            x = blk(x)
        logits = F.linear(self.lm.ln_f(x), self.lm.wte)
        if targets is None:
            return logits
        # text position 0 -> 0, 1 (<image>) -> P (the last image row), t >= 2 -> t + P - 1
        lm_targets = torch.cat([targets[:, :1], targets.new_full((B, self.P - 1), -1), targets[:, 1:]], 1)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lm_targets.reshape(-1), ignore_index=-1)


    def forward_text(self, tokens, targets):
        """stage lm: the GPT alone on the text, <image> dropped (LM length max_text - 1); the target of
        <image>'s position moves to <bos>'s (vlm_build_sequences(with_image = false))."""
        x = F.embedding(text_only(tokens), self.lm.wte)
        x = x + self.lm.wpe[: x.shape[1]]
        for blk in self.lm.blocks:
            x = blk(x)
        logits = F.linear(self.lm.ln_f(x), self.lm.wte)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=-1)

    def forward_clip(self, images, tokens):
        """stage clip: symmetric cross-entropy over the scaled cosines of B matched (image, caption) pairs."""
        img = F.normalize(self.vision.clip_embed(images).float(), dim=-1)
        txt = F.normalize(self.text(tokens).float(), dim=-1)
        logits = self.clip.log_scale.exp().clamp(max=100.0) * (img @ txt.t())
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


# train_vlm.cu's frozen_for(): the parameter-name prefixes each stage freezes (no grad, no optimizer state)
STAGES = ("clip", "lm", "align", "instruct", "e2e")
FROZEN = {"clip": ("proj.", "lm."),
          "lm": ("vision.", "proj.", "text.", "clip."),
          "align": ("vision.", "lm.", "text.", "clip."),
          "instruct": ("vision.", "text.", "clip."),
          "e2e": ("text.", "clip.", "vision.ln_f", "vision.proj")}


class StageLoss(nn.Module):
    """one stage's training loss, as train_vlm's step: clip -> vlm_clip_forward, lm -> vlm_forward_text,
    align / instruct / e2e -> vlm_forward (torch.compile compiles this module)."""

    def __init__(self, model, stage):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, images, tokens, targets):
        if self.stage == "clip":
            return self.model.forward_clip(images, tokens)
        if self.stage == "lm":
            return self.model.forward_text(tokens, targets)
        return self.model(images, tokens, targets)


def freeze_for(model, stage):
    """requires_grad_(False) on what the stage freezes; -> the names of the trained tensors."""
    trained = set()
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith(FROZEN[stage]))
        if p.requires_grad:
            trained.add(n)
    return trained


def make_lm_batch(tokens, targets, lengths):
    """As vlm_build_sequences: text past each row's length is <pad> (0) and not counted."""
    past = torch.arange(tokens.shape[1], device=tokens.device)[None, :] >= lengths[:, None]
    return tokens.masked_fill(past, 0), targets.masked_fill(past, -1)


# ---------------------------------------------------------------------------
# the benchmark


MODES = {  # name: (compile, autocast dtype, tf32)
    "eager-tf32": (False, None, True),
    "eager-fp32": (False, None, False),
    "eager-bf16": (False, torch.bfloat16, True),
    "compile-tf32": (True, None, True),
    "compile-bf16": (True, torch.bfloat16, True),
}
DEFAULT_MODES = "eager-tf32,eager-bf16,compile-tf32,compile-bf16"
REFERENCE_MODE = "compile-tf32"   # the ratio column is relative to this one


def config_from_args(a):
    return {"image_size": a.image_size, "patch": a.patch, "v_layers": a.v_layers, "v_dim": a.v_dim,
            "v_heads": a.v_heads, "proj_mlp": int(a.projector == "mlp"), "vocab": a.vocab,
            "l_layers": a.l_layers, "l_dim": a.l_dim, "l_heads": a.l_heads, "max_text": a.text_len,
            "t_layers": a.t_layers, "t_dim": a.t_dim, "t_heads": a.t_heads, "clip_dim": a.clip_dim}


def random_batches(cfg, B, n, answer_len, gen, pin):
    """n random batches: images U(0, 1), text [<bos> <image> words... <eos>] at full length, the last
    answer_len tokens (then <eos>) as targets, as an answer."""
    H, T, V = cfg["image_size"], cfg["max_text"], cfg["vocab"]
    out = []
    for _ in range(n):
        images = torch.rand(B, H, H, 3, generator=gen)
        tokens = torch.randint(4, V, (B, T), generator=gen)
        tokens[:, 0], tokens[:, 1], tokens[:, -1] = BOS, IMAGE, EOS
        targets = torch.full((B, T), -1, dtype=torch.long)
        a0 = max(2, T - 1 - answer_len)
        targets[:, a0 - 1:T - 1] = tokens[:, a0:T]
        batch = (images, tokens, targets)
        out.append(tuple(t.pin_memory() for t in batch) if pin else batch)
    return out


def make_optimizer(model, a, device, trained):
    decay = model.decay_names()
    groups = [{"params": [p for n, p in model.named_parameters() if n in trained and n in decay], "weight_decay": a.weight_decay},
              {"params": [p for n, p in model.named_parameters() if n in trained and n not in decay], "weight_decay": 0.0}]
    kw = dict(lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    if device.type == "cuda":
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(groups, **kw)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_mode(mode, stage, cfg, a, device, batches):
    """-> dict(ms, peak_mib, first_s, loss0, loss1) or raises."""
    use_compile, amp, tf32 = MODES[mode]
    if use_compile and not hasattr(torch, "compile"):
        raise RuntimeError("torch.compile needs torch >= 2.0")
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()   # no compiled graph of an earlier mode stays alive
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(a.seed)
    model = VLM(cfg).to(device)
    trained = freeze_for(model, stage)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, a, device, trained)
    fn = StageLoss(model, stage)
    if use_compile:
        fn = torch.compile(fn, mode=None if a.compile_mode == "default" else a.compile_mode)
    amp_ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext

    def step(i):
        images, tokens, targets = (t.to(device, non_blocking=True) for t in batches[i % len(batches)])
        with amp_ctx():
            loss = fn(images, tokens, targets)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    t0 = time.perf_counter()
    loss0 = step(0).item()
    first_s = time.perf_counter() - t0
    for i in range(1, a.warmup):
        step(i)
    sync(device)
    times = []
    if device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(a.steps)]
        for i, (e0, e1) in enumerate(ev):
            e0.record()
            loss = step(i)
            e1.record()
        torch.cuda.synchronize()
        times = [e0.elapsed_time(e1) for e0, e1 in ev]
    else:
        for i in range(a.steps):
            t0 = time.perf_counter()
            loss = step(i)
            times.append((time.perf_counter() - t0) * 1000.0)
    loss1 = loss.item()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"ms": statistics.median(times), "peak_mib": peak, "first_s": first_s, "loss0": loss0, "loss1": loss1}


def run_ours(a, cfg, device, stage):
    """Runs train_vlm --stage STAGE with the same sizes; -> dict(ms, mem_mib, data) or raises. data: what
    its "data:" line says of the images and the text (the torch model takes the same sizes)."""
    steps = a.ours_steps or a.warmup + a.steps
    cmd = [a.ours, "--stage", stage, "--data-dir", a.data_dir, "--steps", str(steps), "--batch", str(a.batch),
           "--eval-interval", "0", "--eval-records", "64", "--log-every", str(steps),
           "--patch", str(cfg["patch"]), "--v-layers", str(cfg["v_layers"]), "--v-dim", str(cfg["v_dim"]),
           "--v-heads", str(cfg["v_heads"]), "--projector", a.projector, "--l-layers", str(cfg["l_layers"]),
           "--l-dim", str(cfg["l_dim"]), "--l-heads", str(cfg["l_heads"]), "--t-layers", str(cfg["t_layers"]),
           "--t-dim", str(cfg["t_dim"]), "--t-heads", str(cfg["t_heads"]), "--clip-dim", str(cfg["clip_dim"]),
           "--lr", str(a.lr), "--weight-decay", str(a.weight_decay), "--grad-clip", str(a.grad_clip),
           "--device", "cuda" if device.type == "cuda" else "cpu"]
    cmd += shlex.split(a.ours_args)
    print("# ours: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {out.strip()[-1500:]}")
    m = re.search(r"summary: ([\d.]+) ms/step, ([\d.]+) sequences/s", out)
    if not m:
        raise RuntimeError("no 'summary:' line in its output: " + out.strip()[-1500:])
    mem = re.findall(r"mem ([\d.]+) MiB", out)
    data = {}
    d = re.search(r"images (\d+)x\d+, vocabulary (\d+) words, text up to (\d+) tokens", out)
    if d:
        data = {"image_size": int(d.group(1)), "vocab": int(d.group(2)), "max_text": int(d.group(3))}
    return {"ms": float(m.group(1)), "seq_s": float(m.group(2)), "mem_mib": float(mem[-1]) if mem else None, "data": data}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list of train_vlm's stages: " + ", ".join(STAGES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per mode first (compilation happens here)")
    ap.add_argument("--modes", default=DEFAULT_MODES, help="comma list of " + ", ".join(MODES) + ", or all")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode: default | reduce-overhead | max-autotune | ...")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--v-layers", type=int, default=4)
    ap.add_argument("--v-dim", type=int, default=128)
    ap.add_argument("--v-heads", type=int, default=4)
    ap.add_argument("--projector", default="mlp", choices=["mlp", "linear"])
    ap.add_argument("--l-layers", type=int, default=4)
    ap.add_argument("--l-dim", type=int, default=128)
    ap.add_argument("--l-heads", type=int, default=4)
    ap.add_argument("--t-layers", type=int, default=2, help="CLIP text encoder blocks")
    ap.add_argument("--t-dim", type=int, default=128, help="CLIP text encoder width")
    ap.add_argument("--t-heads", type=int, default=4, help="CLIP text encoder heads")
    ap.add_argument("--clip-dim", type=int, default=128, help="CLIP joint embedding width")
    ap.add_argument("--vocab", type=int, default=48)
    ap.add_argument("--text-len", type=int, default=27, help="text tokens per sequence (max_text, with <bos> and <image>)")
    ap.add_argument("--answer-len", type=int, default=4, help="target tokens per sequence (then <eos>)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--ours", default="", help="our train_vlm binary: run it too (once per stage), with the same sizes")
    ap.add_argument("--data-dir", default="", help="with --ours: its data folder (./build/make_scenes --out DIR)")
    ap.add_argument("--ours-steps", type=int, default=0, help="with --ours: its --steps (0: warmup + steps)")
    ap.add_argument("--ours-args", default="", help="with --ours: more arguments for it, one string")
    a = ap.parse_args()
    if a.ours and not a.data_dir:
        ap.error("--ours needs --data-dir")
    modes = list(MODES) if a.modes == "all" else [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}: one of {', '.join(MODES)}")
    stages = [x.strip() for x in a.stages.split(",") if x.strip()]
    for x in stages:
        if x not in STAGES:
            ap.error(f"unknown stage {x!r}: one of {', '.join(STAGES)}")
    if a.steps < 1 or a.warmup < 1 or a.batch < 1:
        ap.error("--steps, --warmup and --batch must be >= 1")
    if "clip" in stages and a.batch < 2:
        ap.error("stage clip needs --batch >= 2")
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    cfg = config_from_args(a)
    B = a.batch

    rows = []   # (stage, impl, mode label, ms, peak text)
    if a.ours:   # first: its data fixes the image size, vocabulary and text length
        for stage in stages:
            try:
                r = run_ours(a, cfg, device, stage)
                for k, v in r["data"].items():
                    if cfg[k] != v:
                        print(f"# the data has {k} {v}: the torch model takes it too (not {cfg[k]})")
                        cfg[k] = v
                rows.append((stage, "ours", "train_vlm", r["ms"], "-" if r["mem_mib"] is None else f"{r['mem_mib']:.0f} MiB*"))
                print(f"{stage} | ours train_vlm | {r['ms']:.2f} ms/step | {B / r['ms'] * 1e3:.0f} seq/s", flush=True)
            except Exception as exc:
                print(f"{stage} | ours train_vlm | failed: {exc}", flush=True)
    if cfg["image_size"] % cfg["patch"] or cfg["v_dim"] % cfg["v_heads"] or cfg["l_dim"] % cfg["l_heads"] or cfg["t_dim"] % cfg["t_heads"]:
        sys.exit("image size must be a multiple of the patch, widths multiples of their head counts")
    if cfg["max_text"] < 3 or cfg["vocab"] <= 4:
        sys.exit("--text-len must be >= 3 and --vocab > 4")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# device {name}, torch {torch.__version__}; batch {B}, images {cfg['image_size']}px / patch {cfg['patch']} "
          f"({(cfg['image_size'] // cfg['patch']) ** 2} patches), ViT {cfg['v_layers']}x{cfg['v_dim']} ({cfg['v_heads']} heads), "
          f"{a.projector} projector, GPT {cfg['l_layers']}x{cfg['l_dim']} ({cfg['l_heads']} heads), vocab {cfg['vocab']}, "
          f"text {cfg['max_text']}, LM sequence {lm_length(cfg)}; CLIP text encoder {cfg['t_layers']}x{cfg['t_dim']} "
          f"({cfg['t_heads']} heads), embedding {cfg['clip_dim']}; {a.warmup} warm-up + {a.steps} timed steps a mode", flush=True)

    gen = torch.Generator().manual_seed(a.seed)
    batches = random_batches(cfg, B, 4, a.answer_len, gen, pin=device.type == "cuda")

    for stage in stages:
        for mode in modes:
            label = mode.replace("-", " ")
            try:
                r = run_mode(mode, stage, cfg, a, device, batches)
            except Exception as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print(f"{stage} | torch {label} | skipped: {type(exc).__name__}: {msg}", flush=True)
                continue
            peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f} MiB"
            print(f"{stage} | torch {label} | {r['ms']:.2f} ms/step | {B / r['ms'] * 1e3:.0f} seq/s | {peak} | first step "
                  f"{r['first_s']:.1f} s; loss {r['loss0']:.4f} first, {r['loss1']:.4f} last"
                  + ("" if math.isfinite(r["loss1"]) else "  (NOT FINITE)"), flush=True)
            rows.append((stage, "torch", label, r["ms"], peak))

    ref_label = REFERENCE_MODE.replace("-", " ")
    ref_name = "torch " + ref_label
    refs = {st: ms for st, impl, label, ms, _ in rows if impl == "torch" and label == ref_label}
    print()
    print(f"| stage | impl | mode | ms/step | seq/s | peak mem | speed vs {ref_name} |")
    print("|---|---|---|---:|---:|---:|---:|")
    for stage in stages:
        for st, impl, label, ms, peak in rows:
            if st == stage:
                ratio = f"{refs[st] / ms:.2f}x" if st in refs else "-"
                print(f"| {st} | {impl} | {label} | {ms:.2f} | {B / ms * 1e3:.0f} | {peak} | {ratio} |")
    print()
    print("torch: median of the timed steps (CUDA events on the GPU), peak = torch.cuda.max_memory_allocated;")
    if a.ours:
        print("ours: train_vlm's summary (mean wall time of its steps after the first, with its host-side batch"
              " assembly); * its last logged 'mem': " + ("device memory in use (cudaMemGetInfo, CUDA context included)."
                                                       if device.type == "cuda" else "the process's resident memory."))
        for stage in stages:
            ours = next((ms for st, impl, _, ms, _ in rows if st == stage and impl == "ours"), None)
            if ours and stage in refs:
                print(f"{stage}: ours / {ref_name} = {refs[stage] / ours:.2f}x the throughput "
                      f"({ours:.2f} vs {refs[stage]:.2f} ms/step)")
            else:
                print(f"{stage}: ours / {ref_name}: - (" + ("ours failed" if not ours else f"no {ref_name} row") + ")")


if __name__ == "__main__":
    main()
