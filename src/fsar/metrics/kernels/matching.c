/* C kernels of the matching metrics, compiled on first use by fsar.metrics._native.
 *
 * - OTAM's dynamic programme in the exp domain, forward and backward: the same recursion as
 *   fsar.metrics.otam._ExpDomainOTAM (read its docstring first), in one pass instead of two
 *   torch calls per column. otam_body.h holds it; it is included once per weight type.
 * - otam_cosine_forward_f32 / otam_cosine_backward_f32: an OTAM head from the frame-dot
 *   matrix and frame norms to its logits, and the gradient back to them.
 * - otam_totals_to_logits: an OTAM head's logits from the programme's totals.
 * - bimhm_cosine_f32: Bi-MHM from the frame-dot matrix, without autograd.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OTAM_CHUNK 64  /* pairs per chunk: a chunk's blocks and tables stay in cache */

#define PASTE2(a, b) a##_##b
#define PASTE(a, b) PASTE2(a, b)

#define WEIGHT float
#define SUFFIX f32
#include "otam_body.h"
#undef WEIGHT
#undef SUFFIX

#define WEIGHT double
#define SUFFIX f64
#include "otam_body.h"
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

/* logits[q, c] = -(mean over the targets t labelled c of distance[q, t]), into logits32 or
 * logits64 (whichever is not NULL); labels == NULL means the targets are the classes
 * themselves (prototypes), in order. Labels are validated by the caller (0..way-1, every class
 * present). Returns 1, or -1 when out of memory. */
static int distances_to_logits(const double *distance, int64_t n_query, int64_t n_targets, const int64_t *labels,
                               int64_t way, float *logits32, double *logits64) {
    double *sums = malloc(way * sizeof(double));
    double *counts = calloc(way, sizeof(double));
    if (!sums || !counts) {
        free(sums);
        free(counts);
        return -1;
    }
    for (int64_t t = 0; t < n_targets; ++t) counts[labels ? labels[t] : t] += 1.0;
    for (int64_t q = 0; q < n_query; ++q) {
        const double *row = distance + q * n_targets;
        for (int64_t c = 0; c < way; ++c) sums[c] = 0.0;
        for (int64_t t = 0; t < n_targets; ++t) sums[labels ? labels[t] : t] += row[t];
        for (int64_t c = 0; c < way; ++c) {
            const double value = -sums[c] / counts[c];
            if (logits32) logits32[q * way + c] = (float)value;
            else logits64[q * way + c] = value;
        }
    }
    free(sums);
    free(counts);
    return 1;
}

/* An OTAM head's logits from the programme's totals (count directions stacked, each
 * (n_query, n_targets)): distance = factor * sum over directions of -log(total), where
 * factor = lambda (times 1/2 when the two directions are averaged); then distances_to_logits. */
int otam_totals_to_logits(const double *total, int count, int64_t n_query, int64_t n_targets, double factor,
                          const int64_t *labels, int64_t way, float *logits32, double *logits64) {
    const int64_t pairs = n_query * n_targets;
    double *distance = malloc(pairs * sizeof(double));
    if (!distance) return -1;
    for (int64_t p = 0; p < pairs; ++p) {
        double sum = 0.0;
        for (int d = 0; d < count; ++d) sum -= log(total[d * pairs + p]);
        distance[p] = factor * sum;
    }
    const int status = distances_to_logits(distance, n_query, n_targets, labels, way, logits32, logits64);
    free(distance);
    return status;
}

/* The weights w = exp(-d / lambda) of pairs [p0, p0 + n) into block (cell, pair), from the
 * frame-dot matrix: one query frame i at a time, -d/lambda along the contiguous runs of the
 * natural layout into scratch (pair, j), its exp, then out cell by cell. scaled and weights
 * hold OTAM_CHUNK * target_frames floats. Returns 0 if a weight would not be a normal float. */
