/* Body of otam_dp.c, included once per WEIGHT type (see there).
 *
 * Weights w = exp(-d/lambda) come in the layout (outer, A, B, inner), contiguous. Rows are the
 * "from" frames and columns the "to" frames of the programme: with transpose = 0 rows run
 * along A and columns along B, with transpose = 1 the other way round (the second direction
 * of the same frame-distance matrices, without a transposed copy). A pair is (outer, inner);
 * pairs are numbered outer-major, and the table is (cols, rows, pairs), contiguous, double.
 *
 *   table[0, 0]  = w[0, 0]                                    (real column 1; indices m, l)
 *   table[0, l]  = w[0, l] (2 + table[0, l-1])                reference variant: vertical moves
 *                = 2 w[0, l]                                  paper variant
 *   table[m, 0]  = w[m, 0] table[m-1, 0]                      row 0: the hard prefix sum
 *   table[m, l]  = w[m, l] (table[m-1, l-1] + table[m-1, l])
 *   total        = 2 sum_{l<R-1} table[C-1, l] + table[C-1, R-1]   (right padding column)
 *
 * forward returns 0 when a table value leaves [1e-280, 1e280] (or is NaN), where double
 * loses precision; the caller then runs the log-domain programme instead.
 * backward: adjoint = d total / d table (right to left), and
 *   grad[d/lambda-space weight index] (+)= table * adjoint * scale   (d log total / d log w).
 */

static inline int64_t PASTE(weight_index, SUFFIX)(int64_t m, int64_t l, int64_t b_size, int64_t inner,
                                                   int transpose) {
    /* offset of w[m, l] (outer = inner index = 0) */
    return transpose ? (m * b_size + l) * inner : (l * b_size + m) * inner;
}

int PASTE(otam_forward, SUFFIX)(const WEIGHT *w, int64_t outer, int64_t a_size, int64_t b_size, int64_t inner,
                                int transpose, int reference, double *table, double *total) {
    const int64_t rows = transpose ? b_size : a_size, cols = transpose ? a_size : b_size;
    const int64_t pairs = outer * inner, block = a_size * b_size * inner;
    double low = 1.0, high = 1.0;
    for (int64_t m = 0; m < cols; ++m) {
        for (int64_t l = 0; l < rows; ++l) {
            const WEIGHT *wml = w + PASTE(weight_index, SUFFIX)(m, l, b_size, inner, transpose);
            double *cell = table + (m * rows + l) * pairs;
            const double *left = m > 0 ? table + ((m - 1) * rows + l) * pairs : cell;  /* column m-1 */
            for (int64_t o = 0; o < outer; ++o) {
                const WEIGHT *wo = wml + o * block;
                double *c = cell + o * inner;
                const double *lf = left + o * inner, *dg = l > 0 ? lf - pairs : lf;  /* dg: row l-1 */
                if (m == 0) {
                    if (l == 0) for (int64_t i = 0; i < inner; ++i) c[i] = (double)wo[i];
                    else if (reference) for (int64_t i = 0; i < inner; ++i) c[i] = (double)wo[i] * (2.0 + c[i - pairs]);
                    else for (int64_t i = 0; i < inner; ++i) c[i] = 2.0 * (double)wo[i];
                } else if (l == 0) {
                    for (int64_t i = 0; i < inner; ++i) c[i] = (double)wo[i] * lf[i];
                } else {
                    for (int64_t i = 0; i < inner; ++i) c[i] = (double)wo[i] * (lf[i] + dg[i]);
                }
                for (int64_t i = 0; i < inner; ++i) {
                    low = c[i] < low ? c[i] : low;
                    high = c[i] > high ? c[i] : high;
                }
            }
        }
    }
    const double *last = table + (cols - 1) * rows * pairs;
    for (int64_t p = 0; p < pairs; ++p) total[p] = last[(rows - 1) * pairs + p];
    for (int64_t l = 0; l + 1 < rows; ++l)
        for (int64_t p = 0; p < pairs; ++p) total[p] += 2.0 * last[l * pairs + p];
    return low >= 1e-280 && high <= 1e280;  /* false for NaN too */
}

void PASTE(otam_backward, SUFFIX)(const WEIGHT *w, int64_t outer, int64_t a_size, int64_t b_size, int64_t inner,
                                  int transpose, int reference, const double *table, const double *scale,
                                  double *adjoint, WEIGHT *grad, int accumulate) {
    const int64_t rows = transpose ? b_size : a_size, cols = transpose ? a_size : b_size;
    const int64_t pairs = outer * inner, block = a_size * b_size * inner;
    for (int64_t l = 0; l < rows; ++l)
        for (int64_t p = 0; p < pairs; ++p) adjoint[((cols - 1) * rows + l) * pairs + p] = l + 1 < rows ? 2.0 : 1.0;
    /* adjoint[m-1, l] = adjoint[m, l] w[m, l] + adjoint[m, l+1] w[m, l+1] */
    for (int64_t m = cols - 1; m > 0; --m) {
        for (int64_t l = 0; l < rows; ++l) {
            const WEIGHT *wml = w + PASTE(weight_index, SUFFIX)(m, l, b_size, inner, transpose);
            const WEIGHT *wbelow = l + 1 < rows ? w + PASTE(weight_index, SUFFIX)(m, l + 1, b_size, inner, transpose) : 0;
            const double *here = adjoint + (m * rows + l) * pairs;
            double *out = adjoint + ((m - 1) * rows + l) * pairs;
            for (int64_t o = 0; o < outer; ++o) {
                const WEIGHT *wo = wml + o * block;
                const double *h = here + o * inner;
                double *r = out + o * inner;
                if (wbelow) {
                    const WEIGHT *wb = wbelow + o * block;
                    const double *hb = h + pairs;
                    for (int64_t i = 0; i < inner; ++i) r[i] = h[i] * (double)wo[i] + hb[i] * (double)wb[i];
                } else {
                    for (int64_t i = 0; i < inner; ++i) r[i] = h[i] * (double)wo[i];
                }
            }
        }
    }
    if (reference) /* first real column: table[0, l] depends on table[0, l-1] through w[0, l] */
        for (int64_t l = rows - 1; l > 0; --l) {
            const WEIGHT *wl = w + PASTE(weight_index, SUFFIX)(0, l, b_size, inner, transpose);
            double *up = adjoint + (l - 1) * pairs;
            const double *here = adjoint + l * pairs;
            for (int64_t o = 0; o < outer; ++o)
                for (int64_t i = 0; i < inner; ++i) up[o * inner + i] += here[o * inner + i] * (double)wl[o * block + i];
        }
    for (int64_t m = 0; m < cols; ++m)
        for (int64_t l = 0; l < rows; ++l) {
            WEIGHT *g = grad + PASTE(weight_index, SUFFIX)(m, l, b_size, inner, transpose);
            const double *t = table + (m * rows + l) * pairs, *a = adjoint + (m * rows + l) * pairs;
            for (int64_t o = 0; o < outer; ++o)
                for (int64_t i = 0; i < inner; ++i) {
                    const int64_t p = o * inner + i;
                    const WEIGHT value = (WEIGHT)(t[p] * a[p] * scale[p]);
                    if (accumulate) g[o * block + i] += value;
                    else g[o * block + i] = value;
                }
        }
}
