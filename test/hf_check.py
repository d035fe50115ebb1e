#!/usr/bin/python3
"""Checks an export (train_mamba --resume CKPT --export-hf DIR) in Hugging Face transformers.

usage: python3 test/hf_check.py DIR CKPT BIN [PROMPT]
  DIR     the export: model.safetensors + config.json
  CKPT    the checkpoint it was exported from
  BIN     a train_mamba binary (any build), for its greedy `--sample` output
  PROMPT  the generation prompt (default "And God said"; bytes, for a vocab of 256)

Runs where torch and transformers are installed (the GPU machine), not in the CPU suite.
Uses CUDA when present (TF32 off), else the CPU; HF_CHECK_DEVICE=cpu|cuda overrides. Without
the mamba_ssm kernels HF runs its slow pure-PyTorch Mamba, which is fine here.

  1. loading: MambaForCausalLM.from_pretrained(DIR) reports no missing, unexpected or
     mismatched keys, lm_head is tied to the embedding, every loaded tensor has the file's bits
  2. logits: HF's float32 logits for fixed token sequences (with and without the cache)
     equal the float64 reference of test/torch_check.py (ref_model) on the file's weights
  3. generation: HF's greedy generate() (use_cache) of 64 tokens from PROMPT agrees with the
     float64 reference's argmax at every step and with `BIN --resume CKPT --sample 64
     --temperature 0 --prompt PROMPT`. Where two greedy runs part at a near-tie (the two
     tokens' reference logits closer than TIE), float rounding may pick either: that passes,
     with a note.

Prints "PASS name" / "FAIL name: why" and last "N passed, N failed"; exits 1 on any failure.

On the GPU machine, from the repository root (a small model on the CLI tests' shards):
  make train_mamba && python3 test/tiny_shards.py /tmp/hf/data &&
  ./train_mamba --data-dir /tmp/hf/data --d-model 64 --n-layer 2 --d-state 16 --batch 8 \
      --seq-len 64 --steps 300 --checkpoint /tmp/hf/m.ckpt &&
  ./train_mamba --resume /tmp/hf/m.ckpt --export-hf /tmp/hf/out &&
  python3 test/hf_check.py /tmp/hf/out /tmp/hf/m.ckpt ./train_mamba "12 the quick"
"""
import json
import os
import struct
import subprocess
import sys

LOGITS_TOL = 1e-4   # HF float32 against the float64 reference, relative (as test/torch_check.py)
TIE = 1e-3          # logits closer than this (relative to 1 + |logit|) are a near-tie
N_GEN = 64

if len(sys.argv) not in (4, 5):
    print(__doc__)
    sys.exit(2)
EXPORT_DIR, CKPT, BIN = (os.path.abspath(p) for p in sys.argv[1:4])
PROMPT = sys.argv[4] if len(sys.argv) == 5 else "And God said"
HERE = os.path.dirname(os.path.abspath(__file__))

sys.path.insert(0, HERE)
# the float64 reference model and the PASS/FAIL helpers; it reports a missing torch or numpy
# itself (and exits), and changes the cwd to the repo root (the paths above are absolute)
import torch_check  # noqa: E402
from torch_check import finish, report, run_case  # noqa: E402
import torch  # noqa: E402

try:
    import transformers
except Exception as exc:
    report(False, "import transformers", repr(exc))
    finish()

DEVICE = os.environ.get("HF_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cuda.matmul.allow_tf32 = False  # plain float32, comparable with the CPU
torch.backends.cudnn.allow_tf32 = False
print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {DEVICE}")


# ---------------------------------------------------------------------------
# the export, read independently of transformers (json + struct)

def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {e['dtype']}")
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(buf[8 + n + b:8 + n + end]), dtype=torch.float32)
        out[name] = t.reshape(e["shape"])
    return out


def to_ours(hf_tensors, nl):
    """HF names -> ours (test/torch_check.py's P), float64; conv1d (E, 1, K) -> (E, K)."""
    P = {"embedding.weight": hf_tensors["backbone.embeddings.weight"],
         "norm_f.weight": hf_tensors["backbone.norm_f.weight"]}
    for i in range(nl):
        h, o = f"backbone.layers.{i}.", f"layers.{i}."
        P[o + "norm.weight"] = hf_tensors[h + "norm.weight"]
        for name in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight"):
            P[o + name] = hf_tensors[h + "mixer." + name]
        P[o + "conv1d.weight"] = P[o + "conv1d.weight"].squeeze(1)
    return {k: v.to(torch.float64) for k, v in P.items()}


cfg = json.load(open(os.path.join(EXPORT_DIR, "config.json")))
V, D, NL = cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"]
N, E, R = cfg["state_size"], cfg["intermediate_size"], cfg["time_step_rank"]
file_tensors = read_safetensors(os.path.join(EXPORT_DIR, "model.safetensors"))
P = to_ours(file_tensors, NL)


def reference_logits(tokens):
    """float64 logits (B, T, V) of test/torch_check.py's ref_model; tokens: (B, T) long, CPU."""
    with torch.no_grad():
        _, logits = torch_check.ref_model(P, tokens, tokens, V, NL, N, R, E)
    return logits


def rel_err(got, ref):
    got, ref = got.detach().to("cpu", torch.float64), ref.detach().to(torch.float64)
    return ((got - ref).norm() / (ref.norm() + 1e-30)).item()


# ---------------------------------------------------------------------------
# 1. loading

model = None


