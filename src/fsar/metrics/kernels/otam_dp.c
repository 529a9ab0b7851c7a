/* OTAM dynamic programme in the exp domain (forward and backward) for fsar.metrics.otam.
 *
 * The same recursion as fsar.metrics.otam._ExpDomainOTAM (read its docstring first), run in one
 * pass instead of two torch calls per column. Compiled on first use by fsar.metrics._native.
 * otam_dp_body.h holds the code; it is included once per weight type (float, double).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OTAM_CHUNK 64  /* pairs per chunk of the forward pass */

#define PASTE2(a, b) a##_##b
#define PASTE(a, b) PASTE2(a, b)

#define WEIGHT float
#define SUFFIX f32
#include "otam_dp_body.h"
#undef WEIGHT
#undef SUFFIX

#define WEIGHT double
#define SUFFIX f64
#include "otam_dp_body.h"
#undef WEIGHT
#undef SUFFIX

/* e^x of n floats into y, vectorisable (no libm call): x = k ln2 + r with |r| <= ln2 / 2, a
 * degree-6 polynomial for e^r (relative error < 3e-7, about float32's own exp), 2^k built in
 * the exponent bits. Returns 0 if an input was below -87 (e^x would not be a normal float) or
 * NaN, so that the caller can fall back; 1 otherwise. */
static int exp_floats(const float *restrict x, float *restrict y, int64_t n) {
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    int low = 0;
    for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        low |= !(v >= -87.0f);
        v = v < -87.0f ? -87.0f : v;
        v = v > 88.0f ? 88.0f : v;
        const float t = v * 1.44269504f + shifter;
        const float k = t - shifter;
        const float r = (v - k * 0.693145752f) - k * 1.42860677e-06f;
        const float r2 = r * r;
        const float p = (1.0f + r) + r2 * ((0.5f + r * 0.166666672f) +
                                           r2 * ((0.0416666679f + r * 0.00833333377f) + r2 * 0.00138888892f));
        int32_t bits;
        memcpy(&bits, &t, sizeof bits);
        bits = (bits - 0x4B400000 + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        y[i] = p * scale;
    }
    return !low;
}

/* The OTAM heads' common case in one call, without autograd: frame cosines -> weights -> the
 * programmes, for float32 features. dots[q, i, t, j] = <query q frame i, target t frame j> (the
 * matrix product in its natural layout), q_norm[q, i] and t_norm[t, j] the frame norms
 * (already clamped for the exact cosine), and w = exp((dots / (q_norm t_norm + eps) - 1) / lam)
 * is formed chunk by chunk, never as a whole tensor. Pairs are (q, t), q-major; rows run along
 * the query frames in direction 0. Returns as otam_forward_f32, and 0 also when a weight would
 * fall below float32's normal range. */
int otam_cosine_forward_f32(const float *dots, const float *q_norm, const float *t_norm, int64_t n_query,
                            int64_t query_frames, int64_t n_targets, int64_t target_frames, double eps,
                            double lam, int directions, int reference, double *total) {
    const int64_t pairs = n_query * n_targets, cells = query_frames * target_frames;
    const int64_t longest = query_frames > target_frames ? query_frames : target_frames;
    float *block = malloc(cells * OTAM_CHUNK * sizeof(float));
    float *scaled = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    float *weights = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    double *columns = malloc(2 * longest * OTAM_CHUNK * sizeof(double));
    int ok = block && scaled && weights && columns ? 1 : -1;
    const float inverse_lam = (float)(1.0 / lam), epsilon = (float)eps;
    for (int64_t p0 = 0; ok == 1 && p0 < pairs; p0 += OTAM_CHUNK) {
        const int64_t n = pairs - p0 < OTAM_CHUNK ? pairs - p0 : OTAM_CHUNK;
        /* one query frame i at a time: -d/lambda along the contiguous runs of the natural layout
           into (pair, j), its exp, then written out cell by cell into the (cell, pair) block */
        for (int64_t i = 0; ok == 1 && i < query_frames; ++i) {
            for (int64_t k = 0; k < n;) {
                const int64_t q = (p0 + k) / n_targets, t0 = (p0 + k) % n_targets;
                const int64_t run = n_targets - t0 < n - k ? n_targets - t0 : n - k; /* targets of query q */
                const float *restrict row = dots + ((q * query_frames + i) * n_targets + t0) * target_frames;
                const float *restrict tn = t_norm + t0 * target_frames;
                const float qn = q_norm[q * query_frames + i];
                float *restrict values = scaled + k * target_frames;
                for (int64_t e = 0; e < run * target_frames; ++e)
                    values[e] = (row[e] / (qn * tn[e] + epsilon) - 1.0f) * inverse_lam;
                k += run;
            }
            if (!exp_floats(scaled, weights, n * target_frames)) ok = 0;
            for (int64_t j = 0; j < target_frames; ++j) {
                float *restrict out = block + (i * target_frames + j) * OTAM_CHUNK;
                for (int64_t k = 0; k < n; ++k) out[k] = weights[k * target_frames + j];
            }
        }
        for (int transpose = 0, d = 0; ok == 1 && transpose < 2; ++transpose) {
            if (!(directions >> transpose & 1)) continue;
            double *out = total + d++ * pairs + p0;
            chunk_forward_f32(block, n, transpose ? target_frames : query_frames,
                              transpose ? query_frames : target_frames, target_frames, transpose, reference,
                              columns, 0, out);
            for (int64_t i = 0; i < n; ++i) ok &= out[i] >= 1e-280 && out[i] <= 1e280; /* false for NaN */
        }
    }
    free(block);
    free(scaled);
    free(weights);
    free(columns);
    return ok;
}
