/* Body of matching.c, included once per WEIGHT type (see there).
 *
 * Weights w = exp(-d/lambda) come as an (outer, A, B, inner) array: w[o, a, b, i] belongs to
 * frame a of one sequence and frame b of the other, for the pair p = o * inner + i. Rows are
 * the "from" frames and columns the "to" frames of the programme: direction 0 runs rows along
 * A and columns along B, direction 1 the other way round, so both directions read the same
 * matrices. `directions` is a bit mask of the directions to run; per-direction outputs are
 * stacked in that order.
 *
 *   table[0, 0]  = w[0, 0]                                    (real column 1; indices m, l)
 *   table[0, l]  = w[0, l] (2 + table[0, l-1])                reference variant: vertical moves
 *                = 2 w[0, l]                                  paper variant
 *   table[m, 0]  = w[m, 0] table[m-1, 0]                      row 0: the hard prefix sum
 *   table[m, l]  = w[m, l] (table[m-1, l-1] + table[m-1, l])
 *   total        = 2 sum_{l<R-1} table[C-1, l] + table[C-1, R-1]   (right padding column)
 *
 * Pairs are processed in chunks of OTAM_CHUNK: a chunk's weights are gathered into a
 * contiguous (A * B, chunk) block, so that every inner loop runs over contiguous pairs, and its
 * tables stay in cache. Nothing of size (pairs x A x B) is allocated; backward recomputes the
 * chunk's table instead of keeping it from the forward pass.
 *
 * forward returns 1, or 0 when a total leaves [1e-280, 1e280] (or is NaN), or -1 when out of
 * memory; the caller then runs the log-domain programme instead. Checking the totals suffices
 * when every weight is <= 1 (distances >= 0, which the caller ensures): a table value below
 * 1e-300 then contributes less than 1e-300 * 2R 2^C to its total, negligible against 1e-280
 * for C < 60, and a value that overflows makes its total overflow.
 * backward: adjoint = d total / d table, right to left, and
 *   grad = sum over directions of table * adjoint * scale      (scale = d loss / d total)
 */

static void PASTE(gather, SUFFIX)(const WEIGHT *w, int64_t cells, int64_t inner, int64_t p0, int64_t n,
                                  WEIGHT *block) {
    for (int64_t k = 0, p = p0; k < n;) { /* runs of contiguous inner indices */
        const int64_t o = p / inner, i = p % inner;
        const int64_t run = inner - i < n - k ? inner - i : n - k;
        const WEIGHT *source = w + o * cells * inner + i;
        for (int64_t cell = 0; cell < cells; ++cell)
            memcpy(block + cell * OTAM_CHUNK + k, source + cell * inner, run * sizeof(WEIGHT));
        k += run;
        p += run;
    }
}

static void PASTE(scatter, SUFFIX)(const double *block, int64_t cells, int64_t inner, int64_t p0, int64_t n,
                                   WEIGHT *out) {
    for (int64_t k = 0, p = p0; k < n;) {
        const int64_t o = p / inner, i = p % inner;
        const int64_t run = inner - i < n - k ? inner - i : n - k;
        WEIGHT *target = out + o * cells * inner + i;
        for (int64_t cell = 0; cell < cells; ++cell)
            for (int64_t r = 0; r < run; ++r) target[cell * inner + r] = (WEIGHT)block[cell * OTAM_CHUNK + k + r];
        k += run;
        p += run;
    }
}

/* Offset of w[m, l] (column m, row l of the programme) in a (A, B, chunk) block. */
static inline int64_t PASTE(cell_offset, SUFFIX)(int64_t m, int64_t l, int64_t b_size, int transpose) {
    return (transpose ? m * b_size + l : l * b_size + m) * OTAM_CHUNK;
}

/* One direction over one chunk of n pairs. With keep = 1 the whole table is stored as
 * (cols, rows, chunk); with keep = 0 only two columns, alternating. Writes the totals. */