def load():
    global model
    from transformers import MambaForCausalLM
    model, info = MambaForCausalLM.from_pretrained(EXPORT_DIR, output_loading_info=True)
    model = model.float().to(DEVICE).eval()
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        got = list(info.get(key, []))
        report(not got, f"from_pretrained: no {key.replace('_', ' ')}", got)
    emb, head = model.backbone.embeddings.weight, model.lm_head.weight
    report(head.data_ptr() == emb.data_ptr() or torch.equal(head, emb), "lm_head tied to the embedding",
           "lm_head.weight differs from backbone.embeddings.weight")
    sd = model.state_dict()
    differ = [k for k, t in file_tensors.items() if k not in sd or not torch.equal(sd[k].cpu(), t)]
    report(not differ, "every loaded tensor has the file's bits", differ[:5])
    report(model.config.intermediate_size == E and model.config.time_step_rank == R,
           "config: intermediate_size and time_step_rank as exported",
           f"{model.config.intermediate_size}, {model.config.time_step_rank}")


run_case("from_pretrained", load)
if model is None:
    finish()


# ---------------------------------------------------------------------------
# 2. logits against the float64 reference

def fixed_tokens():
    if V == 256:
        texts = ["In the beginning God created the heaven and the earth. 0123456789",
                 "the quick brown fox jumps over the lazy dog; 42 + 17 = 59 (maybe)\n"]
        T = min(len(t) for t in texts)
        return torch.tensor([list(t.encode()[:T]) for t in texts], dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, V, (2, 48), generator=g)


def check_logits():
    tokens = fixed_tokens()
    ref = reference_logits(tokens)
    with torch.no_grad():
        for use_cache in (False, True):
            out = model(input_ids=tokens.to(DEVICE), use_cache=use_cache)
            err = rel_err(out.logits, ref)
            report(err < LOGITS_TOL, f"logits (B=2, T={tokens.shape[1]}, use_cache={use_cache}) vs float64 reference",
                   f"rel err {err:.3e} (tol {LOGITS_TOL:.0e})")


run_case("logits vs float64 reference", check_logits)


# ---------------------------------------------------------------------------
# 3. greedy generation: HF, the float64 reference, and our binary

def prompt_tokens():
    if V == 256:
        b = PROMPT.encode()
        return list(b) if b else [ord("\n")]  # as train_mamba: an empty prompt is "\n"
    return [0]                                # train_mamba starts a non-byte vocab at token 0


def hf_generate(prompt):
    from transformers import GenerationConfig
    model.generation_config.eos_token_id = None  # generate all N_GEN tokens: no stop token, as ours
    gen_cfg = GenerationConfig(max_new_tokens=N_GEN, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    ids = torch.tensor([prompt], dtype=torch.long, device=DEVICE)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_cfg, use_cache=True)
    seq = out.sequences if hasattr(out, "sequences") else out
    return seq[0, len(prompt):].tolist()


def our_generate(prompt):
    # fp32 weights on the GPU too: this compares against a float64 reference
    cmd = [BIN, "--resume", CKPT, "--sample", str(N_GEN), "--temperature", "0", "--gen-weights", "fp32"]
    if V == 256:
        cmd += ["--prompt", PROMPT]
    r = subprocess.run(cmd, capture_output=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')[-500:]}")
    out = r.stdout
    if V == 256:  # the prompt, then the continuation's bytes
        pb = bytes(prompt)
        i = out.find(pb)
        if i < 0:
            raise RuntimeError(f"the prompt is not in the output: {out[-300:]!r}")
        return list(out[i + len(pb):i + len(pb) + N_GEN])
    return [int(t) for t in out.decode().split()[-N_GEN:]]  # " t1 t2 ..." on the last line


def near_tie(ref_row, a, b):
    """True when tokens a and b have (nearly) the same reference logit at this step."""
    la, lb = ref_row[a].item(), ref_row[b].item()
    return abs(la - lb) <= TIE * (1.0 + max(abs(la), abs(lb)))


def check_generation():
    prompt = prompt_tokens()
    hf = hf_generate(prompt)
    report(len(hf) == N_GEN, f"HF generate() gives {N_GEN} tokens", f"gave {len(hf)}")
    # the reference, teacher-forced on HF's sequence: row i is the step that chose hf[i]
    seq = torch.tensor([prompt + hf], dtype=torch.long)
    ref = reference_logits(seq)[0, len(prompt) - 1:len(prompt) - 1 + len(hf)]
    not_argmax = [i for i in range(len(hf)) if not near_tie(ref[i], hf[i], int(ref[i].argmax()))]
    report(not not_argmax, "HF greedy tokens are the float64 reference's argmax at every step",
           f"not at steps {not_argmax[:8]}")

    ours = our_generate(prompt)
    show = (lambda t: bytes(t).decode("utf-8", "replace")) if V == 256 else str
    print(f"  prompt {PROMPT!r}\n  HF   {show(hf)!r}\n  ours {show(ours)!r}")
    match = sum(a == b for a, b in zip(hf, ours))
    first = next((i for i, (a, b) in enumerate(zip(hf, ours)) if a != b), None)
    if first is None and len(ours) == len(hf):
        report(True, f"--sample {N_GEN} --temperature 0 matches HF greedy: {match}/{len(hf)} tokens")
    elif first is not None and near_tie(ref[first], hf[first], ours[first]):
        report(True, f"--sample matches HF greedy up to a near-tie at step {first} ({match}/{len(hf)} tokens equal)")
    else:
        at = first if first is not None else min(len(hf), len(ours))
        report(False, "--sample matches HF greedy",
               f"{match}/{len(hf)} tokens equal, first difference at step {at} (got {len(ours)} tokens)")


run_case("generation", check_generation)
finish()
