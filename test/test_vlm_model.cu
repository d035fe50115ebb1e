// test_vlm_model.cu: the whole tiny LLaVA on the CPU reference.
//   - finite-difference gradient check of every parameter tensor (vision
//     encoder, projector of both kinds, LM), through the splice of the image
//     tokens into the text
//   - the backward accumulates (two passes give twice the gradient)
//   - the text -> LM sequence mapping: image rows, targets, lengths
//   - the loss counts only the marked tokens; the image changes the loss
//   - the text-only LM pass (stage lm) and the CLIP pass (stage clip): finite
//     differences of every tensor they train, zero gradient for the rest
//   - frozen tensors (stage align): no gradient buffer, bit-identical after a
//     step, and the projector's gradient through the frozen LM equals the one
//     of the unfrozen model
//   - LoRA on the GPT (stage instruct): finite differences of the projector and
//     every adapter (dropout on), the GPT's base frozen; merged generation ==
//     the unmerged forward
#include "../src/vlm_model.h"
#include "test_util.h"
#include "vlm_test_util.h"

static VlmConfig tiny_config(int proj_mlp) {
    VlmConfig c = {};
    c.image_size = 8; c.patch = 4;            // P = 4 patches of K = 48
    c.v_layers = 2; c.v_dim = 12; c.v_heads = 3;
    c.proj_mlp = proj_mlp;
    c.vocab = 13; c.l_layers = 2; c.l_dim = 8; c.l_heads = 2;
    c.max_text = 7;                           // LM length 7 - 1 + 4 = 10
    c.t_layers = 2; c.t_dim = 8; c.t_heads = 2; c.clip_dim = 6;
    return c;
}


// move every parameter off its init (zero biases, unit norms) and make the
// tiny model's activations O(1) so float32 finite differences see every path
static void jitter(VlmModel* m, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    ParamStore& ps = m->params;
    for (size_t i = 0; i < ps.num_params; i++) ps.params[i] += 0.3f * (2.0f * rng_uniform(&r) - 1.0f);
}

static void test_gradients(int proj_mlp) {
    VlmConfig c = tiny_config(proj_mlp);
    int B = 2;
    VlmModel m; vlm_build(&m, c, B, false);
    vlm_init_params(&m, 1);
    jitter(&m, 2);
    Rng r; rng_seed(&r, 3);
    Batch b = make_batch(c, B, &r, -1);
    auto loss = [&]() -> double { return vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B); };
    double l0 = loss();
    vlm_zero_grad(&m); vlm_backward(&m);
    const ParamStore& ps = m.params;
    std::vector<float> grads(ps.grads, ps.grads + ps.num_trainable);
    int fl = vlm_feature_layer(c);
    for (size_t i = 0; i < ps.tensors.size(); i++) {
        const ParamTensor& t = ps.tensors[i];
        // blocks at and above the feature layer, and the CLIP parts, do not reach the loss
        std::string unused = "vision.blocks." + std::to_string(fl) + ".";
        auto starts = [&](const std::string& p) { return t.name.compare(0, p.size(), p) == 0; };
        if (starts(unused) || starts("text.") || starts("clip.") || starts("vision.ln_f") || starts("vision.proj")) {
            double s = 0; for (size_t j = 0; j < t.numel; j++) s += fabs(grads[t.offset + j]);
            char name[160]; snprintf(name, sizeof name, "vlm proj_mlp=%d: %s (above the feature layer) has zero gradient", proj_mlp, t.name.c_str());
            report(s == 0, name, "sum |g| = %g", s);
            continue;
        }
        char name[160]; snprintf(name, sizeof name, "vlm proj_mlp=%d %s", proj_mlp, t.name.c_str());
        const float eps = 1e-2f;
        double noise = 2.0 * 1.2e-7 * fabs(l0) / (2.0 * eps);
        grad_check(name, ps.params + t.offset, grads.data() + t.offset, t.numel, loss, 3e-2, eps, 10, 11 + i, noise);
    }
    loss(); vlm_backward(&m);
    std::vector<float> twice(grads.size());
    for (size_t i = 0; i < grads.size(); i++) twice[i] = 2.0f * grads[i];
    char name[96]; snprintf(name, sizeof name, "vlm proj_mlp=%d: backward accumulates", proj_mlp);
    check_close(name, ps.grads, twice.data(), twice.size(), 1e-5);
    vlm_free(&m);
}

