// schedule.h: the learning-rate schedule. Linear warmup from lr/warmup to lr
// over `warmup` steps, then a cosine from lr down to min_lr_frac * lr at step
// `total`, and the floor after that.
#pragma once
#include <cmath>

typedef struct {
    float lr;           // peak
    float min_lr_frac;  // the floor, as a fraction of the peak
    int warmup;         // steps of linear warmup
    int total;          // the step where the cosine reaches the floor
} LrSchedule;

// step counts from 0 (the learning rate of the first update is lr_at(s, 0))
static float lr_at(const LrSchedule& s, int step) {
    if (step < s.warmup) return s.lr * (float)(step + 1) / (float)s.warmup;
    float min_lr = s.lr * s.min_lr_frac;
    int decay_steps = s.total - s.warmup;
    if (decay_steps <= 0) return s.lr;
    float progress = fminf((float)(step - s.warmup) / (float)decay_steps, 1.0f);
    return min_lr + 0.5f * (s.lr - min_lr) * (1.0f + cosf(3.14159265358979f * progress));
}