static int cosine_weights(const float *dots, const float *q_norm, const float *t_norm, int64_t n_targets,
                          int64_t query_frames, int64_t target_frames, float epsilon, float inverse_lam, int64_t p0,
                          int64_t n, float *scaled, float *weights, float *block) {
    int ok = 1;
    for (int64_t i = 0; i < query_frames; ++i) {
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
    return ok;
}

/* The OTAM heads' common case in one call: frame cosines -> weights -> the programmes, for
 * float32 features. dots[q, i, t, j] = <query q frame i, target t frame j> (the matrix product
 * in its natural layout), q_norm[q, i] and t_norm[t, j] the frame norms (already clamped for the
 * exact cosine), and w = exp((dots / (q_norm t_norm + eps) - 1) / lam) is formed chunk by chunk,
 * never as a whole tensor. Pairs are (q, t), q-major; rows run along the query frames in
 * direction 0. Returns as otam_forward_f32, and 0 also when a weight would fall below float32's
 * normal range. With logits != NULL it also writes the head's logits (n_query, way)
 * (otam_totals_to_logits with factor = combine * lam). */
int otam_cosine_forward_f32(const float *dots, const float *q_norm, const float *t_norm, int64_t n_query,
                            int64_t query_frames, int64_t n_targets, int64_t target_frames, double eps,
                            double lam, int directions, int reference, double *total, double combine,
                            const int64_t *labels, int64_t way, float *logits) {
    const int64_t pairs = n_query * n_targets, cells = query_frames * target_frames;
    const int64_t longest = query_frames > target_frames ? query_frames : target_frames;
    float *block = malloc(cells * OTAM_CHUNK * sizeof(float));
    float *scaled = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    float *weights = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    double *columns = malloc(2 * longest * OTAM_CHUNK * sizeof(double));
    int ok = block && scaled && weights && columns ? 1 : -1;
    for (int64_t p0 = 0; ok == 1 && p0 < pairs; p0 += OTAM_CHUNK) {
        const int64_t n = pairs - p0 < OTAM_CHUNK ? pairs - p0 : OTAM_CHUNK;
        ok = cosine_weights(dots, q_norm, t_norm, n_targets, query_frames, target_frames, (float)eps,
                            (float)(1.0 / lam), p0, n, scaled, weights, block);
        for (int transpose = 0, d = 0; ok == 1 && transpose < 2; ++transpose) {
            if (!(directions >> transpose & 1)) continue;
            double *out = total + d++ * pairs + p0;
            chunk_forward_f32(block, n, transpose ? target_frames : query_frames,
                              transpose ? query_frames : target_frames, target_frames, transpose, reference,
                              columns, 0, out);
            for (int64_t i = 0; i < n; ++i) ok &= out[i] >= 1e-280 && out[i] <= 1e280; /* false for NaN */
        }
    }
    if (ok == 1 && logits)
        ok = otam_totals_to_logits(total, (directions & 1) + (directions >> 1 & 1), n_query, n_targets,
                                   combine * lam, labels, way, logits, 0);
    free(block);
    free(scaled);
    free(weights);
    free(columns);
    return ok;
}

/* Backward of otam_cosine_forward_f32: scale[d, p] = d loss / d total (per direction and pair).
 * Recomputes each chunk's weights and tables, takes g = d loss / d(-d/lambda) (chunk_backward,
 * both directions summed), and chains it through s = (dots / (q_norm t_norm + eps) - 1) / lam:
 *   grad_dots = g / (lam den), and grad_den = -g dots / (lam den^2) summed into
 *   grad_q_norm[q, i] (times t_norm[t, j]) and grad_t_norm[t, j] (times q_norm[q, i]).
 * grad_dots has the layout of dots and is fully written; the norm gradients are written too.
 * Returns 1, or -1 when out of memory. */
int otam_cosine_backward_f32(const float *dots, const float *q_norm, const float *t_norm, int64_t n_query,
                             int64_t query_frames, int64_t n_targets, int64_t target_frames, double eps,
                             double lam, int directions, int reference, const double *scale, float *grad_dots,
                             float *grad_q_norm, float *grad_t_norm) {
    const int64_t pairs = n_query * n_targets, cells = query_frames * target_frames;
    float *block = malloc(cells * OTAM_CHUNK * sizeof(float));
    float *scaled = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    float *weights = malloc(OTAM_CHUNK * target_frames * sizeof(float));
    double *table = malloc(cells * OTAM_CHUNK * sizeof(double));
    double *adjoint = malloc(cells * OTAM_CHUNK * sizeof(double));
    double *grad_block = malloc(cells * OTAM_CHUNK * sizeof(double));
    double *q_sums = calloc(n_query * query_frames, sizeof(double));
    double *t_sums = calloc(n_targets * target_frames, sizeof(double));
    int ok = block && scaled && weights && table && adjoint && grad_block && q_sums && t_sums;
    for (int64_t p0 = 0; ok && p0 < pairs; p0 += OTAM_CHUNK) {
        const int64_t n = pairs - p0 < OTAM_CHUNK ? pairs - p0 : OTAM_CHUNK;
        /* the forward pass accepted these weights, so they are normal floats again */
        cosine_weights(dots, q_norm, t_norm, n_targets, query_frames, target_frames, (float)eps,
                       (float)(1.0 / lam), p0, n, scaled, weights, block);
        memset(grad_block, 0, cells * OTAM_CHUNK * sizeof(double));
        for (int transpose = 0, d = 0; transpose < 2; ++transpose) {
            if (!(directions >> transpose & 1)) continue;
            chunk_backward_f32(block, n, transpose ? target_frames : query_frames,
                               transpose ? query_frames : target_frames, target_frames, transpose, reference,
                               scale + d++ * pairs + p0, table, adjoint, grad_block);
        }
        for (int64_t k = 0; k < n; ++k) {
            const int64_t q = (p0 + k) / n_targets, t = (p0 + k) % n_targets;
            for (int64_t i = 0; i < query_frames; ++i) {
                const int64_t row = (q * query_frames + i) * n_targets * target_frames + t * target_frames;
                const double qn = q_norm[q * query_frames + i];
                double q_sum = 0.0;
                for (int64_t j = 0; j < target_frames; ++j) {
                    const double g = grad_block[(i * target_frames + j) * OTAM_CHUNK + k];
                    const double tn = t_norm[t * target_frames + j], den = qn * tn + eps;
                    const double grad_dot = g / (lam * den), grad_den = -grad_dot * (double)dots[row + j] / den;
                    grad_dots[row + j] = (float)grad_dot;
                    q_sum += grad_den * tn;
                    t_sums[t * target_frames + j] += grad_den * qn;
                }
                q_sums[q * query_frames + i] += q_sum;
            }
        }
    }
    if (ok) {
        for (int64_t e = 0; e < n_query * query_frames; ++e) grad_q_norm[e] = (float)q_sums[e];
        for (int64_t e = 0; e < n_targets * target_frames; ++e) grad_t_norm[e] = (float)t_sums[e];
    }
    free(block);
    free(scaled);
    free(weights);
    free(table);
    free(adjoint);
    free(grad_block);
    free(q_sums);
    free(t_sums);
    return ok ? 1 : -1;
}

/* Bi-MHM (HyRSM) of every (query, target) pair without autograd, for float32 features, in one
 * pass over the frame-dot matrix dots[q, i, t, j] (natural layout) with the clamped frame norms:
 * cos = dots / (q_norm t_norm); query_to_target[q, t] = sum_i (1 - max_j cos) and
 * target_to_query[q, t] = sum_j (1 - max_i cos), both (n_query, n_targets), double.
 * With logits != NULL it also writes the head's logits (n_query, way) from
 * distance = query_scale * query_to_target + target_scale * target_to_query (distances_to_logits).
 * Returns 1; 0 when a cosine is NaN or infinite (the caller then takes the torch path, whose
 * NaN reaches the logits and the error check); -1 when out of memory. */
int bimhm_cosine_f32(const float *dots, const float *q_norm, const float *t_norm, int64_t n_query,
                     int64_t query_frames, int64_t n_targets, int64_t target_frames, double *query_to_target,
                     double *target_to_query, double query_scale, double target_scale, const int64_t *labels,
                     int64_t way, float *logits) {
    const int64_t row = n_targets * target_frames;
    float *cos = malloc(row * sizeof(float));
    float *column_max = malloc(row * sizeof(float));
    float *inverse_t = malloc(row * sizeof(float));
    if (!cos || !column_max || !inverse_t) {
        free(cos);
        free(column_max);
        free(inverse_t);
        return -1;
    }
    for (int64_t e = 0; e < row; ++e) inverse_t[e] = 1.0f / t_norm[e];
    int invalid = 0;
    for (int64_t q = 0; q < n_query; ++q) {
        double *qt = query_to_target + q * n_targets, *tq = target_to_query + q * n_targets;
        for (int64_t t = 0; t < n_targets; ++t) qt[t] = 0.0;
        for (int64_t i = 0; i < query_frames; ++i) {
            const float *restrict d = dots + (q * query_frames + i) * row;
            const float inverse_q = 1.0f / q_norm[q * query_frames + i];
            for (int64_t e = 0; e < row; ++e) {
                cos[e] = d[e] * inverse_q * inverse_t[e];
                invalid |= !(cos[e] - cos[e] == 0.0f); /* NaN or infinite */
            }
            if (i == 0)
                for (int64_t e = 0; e < row; ++e) column_max[e] = cos[e];
            else
                for (int64_t e = 0; e < row; ++e) column_max[e] = cos[e] > column_max[e] ? cos[e] : column_max[e];
            for (int64_t t = 0; t < n_targets; ++t) {
                const float *c = cos + t * target_frames;
                float best = c[0];
                for (int64_t j = 1; j < target_frames; ++j) best = c[j] > best ? c[j] : best;
                qt[t] += 1.0 - (double)best;
            }
        }
        for (int64_t t = 0; t < n_targets; ++t) {
            double sum = 0.0;
            for (int64_t j = 0; j < target_frames; ++j) sum += 1.0 - (double)column_max[t * target_frames + j];
            tq[t] = sum;
        }
    }
    free(cos);
    free(column_max);
    free(inverse_t);
    if (invalid) return 0;
    if (logits) { /* distance = query_scale * query_to_target + target_scale * target_to_query */
        double *distance = malloc(n_query * n_targets * sizeof(double));
        if (!distance) return -1;
        for (int64_t p = 0; p < n_query * n_targets; ++p)
            distance[p] = query_scale * query_to_target[p] + target_scale * target_to_query[p];
        const int status = distances_to_logits(distance, n_query, n_targets, labels, way, logits, 0);
        free(distance);
        return status;
    }
    return 1;
}
