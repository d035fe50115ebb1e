#!/usr/bin/python3
"""PyTorch float64 oracle for the whole tiny LLaVA (src/vlm_model.h) on the CPU reference.

Runs build/torch_vlm_model_dump (test/torch_vlm_model_dump.cu: our model, fp32, on tiny configs with
both projector kinds, one- and three-block encoders and patch size 1; parameters moved off their
init, a batch with rows of several lengths and garbage past each length; built here with the
Makefile's g++ command when missing or older than its sources), loads the same parameters into the
PyTorch model that dev/vlm_torch_bench.py benchmarks (the VLM class, float64, explicit attention)
and compares, by relative error ||ours - ref|| / ||ref||:
  - the logits of a forward without targets, at every LM position inside a row's length
  - the loss, and the gradient of every parameter tensor (the encoder's last block, which LLaVA's
    penultimate-layer features skip, must get exactly zero)
  - the weight-decay flags: our decayed tensors = the benchmark's AdamW decay group
  - tensors of ours the LLaVA path does not use (CLIP's towers) must get zero gradients
Where torch has F.scaled_dot_product_attention (>= 2.0) the loss, logits and gradients are also
compared through it (the path the benchmark times). Prints "PASS name" / "FAIL name: why" and last
"N passed, N failed"; exits 1 on any failure.
"""
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, the tensor file reader; exits if torch is missing)
from torch_check import DT, F, compare, finish, report, run_case, torch  # noqa: E402

ROOT = tc.ROOT
CONFIG_KEYS = ["image_size", "patch", "v_layers", "v_dim", "v_heads", "proj_mlp", "vocab", "l_layers", "l_dim",
               "l_heads", "max_text"]   # then B: the dump's "<case>.config"
CASES = ("mlp", "linear", "vit1", "patch1")


def load_bench():
    spec = importlib.util.spec_from_file_location("vlm_torch_bench", os.path.join(ROOT, "dev", "vlm_torch_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rel_err(ours, ref):
    den = ref.norm().item()
    return (ours - ref).norm().item() / den if den > 0 else (ours - ref).norm().item()


def case(d, bench, name):
    p = name + "."
    vals = [int(v) for v in d(p + "config").tolist()]
    cfg = dict(zip(CONFIG_KEYS, vals))
    model = bench.VLM(cfg).to(DT)
    model.set_sdpa(False)
    mine = dict(model.named_parameters())
    ours = {k[len(p + "param."):] for k in d.t if k.startswith(p + "param.")}
    if set(mine) - ours:
        report(False, p + "parameters", f"the torch model has tensors ours lacks: {sorted(set(mine) - ours)}")
        return
    with torch.no_grad():
        for n, prm in mine.items():
            prm.copy_(d(p + "param." + n))   # a shape mismatch raises: one FAIL for the case
    report(True, p + f"parameters ({len(mine)} tensors loaded)")
    decayed = {n for n in ours if d(p + "decay." + n).item() == 1.0}
    want = model.decay_names()
    report(decayed & set(mine) == want, p + "weight-decay flags",
           f"ours decays {sorted(decayed & set(mine))}, the benchmark {sorted(want)}")
    unused = sorted(ours - set(mine))
    nonzero = [n for n in unused if d(p + "grad." + n).abs().max().item() != 0.0]
    groups = sorted({n.split(".")[0] + ".*" if n.startswith(("text.", "clip.")) else n for n in unused})
    report(not nonzero, p + f"tensors the LLaVA path skips get no gradient ({len(unused)}: {' '.join(groups) or 'none'})",
           f"nonzero: {nonzero}")

    images = d(p + "images")
    lengths = d(p + "lengths").long()
    tokens, targets = bench.make_lm_batch(d(p + "tokens").long(), d(p + "targets").long(), lengths)
    # LM positions inside each row's length: len + P - 1 of them
    Tl = bench.lm_length(cfg)
    inside = torch.arange(Tl)[None, :] < (lengths + model.P - 1)[:, None]

    def forward_backward():
        for prm in mine.values():
            prm.grad = None
        logits = model(images, tokens)
        loss = model(images, tokens, targets)
        loss.backward()
        g = {n: prm.grad if prm.grad is not None else torch.zeros_like(prm) for n, prm in mine.items()}
        return logits.detach(), loss.detach().reshape(1), g

    logits, loss, g = forward_backward()
    compare(p + "logits", d(p + "logits")[inside], logits[inside])
    compare(p + "loss", d(p + "loss"), loss)
    for n in mine:
        compare(p + "grad." + n, d(p + "grad." + n), g[n])
    if not hasattr(F, "scaled_dot_product_attention"):
        return
    # the benchmark's attention path: one line, the worst tensor
    model.set_sdpa(True)
    logits2, loss2, g2 = forward_backward()
    errs = {"logits": rel_err(d(p + "logits")[inside], logits2[inside]), "loss": rel_err(d(p + "loss"), loss2)}
    errs.update({"grad." + n: rel_err(d(p + "grad." + n), g2[n]) for n in mine})
    worst = max(errs, key=errs.get)
    report(errs[worst] < tc.TOL, p + f"sdpa: logits, loss and {len(mine)} gradients",
           f"worst {worst}: rel err {errs[worst]:.3e} (tol {tc.TOL:.0e})")


def main():
    try:
        bench = load_bench()
    except Exception as exc:
        report(False, "import dev/vlm_torch_bench.py", repr(exc))
        finish()
    d = tc.load_dump("torch_vlm_model_dump")
    for name in CASES:
        run_case(name, lambda name=name: case(d, bench, name))
    finish()


if __name__ == "__main__":
    main()
