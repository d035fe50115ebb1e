// sampler.h: picks the next token from logits: greedy, temperature, top-k.
//
//   temperature 0      -> the argmax (the lowest index among ties)
//   temperature t > 0  -> p_i ∝ exp((logit_i - max) / t) over the top_k largest
//                         logits (top_k 0: all), drawn with u in [0, 1)
//
// (logit - max) / t is computed in double: dividing the logits first overflows
// for tiny t (1e-38), and the limit t -> 0 must be the argmax.
#pragma once
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

static int argmax_token(const float* logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

static int sample_token(const float* logits, int V, float temperature, int top_k, float u) {
    if (!(temperature > 0.0f)) return argmax_token(logits, V);
    int k = (top_k > 0 && top_k < V) ? top_k : V;
    std::vector<std::pair<float, int>> v(V);
    for (int i = 0; i < V; i++) v[i] = {logits[i], i};
    // largest first; ties by index so the draw does not depend on the sort
    auto larger = [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::partial_sort(v.begin(), v.begin() + k, v.end(), larger);
    double mx = v[0].first, sum = 0;
    std::vector<double> w(k);
    for (int i = 0; i < k; i++) { w[i] = exp(((double)v[i].first - mx) / temperature); sum += w[i]; }
    double r = (double)u * sum, acc = 0;
    for (int i = 0; i < k; i++) { acc += w[i]; if (r < acc) return v[i].second; }
    return v[0].second;  // u * sum rounded up to sum: take the most likely
}
