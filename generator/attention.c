/* A decode step's attention, for every row and head: one query against its bfloat16 keys plus the
 * relative-position table, a softmax, and the weighted sum of its bfloat16 values.
 * attention_kernel.py builds this file with the machine's C compiler (-O3 -march=native) and
 * calls it through ctypes.
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
 * reading to the longest row's end cost a third more. Every sum runs over a row's own positions
 * in one fixed order, so a row's result is the same, bit for bit, whatever else is in the batch.
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

typedef int i32x16 __attribute__((vector_size(64)));

static inline f32x16 select16(i32x16 mask, f32x16 a, f32x16 b) {
    return (f32x16)(((i32x16)a & mask) | ((i32x16)b & ~mask));
}

/* e^x for 16 values x ≤ 0 (a softmax's, after the maximum is taken off): relative error about
 * 1e-7, and exactly 0 below -87.3, where e^x would be a denormal (slow, and nothing a softmax's
 * sum would notice). Cephes' expf: x = n ln2 + r with |r| ≤ ln2/2, e^r by a polynomial, and 2^n
 * written into the exponent bits. */
static inline f32x16 exp16(f32x16 x) {
    const f32x16 zero = {0};
    f32x16 bottom = zero - 87.3365447504f;
    i32x16 underflow = x < bottom;
    x = select16(x > zero, zero, x);
    x = select16(underflow, bottom, x);
    f32x16 shifter = zero + 12582912.0f; /* 1.5 · 2^23: adding it rounds to an integer */
    f32x16 n = (x * 1.44269504088896341f + shifter) - shifter;
    f32x16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    f32x16 p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    f32x16 scale = (f32x16)((u32x16)(__builtin_convertvector(n, i32x16) + 127) << 23);
    return select16(underflow, zero, p * scale);
}

/* One decode step's attention for every row r (= batch * heads + head), over its own n =
 * valid[r / heads] positions (kept within 0 … min(capacity, er_rows); 0 gives zeros): logits q·k_t + q·er[er_rows - n + t] (er: the relative-position
 * table, its last row distance 0), softmax, then the weighted sum of the values into out.
 * scratch holds `capacity` floats. */
void attention_step(const float *q, const u16 *k, const u16 *v, const float *er, float *out, float *scratch,
                    const i64 *valid, i64 heads, i64 rows, i64 row_stride, i64 capacity, i64 er_rows, i64 dim) {
    i64 most = capacity < er_rows ? capacity : er_rows;
    for (i64 r = 0; r < rows; r++) {
        const float *qr = q + r * dim;
        i64 n = positions(valid, r, heads, most);
        float *o = out + r * dim;
        if (n == 0) {
            for (i64 c = 0; c < dim; c++)
                o[c] = 0.0f;
            continue;
        }
        const u16 *kr = k + r * row_stride, *vr = v + r * row_stride;
        const float *rel = er + (er_rows - n) * dim;
        float top = -__builtin_inff();
        for (i64 t = 0; t < n; t++) {
            const u16 *kt = kr + t * dim;
            if (t + AHEAD < n)
                prefetch(kt + AHEAD * dim, dim);
            f32x16 acc = load(qr) * widen(kt) + load(qr) * load(rel + t * dim);
            for (i64 c = 16; c < dim; c += 16)
                acc += load(qr + c) * widen(kt + c) + load(qr + c) * load(rel + t * dim + c);
            float s = sum16(acc);
            scratch[t] = s;
            top = s > top ? s : top;
        }
        f32x16 total = {0};
        for (i64 t0 = 0; t0 < n; t0 += 16) {
            f32x16 s = {0};
            s -= __builtin_inff(); /* past the end: e^-inf = 0 */
            i64 m = n - t0 < 16 ? n - t0 : 16;
            for (i64 i = 0; i < m; i++)
                s[i] = scratch[t0 + i];
            f32x16 e = exp16(s - top);
            total += e;
            for (i64 i = 0; i < m; i++)
                scratch[t0 + i] = e[i];
        }
        float inv = 1.0f / sum16(total);
        for (i64 c0 = 0; c0 < dim; c0 += 64) { /* four accumulators at a time, 64 values */
            i64 width = dim - c0 < 64 ? dim - c0 : 64;
            /* element by element, not `= {{0}, …}`: without AVX-512 the compiler zeroes an
               aggregate that size with a call to memset, which -nostdlib leaves undefined */
            const f32x16 nothing = {0};
            f32x16 acc[4];
            acc[0] = acc[1] = acc[2] = acc[3] = nothing;
            for (i64 t = 0; t < n; t++) {
                const u16 *vt = vr + t * dim + c0;
                if (t + AHEAD < n)
                    prefetch(vt + AHEAD * dim, width);
                f32x16 wt = {0};
                wt += scratch[t] * inv;
                for (i64 c = 0; c < width; c += 16)
                    acc[c / 16] += wt * widen(vt + c);
            }
            for (i64 c = 0; c < width; c += 16)
                __builtin_memcpy(o + c0 + c, &acc[c / 16], sizeof acc[0]);
        }
    }
}