static void test_sequences_and_loss_mask() {
    VlmConfig c = tiny_config(1);
    int B = 2, P = vlm_num_patches(c), Tl = vlm_lm_len(c);
    VlmModel m; vlm_build(&m, c, B, false);
    vlm_init_params(&m, 4);
    Rng r; rng_seed(&r, 5);
    Batch b = make_batch(c, B, &r, -1);
    vlm_build_sequences(&m, b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    bool ok = true;
    for (int i = 0; i < B; i++) {
        const int* tok = &b.tokens[(size_t)i * c.max_text];
        const int* tgt = &b.targets[(size_t)i * c.max_text];
        const int* lt = &m.lm_tokens[(size_t)i * Tl];
        const int* lg = &m.lm_targets[(size_t)i * Tl];
        ok &= lt[0] == tok[0] && lg[0] == tgt[0];
        for (int p = 1; p < P; p++) ok &= lg[p] == -1;     // image rows predict nothing...
        ok &= lg[P] == tgt[1];                              // ...but the last one predicts what follows <image>
        for (int t = 2; t < b.lengths[i]; t++) ok &= lt[t + P - 1] == tok[t] && lg[t + P - 1] == tgt[t];
        ok &= m.lm_lengths[i] == b.lengths[i] + P - 1;
    }
    report(ok, "vlm: text -> LM sequence (image rows in place of <image>, targets, lengths)");
    float l0 = vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    Batch b2 = b;
    b2.images[7] += 0.5f;
    float l_img = vlm_forward(&m, b2.images.data(), b2.tokens.data(), b2.targets.data(), b2.lengths.data(), B);
    report(l_img != l0, "vlm: the loss depends on the image", "%g == %g", l_img, l0);
    std::vector<int> n_marked(1, 0);
    for (int v : b.targets) n_marked[0] += v >= 0;
    float per_token_sum = 0;
    for (int i = 0; i < B * Tl; i++) per_token_sum += m.host_losses[i];
    int nonzero_outside = 0;
    for (int i = 0; i < B * Tl; i++) if (m.lm_targets[i] < 0 && m.host_losses[i] != 0.0f) nonzero_outside++;
    report(nonzero_outside == 0, "vlm: unmarked positions add no loss", "%d positions", nonzero_outside);
    report(fabs(per_token_sum / m.n_targets - l0) < 1e-5 * fabs(l0) && (int)m.n_targets == n_marked[0],
           "vlm: the loss is the mean over the marked tokens", "%d marked, n_targets %g", n_marked[0], m.n_targets);
    vlm_free(&m);
}

enum Pass { IMAGE, TEXT, CLIP };
static float run_pass(VlmModel* m, Pass pass, Batch& b, int B) {
    if (pass == IMAGE) return vlm_forward(m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    if (pass == TEXT) return vlm_forward_text(m, b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    return vlm_clip_forward(m, b.images.data(), b.tokens.data(), b.lengths.data(), B);
}

// every tensor a pass trains passes finite differences; the others get exactly zero
static void test_pass_gradients(Pass pass, const char* label, const std::vector<std::string>& trained) {
    VlmConfig c = tiny_config(1);
    int B = 3;
    VlmModel m; vlm_build(&m, c, B, false);
    vlm_init_params(&m, 21);
    jitter(&m, 22);
    if (pass == CLIP) m.params.params[m.params.tensors[m.log_scale].offset] = logf(3.0f);  // below the clamp
    Rng r; rng_seed(&r, 23);
    Batch b = make_batch(c, B, &r, -1);
    auto loss = [&]() -> double { return run_pass(&m, pass, b, B); };
    double l0 = loss();
    vlm_zero_grad(&m); vlm_backward(&m);
    const ParamStore& ps = m.params;
    std::vector<float> grads(ps.grads, ps.grads + ps.num_trainable);
    for (size_t i = 0; i < ps.tensors.size(); i++) {
        const ParamTensor& t = ps.tensors[i];
        bool trains = false;
        for (const std::string& p : trained) trains |= t.name.compare(0, p.size(), p) == 0;
        char name[160];
        if (!trains) {
            double sum = 0; for (size_t j = 0; j < t.numel; j++) sum += fabs(grads[t.offset + j]);
            snprintf(name, sizeof name, "%s: %s gets no gradient", label, t.name.c_str());
            report(sum == 0, name, "sum |g| %g", sum);
            continue;
        }
        snprintf(name, sizeof name, "%s %s", label, t.name.c_str());
        const float eps = 1e-2f;
        grad_check(name, ps.params + t.offset, grads.data() + t.offset, t.numel, loss, 3e-2, eps, 10, 31 + i, 2.4e-7 * fabs(l0) / (2 * eps));
    }
    vlm_free(&m);
}

// stage align: only the projector trains, through the frozen LM
static void test_frozen() {
    VlmConfig c = tiny_config(1);
    int B = 2;
    std::vector<std::string> frozen = {"vision.", "lm.", "text.", "clip."};
    VlmModel full, align;
    vlm_build(&full, c, B, false);
    vlm_build(&align, c, B, false, true, frozen);
    vlm_init_params(&full, 41); jitter(&full, 42);
    // by name: freezing changes the layout (frozen tensors go last)
    for (const ParamTensor& t : align.params.tensors) {
        const ParamTensor& f = full.params.tensors[params_find(&full.params, t.name)];
        memcpy(align.params.params + t.offset, full.params.params + f.offset, t.numel * sizeof(float));
    }
    const ParamStore& pa = align.params;
    size_t proj = 0;
    for (const ParamTensor& t : pa.tensors) if (t.name.compare(0, 5, "proj.") == 0) proj += t.numel;
    report(pa.num_trainable == proj, "frozen: grads and AdamW moments hold the projector only", "%zu vs %zu", pa.num_trainable, proj);
    bool null_views = true;
    for (size_t i = 0; i < pa.tensors.size(); i++)
        if (pa.tensors[i].name.compare(0, 5, "proj.") != 0) null_views &= param_grad(&pa, (int)i) == nullptr;
    report(null_views, "frozen: no gradient view for any frozen tensor");
    Rng r; rng_seed(&r, 43);
    Batch b = make_batch(c, B, &r, -1);
    for (VlmModel* m : {&full, &align}) {
        vlm_forward(m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B);
        vlm_zero_grad(m); vlm_backward(m);
    }
    const ParamStore& pf = full.params;
    double worst = 0;
    for (const ParamTensor& t : pa.tensors) {
        if (t.name.compare(0, 5, "proj.") != 0) continue;
        int fi = params_find(&pf, t.name);
        worst = fmax(worst, rel_err(pa.grads + t.offset, pf.grads + pf.tensors[fi].offset, t.numel));
    }
    report(worst < 1e-6, "frozen: the projector's gradient through the frozen LM = the unfrozen model's", "rel err %.2e", worst);
    std::vector<float> before(pa.params, pa.params + pa.num_params);
    params_adamw_step(&align.params, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f}, 1e-2f, 1, 1.0f);
    bool same = true, moved = false;
    for (const ParamTensor& t : pa.tensors) {
        bool eq = memcmp(pa.params + t.offset, before.data() + t.offset, t.numel * sizeof(float)) == 0;
        if (t.name.compare(0, 5, "proj.") == 0) moved |= !eq; else same &= eq;
    }
    report(same, "frozen: every frozen tensor is bit-identical after a step");
    report(moved, "frozen: the projector moves");
    vlm_free(&full); vlm_free(&align);
}

// KV-cache generation == the parallel forward recomputed over the growing sequence
static void test_generation_matches_forward() {
    VlmConfig c = tiny_config(1);
    c.max_text = 9;
    VlmModel m; vlm_build(&m, c, 2, false, false);
    vlm_init_params(&m, 51); jitter(&m, 52);
    Rng r; rng_seed(&r, 53);
    std::vector<float> image = random_vec((size_t)c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 7, 9};
    std::vector<float> step_logits;
    std::vector<int> gen = vlm_generate(&m, image.data(), prompt, 5, -1, &step_logits);  // eos -1: never stops early
    std::vector<int> seq = prompt;
    double worst = 0; bool same = true;
    int V = c.vocab;
    for (size_t i = 0; i < gen.size(); i++) {
        std::vector<int> padded(seq); padded.resize(c.max_text, 0);
        int len = (int)seq.size();
        vlm_forward(&m, image.data(), padded.data(), nullptr, &len, 1);
        const floatX* row = m.logits + (size_t)(len + m.P - 2) * V;
        int best = (int)(std::max_element(row, row + V) - row);
        same &= best == gen[i];
        worst = fmax(worst, rel_err(step_logits.data() + i * V, row, V));
        seq.push_back(gen[i]);
    }
    report(gen.size() == 5 && same, "generation: KV-cache greedy tokens = the recomputed forward's", "%zu tokens", gen.size());
    report(worst < 1e-5, "generation: KV-cache logits = the recomputed forward's", "rel err %.2e", worst);
    vlm_free(&m);
}

static void test_lora() {
    VlmConfig c = tiny_config(1);
    int B = 2;
    LoraConfig lora; lora.rank = 2; lora.alpha = 4; lora.targets = "all"; lora.dropout = 0.2f;
    VlmModel m; vlm_build(&m, c, B, false, true, {"vision.", "text.", "clip."}, lora);
    vlm_init_params(&m, 61);
    jitter(&m, 62);  // B != 0: every adapter path is live
    const ParamStore& ps = m.params;
    size_t adapters = 0, lm_trainable = 0;
    for (const ParamTensor& t : ps.tensors) {
        adapters += lora_is_adapter(t.name) && t.trainable;
        lm_trainable += t.name.compare(0, 3, "lm.") == 0 && t.trainable && !lora_is_adapter(t.name);
    }
    report(adapters == 2u * 4 * c.l_layers && lm_trainable == 0, "vlm LoRA: 4 adapters per GPT block train, the GPT's base is frozen",
           "%zu adapters, %zu base tensors trainable", adapters, lm_trainable);
    Rng r; rng_seed(&r, 63);
    Batch b = make_batch(c, B, &r, -1);
    transformer_set_training(&m.lm, true, 5);
    auto loss = [&]() -> double { return vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B); };
    double l0 = loss();
    vlm_zero_grad(&m); vlm_backward(&m);
    std::vector<float> grads(ps.grads, ps.grads + ps.num_trainable);
    for (size_t i = 0; i < ps.tensors.size(); i++) {
        const ParamTensor& t = ps.tensors[i];
        if (!t.trainable) continue;
        char name[160]; snprintf(name, sizeof name, "vlm LoRA (p 0.2) %s", t.name.c_str());
        const float eps = 1e-2f;
        grad_check(name, ps.params + t.offset, grads.data() + t.offset, t.numel, loss, 3e-2, eps, 10, 71 + i, 2.4e-7 * fabs(l0) / (2 * eps));
    }
    // inference: merged weights give the unmerged logits (dropout off)
    transformer_set_training(&m.lm, false, 0);
    int len = b.lengths[0];
    vlm_forward(&m, b.images.data(), b.tokens.data(), nullptr, &len, 1);
    std::vector<float> unmerged(m.logits, m.logits + (size_t)m.Tl * c.vocab);
    transformer_lora_merge(&m.lm, &m.params, true);
    vlm_forward(&m, b.images.data(), b.tokens.data(), nullptr, &len, 1);
    check_close("vlm LoRA: merged forward == unmerged forward", m.logits, unmerged.data(), unmerged.size(), 1e-5);
    std::vector<int> prompt(b.tokens.begin(), b.tokens.begin() + 3);
    std::vector<int> gen = vlm_generate(&m, b.images.data(), prompt, 3, -1);
    report(gen.size() == 3, "vlm LoRA: generation from the merged weights");
    vlm_free(&m);
    expect_fatal("vlm LoRA: generation refuses unmerged adapters", "merge the GPT's adapters", [&]() {
        VlmModel x; vlm_build(&x, c, 1, false, false, {}, lora);
        vlm_init_params(&x, 1);
        vlm_generate(&x, b.images.data(), prompt, 2, -1);
    });
    expect_fatal("vlm LoRA: unknown target refused", "transformer layer has no 'in_proj'", [&]() {
        LoraConfig bad = lora; bad.targets = "in_proj";
        VlmModel x; vlm_build(&x, c, 1, false, true, {}, bad);
    });
}

int main() {
    test_lora();
    test_generation_matches_forward();
    test_pass_gradients(TEXT, "lm stage", {"lm."});
    test_pass_gradients(CLIP, "clip stage", {"vision.patch", "vision.cls", "vision.pos", "vision.blocks", "vision.ln_f", "vision.proj", "text.", "clip."});
    test_frozen();
    test_sequences_and_loss_mask();
    test_gradients(0);
    test_gradients(1);
    return test_summary();
}