static void PASTE(chunk_forward, SUFFIX)(const WEIGHT *block, int64_t n, int64_t rows, int64_t cols,
                                         int64_t b_size, int transpose, int reference, double *table, int keep,
                                         double *total) {
    const int64_t column_size = rows * OTAM_CHUNK;
    for (int64_t m = 0; m < cols; ++m) {
        double *current = table + (keep ? m : m & 1) * column_size;
        const double *previous = table + (keep ? m - 1 : (m - 1) & 1) * column_size; /* used for m > 0 */
        for (int64_t l = 0; l < rows; ++l) {
            const WEIGHT *restrict wv = block + PASTE(cell_offset, SUFFIX)(m, l, b_size, transpose);
            double *restrict c = current + l * OTAM_CHUNK;
            if (m == 0) {
                if (l == 0) for (int64_t i = 0; i < n; ++i) c[i] = (double)wv[i];
                else if (reference) for (int64_t i = 0; i < n; ++i) c[i] = (double)wv[i] * (2.0 + c[i - OTAM_CHUNK]);
                else for (int64_t i = 0; i < n; ++i) c[i] = 2.0 * (double)wv[i];
            } else {
                const double *restrict left = previous + l * OTAM_CHUNK;
                if (l == 0) {
                    for (int64_t i = 0; i < n; ++i) c[i] = (double)wv[i] * left[i];
                } else {
                    const double *restrict diagonal = left - OTAM_CHUNK; /* row l-1 */
                    for (int64_t i = 0; i < n; ++i) c[i] = (double)wv[i] * (left[i] + diagonal[i]);
                }
            }
        }
    }
    const double *last = table + (keep ? cols - 1 : (cols - 1) & 1) * column_size;
    for (int64_t i = 0; i < n; ++i) { /* right padding column */
        double sum = last[(rows - 1) * OTAM_CHUNK + i];
        for (int64_t l = 0; l + 1 < rows; ++l) sum += 2.0 * last[l * OTAM_CHUNK + i];
        total[i] = sum;
    }
}

int PASTE(otam_forward, SUFFIX)(const WEIGHT *w, int64_t outer, int64_t a_size, int64_t b_size, int64_t inner,
                                int directions, int reference, double *total) {
    const int64_t pairs = outer * inner, cells = a_size * b_size;
    const int64_t longest = a_size > b_size ? a_size : b_size;
    WEIGHT *block = malloc(cells * OTAM_CHUNK * sizeof(WEIGHT));
    double *columns = malloc(2 * longest * OTAM_CHUNK * sizeof(double));
    int ok = block && columns ? 1 : -1;
    for (int64_t p0 = 0; ok == 1 && p0 < pairs; p0 += OTAM_CHUNK) {
        const int64_t n = pairs - p0 < OTAM_CHUNK ? pairs - p0 : OTAM_CHUNK;
        PASTE(gather, SUFFIX)(w, cells, inner, p0, n, block);
        for (int transpose = 0, d = 0; transpose < 2; ++transpose) {
            if (!(directions >> transpose & 1)) continue;
            double *out = total + d++ * pairs + p0;
            PASTE(chunk_forward, SUFFIX)(block, n, transpose ? b_size : a_size, transpose ? a_size : b_size, b_size,
                                         transpose, reference, columns, 0, out);
            for (int64_t i = 0; i < n; ++i) ok &= out[i] >= 1e-280 && out[i] <= 1e280; /* false for NaN */
        }
    }
    free(block);
    free(columns);
    return ok;
}

/* Adds d loss / d log w of one direction over one chunk to grad_block (cell, pair), given
 * scale = d loss / d total per pair: the table is recomputed, then the adjoint
 * (adjoint[C-1, l] = 2 for l < R-1, 1 for the last row; adjoint[m-1, l] = adjoint[m, l] w[m, l]
 * + adjoint[m, l+1] w[m, l+1]; the reference variant's first column also passes adjoint[0, l] w[0, l]
 * up to row l-1), and grad += table * adjoint * scale. */
