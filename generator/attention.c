/* A decode step's attention reads, for every row and head, one query against a bfloat16 cache:
 * scores[r, t] = q[r] . k[r, t] and out[r] = sum_t w[r, t] v[r, t]. attention_kernel.py builds
 * this file with the machine's C compiler (-O3 -march=native) and calls it through ctypes.
 *
 * Why by hand: ATen has no kernel for fp32 queries against bfloat16 keys, and the cache does not
 * fit the CPU's caches at a batch of eight, so these two loops are limited by memory. They read
 * each key and value once, keys in the order they lie and values 64 columns at a time (one pass
 * for the 64-wide heads of our models), and prefetch a few positions ahead; GCC's vector
 * extensions keep them portable (AVX-512, AVX2, NEON: whatever -march=native offers).
 *
 * Freestanding on purpose: no headers, no libc, so a bare `gcc` package is enough to build it.
 * Layout: row r = batch * heads + head; row r's position t starts at r * row_stride + t * dim;
 * dim is a multiple of 16. Row r reads only its own positions, 0 … valid[r / heads] - 1: rows of
 * a batch differ in length by hundreds of positions once some have slid their window, and
 * reading to the longest row's end cost a third more. The sums here run over a row's own
 * positions in one fixed order, whatever else is in the batch (the softmax between the two
 * calls is torch's, at the batch's width).
 */

typedef long long i64;
typedef unsigned short u16;
typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef unsigned int u32x16 __attribute__((vector_size(64)));
typedef u16 u16x16 __attribute__((vector_size(32), aligned(2)));

#define AHEAD 16 /* positions to prefetch ahead: 16 was best of 0, 8, 16 on the development CPU */

/* 16 bfloat16 values widened to fp32: a bfloat16 is the top half of the fp32 with its value. */
static inline f32x16 widen(const u16 *p) {
    u32x16 bits = __builtin_convertvector(*(const u16x16 *)p, u32x16) << 16;
    return (f32x16)bits;
}

static inline f32x16 load(const float *p) {
    f32x16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* Halves added pairwise (16 → 8 → 4 lanes), then the last four in order: a fixed order, and
 * plain vector extensions that GCC 9+ and clang accept (no __builtin_shufflevector). */
static inline float sum16(f32x16 a) {
    f32x8 lo, hi;
    __builtin_memcpy(&lo, &a, sizeof lo);
    __builtin_memcpy(&hi, (const char *)&a + sizeof lo, sizeof hi);
    lo += hi;
    f32x4 l4, h4;
    __builtin_memcpy(&l4, &lo, sizeof l4);
    __builtin_memcpy(&h4, (const char *)&lo + sizeof l4, sizeof h4);
    l4 += h4;
    return (l4[0] + l4[2]) + (l4[1] + l4[3]);
}

/* Row r's positions to read: valid[r / heads], kept within 0 … T. */
static inline i64 positions(const i64 *valid, i64 r, i64 heads, i64 T) {
    i64 n = valid[r / heads];
    return n < 0 ? 0 : n > T ? T : n;
}

static inline void prefetch(const u16 *p, i64 dim) {
    for (i64 c = 0; c < dim; c += 32) /* one 64-byte line per 32 values */
        __builtin_prefetch(p + c, 0, 0);
}

/* scores (rows, T) = q (rows, dim) . keys of the row's valid positions; 0 past them (where the
 * caller's bias is -inf) */
void attention_scores(const float *q, const u16 *k, float *scores, const i64 *valid, i64 heads, i64 rows,
                      i64 row_stride, i64 T, i64 dim) {
    for (i64 r = 0; r < rows; r++) {
        const float *qr = q + r * dim;
        const u16 *kr = k + r * row_stride;
        i64 n = positions(valid, r, heads, T);
        for (i64 t = n; t < T; t++)
            scores[r * T + t] = 0.0f;
        for (i64 t = 0; t < n; t++) {
            const u16 *kt = kr + t * dim;
            if (t + AHEAD < n)
                prefetch(kt + AHEAD * dim, dim);
            f32x16 acc = load(qr) * widen(kt);
            for (i64 c = 16; c < dim; c += 16)
                acc += load(qr + c) * widen(kt + c);
            scores[r * T + t] = sum16(acc);
        }
    }
}

/* out (rows, dim) = weights (rows, T) · values of the row's valid positions (the weights past
 * them are 0) */
void attention_mix(const float *w, const u16 *v, float *out, const i64 *valid, i64 heads, i64 rows,
                   i64 row_stride, i64 T, i64 dim) {
    for (i64 r = 0; r < rows; r++) {
        const u16 *vr = v + r * row_stride;
        i64 n = positions(valid, r, heads, T);
        for (i64 c0 = 0; c0 < dim; c0 += 64) { /* four accumulators at a time, 64 values */
            i64 width = dim - c0 < 64 ? dim - c0 : 64;
            f32x16 acc[4] = {{0}, {0}, {0}, {0}};
            for (i64 t = 0; t < n; t++) {
                const u16 *vt = vr + t * dim + c0;
                if (t + AHEAD < n)
                    prefetch(vt + AHEAD * dim, width);
                f32x16 wt = {0};
                wt += w[r * T + t];
                for (i64 c = 0; c < width; c += 16)
                    acc[c / 16] += wt * widen(vt + c);
            }
            for (i64 c = 0; c < width; c += 16)
                __builtin_memcpy(out + r * dim + c0 + c, &acc[c / 16], sizeof acc[0]);
        }
    }
}
