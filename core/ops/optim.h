// Optimiser updates over flat float32 buffers, with torch.optim's update rules.
#pragma once
#include <cstdint>

namespace pylenet {

// Validates one update: the gradient holds as many elements as the parameter (`op` names
// the update in the message).
void check_update(const char* op, int64_t p_size, int64_t g_size);

// In place: g' = g + wd*p; buf = momentum*buf + g' (buf = g' when `first`);
// p -= lr * (nesterov ? g' + momentum*buf : buf). With momentum 0, p -= lr * g' (buf unused).
void sgd_update(float* p, float* buf, const float* g, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, bool first);
// In place Adam: g' = g + wd*p; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
// p -= (lr / c1) * m / (sqrt(v / c2) + eps), with c1, c2 the bias corrections of this step.
void adam_update(float* p, float* m, float* v, const float* g, int64_t n, float lr, float b1,
                 float b2, float eps, float weight_decay, float c1, float c2);

}  // namespace pylenet
