#!/usr/bin/python3
"""PyTorch float64 oracle for CLIP's contrastive loss and logits (src/clip_loss.h).

Runs build/torch_clip_dump (our fp32 CPU loss, its gradients and the logits on random inputs; built
here with the Makefile's g++ command when it is missing or older than its sources), then recomputes
everything in float64 from the dumped inputs, from the equations:
    s = min(exp(log_scale), 100),  u = F.normalize(img),  v = F.normalize(txt),  L = s u v^T
    loss = (F.cross_entropy(L, arange(N)) + F.cross_entropy(L^T, arange(N))) / 2
with gradients from autograd (dloss/dL for the cached dlogits), and compares each tensor by
relative error ||ours - ref|| / ||ref||. Where the clamp is active, our dlog_scale must be exactly 0.
Prints "PASS name" / "FAIL name: why" per tensor and last "N passed, N failed"; exits 1 on any
failure, including a missing torch or a failing dump binary. The file reading and the comparison
are those of test/torch_check.py.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, tensor file reader; exits if torch is missing)
from torch_check import F, compare, finish, leaf, report, run_case, torch  # noqa: E402

ROOT = tc.ROOT
MAX_SCALE = 100.0


# ---------------------------------------------------------------------------
# reference math, written from the equations (not from our C++)

def ref_logits(img, txt, log_scale):
    s = torch.exp(log_scale).clamp(max=MAX_SCALE)
    return s * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def ref_loss(L):
    t = torch.arange(L.shape[0])
    return (F.cross_entropy(L, t) + F.cross_entropy(L.T, t)) / 2


def case_loss(d, p):
    p = p + "."
    img, txt, ls = leaf(d(p + "img")), leaf(d(p + "txt")), leaf(d(p + "log_scale").reshape(()))
    L = ref_logits(img, txt, ls)
    loss = ref_loss(L)
    compare(p + "loss", d(p + "loss").reshape(()), loss)
    dL, dimg, dtxt, dls = torch.autograd.grad(loss, [L, img, txt, ls])
    compare(p + "dlogits", d(p + "dlogits"), dL)
    compare(p + "rn_img", d(p + "rn_img"), 1.0 / img.detach().norm(dim=-1))
    compare(p + "rn_txt", d(p + "rn_txt"), 1.0 / txt.detach().norm(dim=-1))
    compare(p + "dimg", d(p + "dimg"), dimg)
    compare(p + "dtxt", d(p + "dtxt"), dtxt)
    ours = d(p + "dlog_scale").reshape(())
    if math.exp(ls.item()) > MAX_SCALE:   # s = 100 is a constant: autograd gives 0 too
        report(ours.item() == 0.0 and dls.item() == 0.0, p + "dlog_scale exactly 0 (clamp active)",
               f"ours {ours.item():.3e}, reference {dls.item():.3e}")
    else:
        compare(p + "dlog_scale", ours, dls)
    # the loss from its definition: the mean of -log softmax at the diagonal, both ways
    Ld = L.detach()
    manual = -(torch.log_softmax(Ld, 1).diagonal().mean() + torch.log_softmax(Ld, 0).diagonal().mean()) / 2
    compare(p + "loss (log_softmax)", d(p + "loss").reshape(()), manual)


def case_logits(d, p):
    p = p + "."
    L = ref_logits(d(p + "img"), d(p + "txt"), d(p + "log_scale").reshape(()))
    compare(p + "logits", d(p + "logits"), L)


def main():
    d = tc.load_dump("torch_clip_dump")
    for name in ("clip.N1", "clip.N2", "clip.N7", "clip.N33", "clip.N33.shared", "clip.N9.init", "clip.N40.s2",
                 "clip.N7.clamp", "clip.N33.clamp", "clip.N2.clamp"):
        run_case(name, lambda name=name: case_loss(d, name))
    for name in ("logits.N5.M9", "logits.N37.M3.clamp", "logits.N1.M4"):
        run_case(name, lambda name=name: case_logits(d, name))
    finish()


if __name__ == "__main__":
    main()