static void PASTE(chunk_backward, SUFFIX)(const WEIGHT *block, int64_t n, int64_t rows, int64_t cols, int64_t b_size,
                                          int transpose, int reference, const double *s, double *table,
                                          double *adjoint, double *grad_block) {
    double total[OTAM_CHUNK];
    PASTE(chunk_forward, SUFFIX)(block, n, rows, cols, b_size, transpose, reference, table, 1, total);
    for (int64_t l = 0; l < rows; ++l)
        for (int64_t i = 0; i < n; ++i) adjoint[((cols - 1) * rows + l) * OTAM_CHUNK + i] = l + 1 < rows ? 2.0 : 1.0;
    for (int64_t m = cols - 1; m > 0; --m)
        for (int64_t l = 0; l < rows; ++l) {
            const WEIGHT *restrict wv = block + PASTE(cell_offset, SUFFIX)(m, l, b_size, transpose);
            const double *restrict here = adjoint + (m * rows + l) * OTAM_CHUNK;
            double *restrict out = adjoint + ((m - 1) * rows + l) * OTAM_CHUNK;
            if (l + 1 < rows) {
                const WEIGHT *restrict wb = block + PASTE(cell_offset, SUFFIX)(m, l + 1, b_size, transpose);
                const double *restrict below = here + OTAM_CHUNK;
                for (int64_t i = 0; i < n; ++i) out[i] = here[i] * (double)wv[i] + below[i] * (double)wb[i];
            } else {
                for (int64_t i = 0; i < n; ++i) out[i] = here[i] * (double)wv[i];
            }
        }
    if (reference)
        for (int64_t l = rows - 1; l > 0; --l) {
            const WEIGHT *restrict wv = block + PASTE(cell_offset, SUFFIX)(0, l, b_size, transpose);
            double *restrict up = adjoint + (l - 1) * OTAM_CHUNK;
            const double *restrict here = adjoint + l * OTAM_CHUNK;
            for (int64_t i = 0; i < n; ++i) up[i] += here[i] * (double)wv[i];
        }
    for (int64_t m = 0; m < cols; ++m)
        for (int64_t l = 0; l < rows; ++l) {
            double *restrict g = grad_block + PASTE(cell_offset, SUFFIX)(m, l, b_size, transpose);
            const double *restrict t = table + (m * rows + l) * OTAM_CHUNK;
            const double *restrict a = adjoint + (m * rows + l) * OTAM_CHUNK;
            for (int64_t i = 0; i < n; ++i) g[i] += t[i] * a[i] * s[i];
        }
}

int PASTE(otam_backward, SUFFIX)(const WEIGHT *w, int64_t outer, int64_t a_size, int64_t b_size, int64_t inner,
                                 int directions, int reference, const double *scale, WEIGHT *grad) {
    const int64_t pairs = outer * inner, cells = a_size * b_size;
    WEIGHT *block = malloc(cells * OTAM_CHUNK * sizeof(WEIGHT));
    double *table = malloc(cells * OTAM_CHUNK * sizeof(double));
    double *adjoint = malloc(cells * OTAM_CHUNK * sizeof(double));
    double *grad_block = malloc(cells * OTAM_CHUNK * sizeof(double));
    int ok = block && table && adjoint && grad_block;
    for (int64_t p0 = 0; ok && p0 < pairs; p0 += OTAM_CHUNK) {
        const int64_t n = pairs - p0 < OTAM_CHUNK ? pairs - p0 : OTAM_CHUNK;
        PASTE(gather, SUFFIX)(w, cells, inner, p0, n, block);
        memset(grad_block, 0, cells * OTAM_CHUNK * sizeof(double));
        for (int transpose = 0, d = 0; transpose < 2; ++transpose) {
            if (!(directions >> transpose & 1)) continue;
            PASTE(chunk_backward, SUFFIX)(block, n, transpose ? b_size : a_size, transpose ? a_size : b_size, b_size,
                                          transpose, reference, scale + d++ * pairs + p0, table, adjoint, grad_block);
        }
        PASTE(scatter, SUFFIX)(grad_block, cells, inner, p0, n, grad);
    }
    free(block);
    free(table);
    free(adjoint);
    free(grad_block);
    return ok ? 1 : -1;
}
