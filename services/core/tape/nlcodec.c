/* netlapse native lane codec ("nl1" chunks): one fused pass from integer lanes to a coded block and back.
 *
 * The design and the exact layout are in docs/performance.md ("The native codec"). In short, for a block of n
 * lanes of 16, 32 or 64 bits:
 *
 *   values chunk (keyframes, dense blocks):  v = zigzag(m); symbol = top byte of v (context: lane i-4's
 *       symbol >> 5); the W-8 low bits raw.
 *   delta chunk: p = m1 - m2 (0 without m2), prediction m1 + ((alpha * p) >> 6) with alpha in 1/64 (0..80)
 *       chosen by the encoder on a sample (chunks without F_A64, from before 2026-12-02, hold it in 16ths: the
 *       decoder multiplies by 4); residual r = m - prediction (wrapping). symbol = (bit length s of |r|,
 *       sign, the bit below the leading one), context = (bit length of |p|, sign of p); the s-2 bits below
 *       those raw.
 *
 * Symbols are Huffman-coded (canonical, length <= 12, one table per context present in the block, LSB-first
 * bit order); raw bits go to a second stream. A block whose coding would not be smaller than its lanes is
 * stored raw (the residual or the values). All arithmetic on lanes wraps, so decoding is exact for any bits.
 * The decoder never reads outside the chunk and reports malformed input as a negative return value.
 *
 * Loaded with ctypes (netlapse.core.tape.native); the Python module init below exists only so setuptools can
 * build this file as an extension module. ctypes releases the GIL around every call.
 */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NL_TAG 0xA3
#define NL_HEAD 8
#define MAXLEN 12
#define TSIZE (1 << MAXLEN)
/* Decoding looks codes up in a small primary table per context (PBITS bits: stays in L1 for the few dozen
 * contexts of a block); codes longer than PBITS (rare symbols) go on to a full TSIZE table. */
#define PBITS 9
#define PSIZE (1 << PBITS)
#define F_VALUES 0
#define F_DELTA 1
#define F_RAW 0x80
#define F_ZERO 0x40 /* a delta chunk whose residual is zero everywhere: nothing stored */
#define ALPHA_MAX 80 /* the predictor weight, in 64ths: 0 .. 1.25 */
#define SAMPLE 1024
#define SAMPLE_RUN 32 /* the predictor's sample: 32 runs of contiguous lanes (cache lines, not 1 Ki misses) */
#define NS 4 /* interleaved bit streams per chunk (blocks of NS_MIN_LANES and more; smaller: 1) */
#define NS_MIN_LANES 16384
#define PF_LANES 512 /* pass 1 prefetches its inputs this many lanes ahead (2 KiB) */
#define F_STREAMS4 0x10
#define F_A64 0x20 /* a delta chunk whose weight (header byte 3) is in 64ths; without it, 16ths (older chunks) */

/* x86-64: each block coder is compiled twice, for x86-64-v3 (AVX2, BMI2, LZCNT: one-cycle bit lengths) and
 * for any x86-64; the loader picks by CPU at run time (GCC ifunc). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NL_CLONES
#endif

enum {
    NL_OK = 0,
    NL_E_HEAD = -1,   /* header does not match the block */
    NL_E_SHORT = -2,  /* chunk shorter than its parts */
    NL_E_TABLE = -3,  /* code table malformed */
    NL_E_CODE = -4,   /* invalid code in the stream */
    NL_E_OVERRUN = -5, /* a stream read past its end */
    NL_E_STATE = -6,  /* a delta chunk without the previous state */
    NL_E_MEM = -7,
    NL_E_TRAIL = -8,  /* bytes left after the streams */
    NL_E_ARG = -9,
};

/* ---- thread-local scratch (no fresh pages per block) ------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    size_t cap;
} scratch_t;

/* Two per thread: tables and symbols (scratch), streams and contexts (scratch2). */
static __thread scratch_t tl_a = {NULL, 0}, tl_b = {NULL, 0};

static uint8_t *grow(scratch_t *s, size_t need) {
    if (need > s->cap) {
        free(s->buf);
        s->cap = need + need / 4 + 4096;
        s->buf = (uint8_t *)malloc(s->cap);
        if (!s->buf) s->cap = 0;
    }
    return s->buf;
}

static uint8_t *scratch(size_t need) { return grow(&tl_a, need); }
static uint8_t *scratch2(size_t need) { return grow(&tl_b, need); }

/* ---- Huffman code lengths --------------------------------------------------------------------------- */

/* Ascending sort of n <= 512 distinct keys: bottom-up merge sort (a context has up to a few hundred symbols;
 * insertion sort was a tenth of a big block's encoding time). */
static void sort_u64(uint64_t *a, int n) {
    uint64_t tmp[512];
    uint64_t *src = a, *dst = tmp;
    for (int i = 0; i + 1 < n; i += 2) /* runs of two */
        if (a[i] > a[i + 1]) {
            uint64_t x = a[i];
            a[i] = a[i + 1];
            a[i + 1] = x;
        }
    for (int w = 2; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) { /* branch-free: the comparison is a coin toss */
                uint64_t x = src[i], y = src[j];
                int t = x <= y;
                dst[k++] = t ? x : y;
                i += t;
                j += 1 - t;
            }
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(uint64_t));
}

/* Code lengths (<= MAXLEN) for counts[0..nsym); symbols with count 0 get length 0. Huffman's lengths from a
 * two-queue merge over the symbols sorted by count; lengths over MAXLEN are clamped and the Kraft excess paid
 * back by lengthening the lightest codes that still have room. */
static void sort_keys(uint64_t *a, int n);

static void huff_lengths(const uint32_t *counts, int nsym, uint8_t *len) {
    uint64_t key[513]; /* count << 9 | symbol, sorted ascending; then a sentinel */
    int nl = 0;
    for (int i = 0; i < nsym; i++) { /* (branch-free: whether a count is 0 is a coin toss) */
        len[i] = 0;
        key[nl] = ((uint64_t)counts[i] << 9) | (uint64_t)i;
        nl += counts[i] != 0;
    }
    if (nl == 0) return;
    if (nl == 1) {
        len[key[0] & 511] = 1;
        return;
    }
    sort_keys(key, nl);
    /* Two queues, leaves (key) and internal nodes (iw), each ascending; a leaf goes first on ties. Sentinels
     * (a weight above any other) at the end of both stand for an empty queue, so the picks are branch-free. */
    const uint64_t big = ~(uint64_t)0 >> 1;
    uint64_t iw[513];
    int parent[1024];
    int qi_head = 0, qi_tail = 0, ql = 0, next = nl;
    key[nl] = big << 9 | 511;
    for (int k = 0; k < nl - 1; k++) {
        uint64_t w = 0;
        iw[qi_tail] = big;
        for (int t = 0; t < 2; t++) {
            uint64_t lw = key[ql] >> 9, nw = iw[qi_head];
            int leaf = lw <= nw;
            w += leaf ? lw : nw;
            parent[leaf ? ql : nl + qi_head] = next;
            ql += leaf;
            qi_head += 1 - leaf;
        }
        iw[qi_tail++] = w;
        next++;
    }
    int depth[1024];
    int root = next - 1, maxd = 0;
    depth[root] = 0;
    for (int x = root - 1; x >= nl; x--) depth[x] = depth[parent[x]] + 1;
    for (int x = 0; x < nl; x++) {
        depth[x] = depth[parent[x]] + 1;
        if (depth[x] > maxd) maxd = depth[x];
    }
    if (maxd > MAXLEN) {
        int64_t excess = -((int64_t)1 << MAXLEN);
        for (int x = 0; x < nl; x++) {
            if (depth[x] > MAXLEN) depth[x] = MAXLEN;
            excess += (int64_t)1 << (MAXLEN - depth[x]);
        }
        while (excess > 0) {
            int x = 0;
            while (depth[x] >= MAXLEN) x++; /* the lightest code with room (exists: nl < 2^MAXLEN) */
            depth[x]++;
            excess -= (int64_t)1 << (MAXLEN - depth[x]);
        }
    }
    for (int x = 0; x < nl; x++) len[key[x] & 511] = (uint8_t)depth[x];
}

static inline uint32_t rev_bits(uint32_t v, int n) { /* the low n bits of v, reversed */
    v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
    v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
    v = ((v >> 4) & 0x0F0F0F0Fu) | ((v & 0x0F0F0F0Fu) << 4);
    v = __builtin_bswap32(v);
    return n ? v >> (32 - n) : 0;
}

/* LSB-first canonical codes from lengths; returns 0, or -1 when the lengths over-subscribe the code space. */
static int canon_codes(const uint8_t *len, int nsym, uint16_t *code) {
    int bl[MAXLEN + 1] = {0}, bl2[MAXLEN + 1] = {0}; /* two counts: fewer increments of one place in a row */
    int i = 0;
    for (; i + 2 <= nsym; i += 2) bl[len[i]]++, bl2[len[i + 1]]++;
    if (i < nsym) bl[len[i]]++;
    for (int b = 1; b <= MAXLEN; b++) bl[b] += bl2[b];
    bl[0] = 0;
    uint32_t next[MAXLEN + 2], c = 0;
    int64_t room = 1;
    for (int b = 1; b <= MAXLEN; b++) {
        c = (c + bl[b - 1]) << 1;
        next[b] = c;
        room = room * 2 - bl[b];
        if (room < 0) return -1;
    }
    for (int i = 0; i < nsym; i++)
        if (len[i]) code[i] = (uint16_t)rev_bits(next[len[i]]++, len[i]);
    return 0;
}

/* ---- bit streams ------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    uint64_t acc;
    int n;
} bw_t;

/* Branch-free: always stores 8 bytes at p (the stream's buffer has 8 bytes of slack), keeps < 8 bits. */
static inline void bw_put(bw_t *w, uint64_t v, int n) { /* n <= 56, v < 2^n */
    w->acc |= v << w->n;
    w->n += n;
    memcpy(w->p, &w->acc, 8);
    w->p += w->n >> 3;
    w->acc >>= (w->n & ~7);
    w->n &= 7;
}

static inline void bw_put_long(bw_t *w, uint64_t v, int n) { /* n <= 64 */
    if (n > 32) {
        bw_put(w, v & 0xFFFFFFFFu, 32);
        bw_put(w, v >> 32, n - 32);
    } else {
        bw_put(w, v, n);
    }
}

static inline void bw_flush(bw_t *w) {
    if (w->n > 0) *w->p++ = (uint8_t)w->acc;
    w->acc = 0;
    w->n = 0;
}

typedef struct {
    const uint8_t *p, *end;
    uint64_t buf;
    int n;
    int64_t over; /* bits read past the end */
} br_t;

static inline void br_refill(br_t *r) {
    if (r->end - r->p >= 8) {
        uint64_t x;
        memcpy(&x, r->p, 8);
        r->buf |= x << r->n;
        r->p += (63 - r->n) >> 3;
        r->n |= 56;
    } else {
        while (r->n <= 56) {
            uint64_t b = 0;
            if (r->p < r->end)
                b = *r->p++;
            else
                r->over += 8;
            r->buf |= b << r->n;
            r->n += 8;
        }
    }
}

static inline uint64_t br_get(br_t *r, int n) { /* n <= 56 after a refill */
    uint64_t v = n ? (r->buf & ((n == 64) ? ~0ull : ((1ull << n) - 1))) : 0;
    r->buf = n == 64 ? 0 : r->buf >> n;
    r->n -= n;
    return v;
}

static inline uint64_t br_get_long(br_t *r, int n) { /* n <= 64 */
    if (n > 48) {
        br_refill(r);
        uint64_t lo = br_get(r, 32);
        br_refill(r);
        return lo | (br_get(r, n - 32) << 32);
    }
    if (r->n < n) br_refill(r);
    return br_get(r, n);
}

/* ---- shared helpers ------------------------------------------------------------------------------------ */

static inline int bitlen64(uint64_t x) { return 64 - __builtin_clzll(x | 1) - (x == 0); } /* branch-free */

static inline void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint16_t get_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Table section: u16 nsym, u16 nctx, presence bitmap, then per present context u16 lo, u16 hi and the
 * lengths of symbols lo..hi-1 as nibbles. A context is present when lo < hi; [clo[c], chi[c]) are the symbols
 * of context c that have a code (the encoder knows them from its counts). Returns bytes written. */
static size_t write_tables(uint8_t *o, const uint8_t *lens, int nsym, int nctx, const int16_t *clo,
                           const int16_t *chi) {
    uint8_t *p = o;
    put_u16(p, (uint16_t)nsym);
    put_u16(p + 2, (uint16_t)nctx);
    p += 4;
    int nb = (nctx + 7) / 8;
    memset(p, 0, nb);
    for (int c = 0; c < nctx; c++)
        if (clo[c] < chi[c]) p[c >> 3] |= (uint8_t)(1 << (c & 7));
    p += nb;
    for (int c = 0; c < nctx; c++) {
        int lo = clo[c], hi = chi[c];
        if (lo >= hi) continue;
        const uint8_t *l = lens + (size_t)c * nsym;
        put_u16(p, (uint16_t)lo);
        put_u16(p + 2, (uint16_t)hi);
        p += 4;
        for (int s = lo; s < hi; s += 2) *p++ = (uint8_t)(l[s] | ((s + 1 < hi ? l[s + 1] : 0) << 4));
    }
    return (size_t)(p - o);
}

static size_t tables_size(int nctx, const int16_t *clo, const int16_t *chi) {
    size_t sz = 4 + (nctx + 7) / 8;
    for (int c = 0; c < nctx; c++)
        if (clo[c] < chi[c]) sz += 4 + (size_t)(chi[c] - clo[c] + 1) / 2;
    return sz;
}

/* Parses the table section into decode tables: per present context (ctab[c] = its index, or -1) a PSIZE
 * primary table, and a TSIZE full table when the context has codes longer than PBITS (haslong). An entry is
 * 0 where no code is (len 0). Returns bytes consumed or a negative error. */
typedef struct {
    uint16_t *prim, *full; /* entries fit 14 bits: half the cache a u32 table takes */
    uint8_t haslong[260];
} dtab_t;

static int64_t read_tables(const uint8_t *p, const uint8_t *end, int nsym, int nctx, int16_t *ctab, dtab_t *dt,
                           int values) {
    const uint8_t *s = p;
    if (end - p < 4) return NL_E_SHORT;
    if (get_u16(p) != nsym || get_u16(p + 2) != nctx) return NL_E_TABLE;
    p += 4;
    int nb = (nctx + 7) / 8;
    if (end - p < nb) return NL_E_SHORT;
    int npresent = 0;
    for (int c = 0; c < nctx; c++) {
        ctab[c] = -1;
        if (p[c >> 3] >> (c & 7) & 1) ctab[c] = (int16_t)npresent++;
    }
    p += nb;
    dt->prim = dt->full = NULL;
    if (npresent) {
        uint8_t *mem = scratch((size_t)npresent * (PSIZE + TSIZE) * sizeof(uint16_t));
        if (!mem) return NL_E_MEM;
        dt->prim = (uint16_t *)mem;
        dt->full = dt->prim + (size_t)npresent * PSIZE;
        memset(dt->prim, 0, (size_t)npresent * PSIZE * sizeof(uint16_t));
    }
    uint8_t len[512];
    uint16_t code[512];
    for (int c = 0; c < nctx; c++) {
        if (ctab[c] < 0) continue;
        if (end - p < 4) return NL_E_SHORT;
        int lo = get_u16(p), hi = get_u16(p + 2);
        p += 4;
        if (lo > hi || hi > nsym) return NL_E_TABLE;
        int nbytes = (hi - lo + 1) / 2;
        if (end - p < nbytes) return NL_E_SHORT;
        memset(len, 0, (size_t)nsym);
        int maxl = 0;
        for (int k = lo; k < hi; k++) {
            uint8_t b = p[(k - lo) >> 1];
            len[k] = (k - lo) & 1 ? b >> 4 : b & 15;
            if (len[k] > MAXLEN) return NL_E_TABLE;
            if (len[k] > maxl) maxl = len[k];
        }
        p += nbytes;
        if (canon_codes(len, nsym, code) < 0) return NL_E_TABLE;
        uint16_t *tp = dt->prim + (size_t)ctab[c] * PSIZE;
        uint16_t *tf = dt->full + (size_t)ctab[c] * TSIZE;
        int haslong = maxl > PBITS;
        dt->haslong[ctab[c]] = (uint8_t)haslong;
        if (haslong) memset(tf, 0, TSIZE * sizeof(uint16_t));
        for (int k = lo; k < hi; k++) {
            int l = len[k];
            if (!l) continue;
            /* values: the symbol; delta: what the symbol means (raw bit count, the two top bits, sign) */
            uint32_t e;
            if (values) {
                e = (uint32_t)((k << 4) | l);
            } else {
                int sl = k >> 2, neg = (k >> 1) & 1, sb = k & 1;
                uint32_t top = sl >= 2 ? (uint32_t)(2 | sb) : (uint32_t)sl;
                uint32_t nr = sl >= 2 ? (uint32_t)(sl - 2) : 0;
                if ((sl < 1 && (neg || sb)) || (sl < 2 && sb)) continue; /* never written: stays invalid */
                e = (uint32_t)l | (nr << 4) | (top << 11) | ((uint32_t)neg << 13);
            }
            if (l <= PBITS)
                for (uint32_t x = code[k]; x < PSIZE; x += 1u << l) tp[x] = (uint16_t)e;
            if (haslong)
                for (uint32_t x = code[k]; x < TSIZE; x += 1u << l) tf[x] = (uint16_t)e;
        }
    }
    return p - s;
}

/* The entry for the next code of context index ci, or 0 when the stream holds no valid code there. */
static inline uint32_t lookup(const dtab_t *dt, int ci, uint64_t buf) {
    uint32_t e = dt->prim[(size_t)ci * PSIZE + (buf & (PSIZE - 1))];
    if (__builtin_expect((e & 15) == 0, 0))
        e = dt->haslong[ci] ? dt->full[(size_t)ci * TSIZE + (buf & (TSIZE - 1))] : 0;
    return e;
}

/* ---- the delta symbolization of 32-bit lanes, 8 at a time (AVX2) ---------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NL_HAVE_AVX2_PATH 1

/* Bit length of 8 unsigned lanes (0..32), exactly: y = x & ~(x >> 1) keeps the leading one and has no two
 * adjacent ones, so converting y >> 1 to float cannot round up to the next power of two. */
__attribute__((target("avx2"))) static inline __m256i bitlen8(__m256i x) {
    __m256i y = _mm256_andnot_si256(_mm256_srli_epi32(x, 1), x);
    __m256i t = _mm256_srli_epi32(y, 1);
    __m256i f = _mm256_castps_si256(_mm256_cvtepi32_ps(t));
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(f, 23), _mm256_set1_epi32(125));
    return _mm256_blendv_epi8(e, x, _mm256_cmpeq_epi32(t, _mm256_setzero_si256()));
}

/* alpha_cost for 32-bit lanes, 8 at a time: adds the bit lengths of lanes [0, ns & ~7) to *cost, returns
 * how many it did (the scalar loop does the rest; the same exact integers). */
#define NL_ALPHA_COST32(NAME, TARGET, BITLEN)                                                                  \
    __attribute__((target(TARGET))) static int NAME(const uint32_t *d, const uint32_t *p, int ns, int a,       \
                                                    int64_t *cost) {                                           \
        const __m256i va = _mm256_set1_epi32(a);                                                               \
        __m256i acc = _mm256_setzero_si256();                                                                  \
        int k = 0;                                                                                             \
        for (; k + 8 <= ns; k += 8) {                                                                          \
            __m256i vp = _mm256_loadu_si256((const __m256i *)(p + k));                                         \
            __m256i pe = _mm256_srli_epi64(_mm256_mul_epi32(vp, va), 6);                                       \
            __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(vp, 32), va);                                      \
            po = _mm256_slli_epi64(_mm256_srli_epi64(po, 6), 32);                                              \
            __m256i r = _mm256_blend_epi32(pe, po, 0xAA);                                                      \
            r = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(d + k)), r);                             \
            __m256i nm = _mm256_srai_epi32(r, 31);                                                             \
            acc = _mm256_add_epi32(acc, BITLEN(_mm256_sub_epi32(_mm256_xor_si256(r, nm), nm)));                \
        }                                                                                                      \
        uint32_t b[8];                                                                                         \
        _mm256_storeu_si256((__m256i *)b, acc);                                                                \
        for (int j = 0; j < 8; j++) *cost += b[j];                                                             \
        return k;                                                                                              \
    }

NL_ALPHA_COST32(alpha_cost32_avx2, "avx2", bitlen8)

/* The monotone map of 8 float bit lanes (nl_mono). */
__attribute__((target("avx2"))) static inline __m256i mono8(__m256i x) {
    return _mm256_xor_si256(x, _mm256_and_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(0x7FFFFFFF)));
}

/* Lanes [0, n & ~7) of a 32-bit delta block: raw parts, keys (context * 132 + symbol); adds the raw bit count
 * and ORs the magnitudes. The same arithmetic as the scalar loop, lane for lane. With mw, src holds float bits
 * and their monotone lanes (the block's m) are also stored into mw; else src is m.
 * The three input streams are prefetched PF_LANES ahead, and mw (16-byte aligned: numpy's large arrays) is
 * written with non-temporal stores: nothing reads it before the next snapshot, and its lines need not evict
 * the keys and raw parts pass 2 reads next. */
#define NL_PASS1_DELTA32(NAME, TARGET, BITLEN)                                                                 \
    __attribute__((target(TARGET))) static int64_t NAME(const uint32_t *src, uint32_t *mw, const uint32_t *m1, \
                                                      const uint32_t *m2, int64_t n, int alpha, uint32_t *rawv, \
                                                      uint16_t *key, uint64_t *rawbits, uint32_t *anynz) {     \
        const __m256i va = _mm256_set1_epi32(alpha), zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1); \
        const __m256i two = _mm256_set1_epi32(2);                                                              \
        __m256i nzacc = zero, bits = zero;                                                                     \
        const int nt = ((uintptr_t)mw & 15) == 0;                                                              \
        int64_t i = 0;                                                                                         \
        for (; i + 8 <= n; i += 8) {                                                                           \
            __m256i vm = _mm256_loadu_si256((const __m256i *)(src + i));                                       \
            if (mw) {                                                                                          \
                vm = mono8(vm);                                                                                \
                if (nt) {                                                                                      \
                    _mm_stream_si128((__m128i *)(mw + i), _mm256_castsi256_si128(vm));                         \
                    _mm_stream_si128((__m128i *)(mw + i + 4), _mm256_extracti128_si256(vm, 1));                \
                } else {                                                                                       \
                    _mm256_storeu_si256((__m256i *)(mw + i), vm);                                              \
                }                                                                                              \
            }                                                                                                  \
            if ((i & 15) == 0) { /* one line of each input, PF_LANES ahead (never faults) */                  \
                _mm_prefetch((const char *)(src + i + PF_LANES), _MM_HINT_T0);                                 \
                _mm_prefetch((const char *)(m1 + i + PF_LANES), _MM_HINT_T0);                                  \
                if (m2) _mm_prefetch((const char *)(m2 + i + PF_LANES), _MM_HINT_T0);                          \
            }                                                                                                  \
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(m1 + i));                                        \
            __m256i p = m2 ? _mm256_sub_epi32(v1, _mm256_loadu_si256((const __m256i *)(m2 + i))) : zero;       \
            /* low 32 bits of (alpha * p) >> 6 with a 64-bit product (what the scalar code casts to int32) */  \
            __m256i pe = _mm256_srli_epi64(_mm256_mul_epi32(p, va), 6);                                        \
            __m256i po = _mm256_slli_epi64(_mm256_srli_epi64(_mm256_mul_epi32(_mm256_srli_epi64(p, 32), va), 6), 32); \
            __m256i q = _mm256_blend_epi32(pe, po, 0xAA);                                                      \
            __m256i r = _mm256_sub_epi32(vm, _mm256_add_epi32(v1, q));                                         \
            __m256i nmask = _mm256_srai_epi32(r, 31);                                                          \
            __m256i mag = _mm256_sub_epi32(_mm256_xor_si256(r, nmask), nmask);                                 \
            __m256i sl = BITLEN(mag);                                                                          \
            __m256i sh = _mm256_max_epi32(_mm256_sub_epi32(sl, two), zero);                                    \
            __m256i ge2 = _mm256_cmpgt_epi32(sl, one);                                                         \
            __m256i sb = _mm256_and_si256(_mm256_and_si256(_mm256_srlv_epi32(mag, sh), one), ge2);             \
            __m256i pmask = _mm256_srai_epi32(p, 31);                                                          \
            __m256i pmag = _mm256_sub_epi32(_mm256_xor_si256(p, pmask), pmask);                                \
            __m256i ctx = _mm256_add_epi32(_mm256_slli_epi32(BITLEN(pmag), 1), _mm256_and_si256(pmask, one));  \
            __m256i sym = _mm256_add_epi32(_mm256_slli_epi32(sl, 2), _mm256_and_si256(nmask, two));            \
            sym = _mm256_add_epi32(sym, sb);                                                                   \
            __m256i k = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(ctx, 7), _mm256_slli_epi32(ctx, 2)), sym); \
            _mm256_storeu_si256((__m256i *)(rawv + i), mag);                                                   \
            __m256i k16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(k, k), 0x08);                           \
            _mm_storeu_si128((__m128i *)(key + i), _mm256_castsi256_si128(k16));                               \
            nzacc = _mm256_or_si256(nzacc, mag);                                                               \
            bits = _mm256_add_epi32(bits, sh);                                                                 \
            if ((i & 0xFFFF8) == 0xFFFF8) { /* flush the 32-bit bit counters before they could overflow */     \
                uint32_t b[8];                                                                                 \
                _mm256_storeu_si256((__m256i *)b, bits);                                                       \
                for (int j = 0; j < 8; j++) *rawbits += b[j];                                                  \
                bits = zero;                                                                                   \
            }                                                                                                  \
        }                                                                                                      \
        if (nt) _mm_sfence();                                                                                  \
        uint32_t b[8], z[8];                                                                                   \
        _mm256_storeu_si256((__m256i *)b, bits);                                                               \
        _mm256_storeu_si256((__m256i *)z, nzacc);                                                              \
        for (int j = 0; j < 8; j++) {                                                                          \
            *rawbits += b[j];                                                                                  \
            *anynz |= z[j];                                                                                    \
        }                                                                                                      \
        return i;                                                                                              \
    }

NL_PASS1_DELTA32(pass1_delta32_avx2, "avx2", bitlen8)

/* With AVX-512 (VL, CD) on 256-bit vectors: bit lengths by counting leading zeros (one instruction, not six);
 * pass 1 itself runs on 512-bit vectors then (pass1_delta32_z below). */
__attribute__((target("avx2,avx512f,avx512vl,avx512cd"))) static inline __m256i bitlen8_lz(__m256i x) {
    return _mm256_sub_epi32(_mm256_set1_epi32(32), _mm256_lzcnt_epi32(x));
}
NL_ALPHA_COST32(alpha_cost32_avx512, "avx2,avx512f,avx512vl,avx512cd", bitlen8_lz)

/* The same pass on 512-bit vectors, 16 lanes at a time (AVX-512 F, CD: on Zen 5 a full-width vector step). The
 * monotone lanes go to mw with non-temporal stores (read again only at the next snapshot: they need not evict
 * this block's symbols from the cache); a masked first step brings mw + i to a 64-byte boundary for them. */
#define PASS1Z_STEP(MASK, LOAD, NT)                                                                            \
    do {                                                                                                       \
        __m512i vm = LOAD(MASK, src + i);                                                                      \
        if (mw) {                                                                                              \
            vm = _mm512_xor_si512(vm, _mm512_and_si512(_mm512_srai_epi32(vm, 31), c7f));                       \
            if (NT)                                                                                            \
                _mm512_stream_si512((void *)(mw + i), vm);                                                     \
            else                                                                                               \
                _mm512_mask_storeu_epi32((void *)(mw + i), MASK, vm);                                          \
        }                                                                                                      \
        __m512i v1 = LOAD(MASK, m1 + i);                                                                       \
        __m512i p = m2 ? _mm512_sub_epi32(v1, LOAD(MASK, m2 + i)) : zero;                                      \
        __m512i pe = _mm512_srli_epi64(_mm512_mul_epi32(p, va), 6);                                            \
        __m512i po = _mm512_slli_epi64(_mm512_srli_epi64(_mm512_mul_epi32(_mm512_srli_epi64(p, 32), va), 6), 32); \
        __m512i q = _mm512_mask_blend_epi32((__mmask16)0xAAAA, pe, po);                                        \
        __m512i r = _mm512_sub_epi32(vm, _mm512_add_epi32(v1, q));                                             \
        __m512i mag = _mm512_abs_epi32(r); /* (wraps like (r ^ s) - s: |INT_MIN| stays 2^31) */                \
        __m512i sl = _mm512_sub_epi32(c32, _mm512_lzcnt_epi32(mag));                                           \
        __m512i sh = _mm512_max_epi32(_mm512_sub_epi32(sl, two), zero);                                        \
        __mmask16 ge2 = _mm512_cmpgt_epi32_mask(sl, one);                                                      \
        __m512i sb = _mm512_maskz_and_epi32(ge2, _mm512_srlv_epi32(mag, sh), one);                             \
        __m512i pmag = _mm512_abs_epi32(p);                                                                    \
        __m512i ctx = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(c32, _mm512_lzcnt_epi32(pmag)), 1),  \
                                       _mm512_srli_epi32(p, 31));                                              \
        __m512i sym = _mm512_add_epi32(_mm512_slli_epi32(sl, 2), _mm512_and_si512(_mm512_srai_epi32(r, 31), two)); \
        __m512i k = _mm512_add_epi32(_mm512_mullo_epi32(ctx, c132), _mm512_add_epi32(sym, sb));                \
        _mm512_mask_storeu_epi32((void *)(rawv + i), MASK, mag);                                               \
        _mm512_mask_cvtepi32_storeu_epi16((void *)(key + i), MASK, k);                                         \
        nzacc = _mm512_or_si512(nzacc, mag);                                                                   \
        bits = _mm512_add_epi32(bits, sh);                                                                     \
    } while (0)
#define PASS1Z_FULL(MASK, P) _mm512_loadu_si512((const void *)(P))
#define PASS1Z_PART(MASK, P) _mm512_maskz_loadu_epi32(MASK, (const void *)(P))
__attribute__((target("avx2,avx512f,avx512vl,avx512cd,avx512bw"))) static int64_t pass1_delta32_z(
    const uint32_t *src, uint32_t *mw, const uint32_t *m1, const uint32_t *m2, int64_t n, int alpha, uint32_t *rawv,
    uint16_t *key, uint64_t *rawbits, uint32_t *anynz) {
    const __m512i va = _mm512_set1_epi32(alpha), zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
    const __m512i two = _mm512_set1_epi32(2), c32 = _mm512_set1_epi32(32), c7f = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512i c132 = _mm512_set1_epi32(132);
    __m512i nzacc = zero, bits = zero;
    int64_t i = 0;
    int nt = mw && ((uintptr_t)mw & 3) == 0;
    int64_t head = nt ? (int64_t)((-(uintptr_t)mw & 63) >> 2) : 0; /* lanes before mw's first 64-byte line */
    if (head + 16 > n) nt = 0, head = 0;
    if (head) { /* masked-off lanes load 0 and add nothing */
        __mmask16 hm = (__mmask16)((1u << head) - 1);
        PASS1Z_STEP(hm, PASS1Z_PART, 0);
        i = head;
    }
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char *)(src + i + PF_LANES), _MM_HINT_T0);
        _mm_prefetch((const char *)(m1 + i + PF_LANES), _MM_HINT_T0);
        if (m2) _mm_prefetch((const char *)(m2 + i + PF_LANES), _MM_HINT_T0);
        if (nt)
            PASS1Z_STEP((__mmask16)0xFFFF, PASS1Z_FULL, 1);
        else
            PASS1Z_STEP((__mmask16)0xFFFF, PASS1Z_FULL, 0);
        if ((i & 0xFFFF0) == 0xFFFF0) { /* flush the 32-bit bit counters before they could overflow */
            *rawbits += (uint32_t)_mm512_reduce_add_epi32(bits);
            bits = zero;
        }
    }
    if (nt) _mm_sfence();
    *rawbits += (uint32_t)_mm512_reduce_add_epi32(bits);
    *anynz |= (uint32_t)_mm512_reduce_or_epi32(nzacc);
    return i;
}

static int have_pack32(void) { /* pack32_avx2's bit writer shifts with BMI2 */
#ifdef NL_FORCE_SCALAR
    return 0;
#else
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
    return v;
#endif
}

static int have_avx512(void) { /* the AVX-512 subset the pass above uses */
#ifdef NL_FORCE_SCALAR
    return 0;
#else
    static int v = -1;
    if (v < 0)
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512cd");
    return v;
#endif
}

/* Lanes [0, n & ~7) of a 32-bit values block: raw parts (the zigzag values) and keys (context * 256 + symbol,
 * the context being lane i-4's symbol >> 5, from the chains cv[4], which it updates). mw as above. */
__attribute__((target("avx2"))) static int64_t pass1_values32_avx2(const uint32_t *src, uint32_t *mw, int64_t n,
                                                                    uint32_t *rawv, uint16_t *key, int *cv) {
    __m256i prev = _mm256_setr_epi32(0, 0, 0, 0, cv[0], cv[1], cv[2], cv[3]); /* lanes 4-7: the chains */
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i vm = _mm256_loadu_si256((const __m256i *)(src + i));
        if (mw) {
            vm = mono8(vm);
            _mm256_storeu_si256((__m256i *)(mw + i), vm);
        }
        __m256i v = _mm256_xor_si256(_mm256_slli_epi32(vm, 1), _mm256_srai_epi32(vm, 31));
        __m256i y = _mm256_srli_epi32(v, 24), y5 = _mm256_srli_epi32(v, 29);
        __m256i ctx = _mm256_permute2x128_si256(prev, y5, 0x21); /* lanes 0-3: previous 4-7; 4-7: these 0-3 */
        __m256i k = _mm256_add_epi32(_mm256_slli_epi32(ctx, 8), y);
        _mm256_storeu_si256((__m256i *)(rawv + i), v);
        __m256i k16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(k, k), 0x08);
        _mm_storeu_si128((__m128i *)(key + i), _mm256_castsi256_si128(k16));
        prev = y5;
    }
    uint32_t b[8];
    _mm256_storeu_si256((__m256i *)b, prev);
    for (int j = 0; j < 4; j++) cv[j] = (int)b[4 + j];
    return i;
}

/* The bit-writing loop of a 32-bit block, [0, n & ~7). Per tile of PK_TILE elements their codes are looked
 * up (enc[key], into te[]); then per 8 elements AVX2 joins code and raw bits into one value and length per
 * element (values blocks: <= 36 bits) or, for delta blocks, per pair of elements i, i+4 of a stream (both
 * written at once when they fit in 56 bits, else one by one). With four streams (element i in stream i % 4)
 * their states (position, pending bits, bit count) sit side by side in vectors: one vector step writes a
 * value into each stream. The same bits, in the same order, as NL_PUT / NL_PUT2.
 * starts (streams written in place in the chunk, blocks of >= 65536 lanes): after the first tile, each stream
 * has >= 256 bits and the one before it has far more than 64 to go, so the first 8 bytes of streams 1-3 are
 * final and not yet overwritten by the previous stream's trailing writes: they are saved into first[]. */
#define PK_TILE 1024
/* bw_put on a stream held in three locals (pointer, bits, bit count) */
#define PK_PUT(P, A, K, V, L)                                                                                  \
    do {                                                                                                       \
        A |= (uint64_t)(V) << K;                                                                               \
        K += (L);                                                                                              \
        memcpy(P, &A, 8);                                                                                      \
        P += K >> 3;                                                                                           \
        A >>= K & 56;                                                                                          \
        K &= 7;                                                                                                \
    } while (0)
/* bw_put of the four values V (< 2^57) of lengths L (u64 lanes) into the four streams (vp, va, vk) */
#define PK_VPUT(V, L)                                                                                          \
    do {                                                                                                       \
        va = _mm256_or_si256(va, _mm256_sllv_epi64(V, vk));                                                    \
        vk = _mm256_add_epi64(vk, L);                                                                          \
        __m128i alo_ = _mm256_castsi256_si128(va), ahi_ = _mm256_extracti128_si256(va, 1);                     \
        __m128i plo_ = _mm256_castsi256_si128(vp), phi_ = _mm256_extracti128_si256(vp, 1);                     \
        uint64_t x0_ = (uint64_t)_mm_cvtsi128_si64(alo_), x1_ = (uint64_t)_mm_extract_epi64(alo_, 1);          \
        uint64_t x2_ = (uint64_t)_mm_cvtsi128_si64(ahi_), x3_ = (uint64_t)_mm_extract_epi64(ahi_, 1);          \
        memcpy((uint8_t *)(uintptr_t)_mm_cvtsi128_si64(plo_), &x0_, 8);                                        \
        memcpy((uint8_t *)(uintptr_t)_mm_extract_epi64(plo_, 1), &x1_, 8);                                     \
        memcpy((uint8_t *)(uintptr_t)_mm_cvtsi128_si64(phi_), &x2_, 8);                                        \
        memcpy((uint8_t *)(uintptr_t)_mm_extract_epi64(phi_, 1), &x3_, 8);                                     \
        vp = _mm256_add_epi64(vp, _mm256_srli_epi64(vk, 3));                                                   \
        va = _mm256_srlv_epi64(va, _mm256_and_si256(vk, c56));                                                 \
        vk = _mm256_and_si256(vk, c7);                                                                         \
    } while (0)
__attribute__((target("avx2,bmi,bmi2"))) static int64_t pack32_avx2(const uint32_t *enc, const uint16_t *key,
                                                                    const uint32_t *rawv, int64_t n, int pairs,
                                                                    int ns, bw_t *bw, uint8_t *const *starts,
                                                                    uint64_t *first) {
    uint32_t te[PK_TILE];
    uint64_t sq[NS] __attribute__((aligned(32))), sa[NS] __attribute__((aligned(32)));
    uint64_t sk[NS] __attribute__((aligned(32))), tv[8] __attribute__((aligned(32)));
    uint32_t tl[8] __attribute__((aligned(32)));
    const __m256i c56 = _mm256_set1_epi64x(56), c7 = _mm256_set1_epi64x(7);
    const __m256i one = _mm256_set1_epi32(1), m12 = _mm256_set1_epi32(0xFFF), m4 = _mm256_set1_epi32(15);
    const __m128i max56 = _mm_set1_epi32(56);
    for (int j = 0; j < NS; j++) sq[j] = (uint64_t)(uintptr_t)bw[j].p, sa[j] = bw[j].acc, sk[j] = (uint64_t)bw[j].n;
    __m256i vp = _mm256_load_si256((const __m256i *)sq), va = _mm256_load_si256((const __m256i *)sa);
    __m256i vk = _mm256_load_si256((const __m256i *)sk);
    uint8_t *p0 = bw[0].p; /* ns == 1: one stream, element by element */
    uint64_t a0 = bw[0].acc, k0 = (uint64_t)bw[0].n;
    int64_t i = 0, n8 = n & ~(int64_t)7;
    while (i < n8) {
        int t = n8 - i < PK_TILE ? (int)(n8 - i) : PK_TILE; /* elements in this tile, a multiple of 8 */
        for (int k = 0; k < t; k++) te[k] = enc[key[i + k]]; /* (vpgatherdd was slower on Zen 4) */
        for (int k = 0; k < t; k += 8) {
            __m256i e = _mm256_loadu_si256((const __m256i *)(te + k));
            __m256i l = _mm256_and_si256(_mm256_srli_epi32(e, 12), m4), nr = _mm256_srli_epi32(e, 16);
            __m256i code = _mm256_and_si256(e, m12);
            __m256i rv = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(rawv + i + k)),
                                          _mm256_sub_epi32(_mm256_sllv_epi32(one, nr), one));
            __m256i len = _mm256_add_epi32(l, nr);
            __m128i l0 = _mm256_castsi256_si128(l), l1 = _mm256_extracti128_si256(l, 1);
            __m256i v0 = _mm256_or_si256(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(code)),
                                         _mm256_sllv_epi64(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(rv)),
                                                           _mm256_cvtepu32_epi64(l0)));
            __m256i v1 = _mm256_or_si256(_mm256_cvtepu32_epi64(_mm256_extracti128_si256(code, 1)),
                                         _mm256_sllv_epi64(_mm256_cvtepu32_epi64(_mm256_extracti128_si256(rv, 1)),
                                                           _mm256_cvtepu32_epi64(l1)));
            __m128i len0 = _mm256_castsi256_si128(len), len1 = _mm256_extracti128_si256(len, 1);
            if (ns == 1) {
                _mm256_store_si256((__m256i *)tv, v0);
                _mm256_store_si256((__m256i *)(tv + 4), v1);
                _mm256_store_si256((__m256i *)tl, len);
                for (int q = 0; q < 8; q++) PK_PUT(p0, a0, k0, tv[q], tl[q]);
            } else if (!pairs) {
                PK_VPUT(v0, _mm256_cvtepu32_epi64(len0));
                PK_VPUT(v1, _mm256_cvtepu32_epi64(len1));
            } else { /* element i + 4 after element i: the second value shifted by the first's length */
                __m128i lp = _mm_add_epi32(len0, len1);
                __m256i v = _mm256_or_si256(v0, _mm256_sllv_epi64(v1, _mm256_cvtepu32_epi64(len0)));
                if (__builtin_expect(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(lp, max56))) == 0, 1)) {
                    PK_VPUT(v, _mm256_cvtepu32_epi64(lp));
                    continue;
                }
                /* a pair over 56 bits: this group the scalar way, that pair's elements one by one */
                _mm256_store_si256((__m256i *)sq, vp);
                _mm256_store_si256((__m256i *)sa, va);
                _mm256_store_si256((__m256i *)sk, vk);
                _mm256_store_si256((__m256i *)tv, v);
                _mm_store_si128((__m128i *)tl, lp);
                for (int j = 0; j < NS; j++) {
                    uint8_t *pj = (uint8_t *)(uintptr_t)sq[j];
                    uint64_t aj = sa[j], kj = sk[j];
                    if (tl[j] <= 56) {
                        PK_PUT(pj, aj, kj, tv[j], tl[j]);
                    } else {
                        for (int h = 0; h < 2; h++) {
                            size_t ii = (size_t)(i + k + j + 4 * h);
                            uint32_t x = enc[key[ii]];
                            uint64_t lx = (x >> 12) & 15, nx = x >> 16;
                            PK_PUT(pj, aj, kj, (x & 0xFFF) | ((uint64_t)(rawv[ii] & ((1u << nx) - 1)) << lx), lx + nx);
                        }
                    }
                    sq[j] = (uint64_t)(uintptr_t)pj, sa[j] = aj, sk[j] = kj;
                }
                vp = _mm256_load_si256((const __m256i *)sq);
                va = _mm256_load_si256((const __m256i *)sa);
                vk = _mm256_load_si256((const __m256i *)sk);
            }
        }
        if (starts && i == 0) /* (see above) */
            for (int j = 1; j < NS; j++) memcpy(&first[j], starts[j], 8);
        i += t;
    }
    if (ns == 1) {
        bw[0] = (bw_t){p0, a0, (int)k0};
    } else {
        _mm256_store_si256((__m256i *)sq, vp);
        _mm256_store_si256((__m256i *)sa, va);
        _mm256_store_si256((__m256i *)sk, vk);
        for (int j = 0; j < NS; j++) bw[j] = (bw_t){(uint8_t *)(uintptr_t)sq[j], sa[j], (int)sk[j]};
    }
    return i;
}
#undef PK_VPUT

/* Decoding a 32-bit delta block, the part that does not depend on the bit streams, 8 lanes at a time: each
 * lane's context into ctx[] and its prediction into out[] (the stream loop then adds the residual). */
__attribute__((target("avx2"))) static void prepass_delta32_avx2(const uint32_t *m1, const uint32_t *m2, int64_t n,
                                                                  int alpha, uint8_t *ctx, uint32_t *out) {
    const __m256i va = _mm256_set1_epi32(alpha), zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(m1 + i));
        __m256i p = m2 ? _mm256_sub_epi32(v1, _mm256_loadu_si256((const __m256i *)(m2 + i))) : zero;
        __m256i pe = _mm256_srli_epi64(_mm256_mul_epi32(p, va), 6);
        __m256i po = _mm256_slli_epi64(_mm256_srli_epi64(_mm256_mul_epi32(_mm256_srli_epi64(p, 32), va), 6), 32);
        __m256i q = _mm256_blend_epi32(pe, po, 0xAA);
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_add_epi32(v1, q));
        __m256i pmask = _mm256_srai_epi32(p, 31);
        __m256i pmag = _mm256_sub_epi32(_mm256_xor_si256(p, pmask), pmask);
        __m256i c = _mm256_add_epi32(_mm256_slli_epi32(bitlen8(pmag), 1), _mm256_and_si256(pmask, one));
        __m256i c16 = _mm256_packus_epi32(c, c);              /* lanes 0-3, 0-3, 4-7, 4-7 as u16 */
        __m256i c8 = _mm256_packus_epi16(c16, c16);           /* as u8 */
        uint32_t lo = (uint32_t)_mm256_extract_epi32(c8, 0), hi = (uint32_t)_mm256_extract_epi32(c8, 4);
        memcpy(ctx + i, &lo, 4);
        memcpy(ctx + i + 4, &hi, 4);
    }
    for (; i < n; i++) {
        uint32_t pd = m2 ? m1[i] - m2[i] : 0;
        out[i] = m1[i] + (uint32_t)(int32_t)(((int64_t)alpha * (int64_t)(int32_t)pd) >> 6);
        uint32_t pmask = (uint32_t)((int32_t)pd >> 31);
        ctx[i] = (uint8_t)(bitlen64((pd ^ pmask) - pmask) * 2 + (int)(pmask & 1));
    }
}

static int have_avx2(void) {
#ifdef NL_FORCE_SCALAR /* tests build this variant to check that both paths write the same bytes */
    return 0;
#else
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") ? 1 : 0;
    return v;
#endif
}
#else
#define NL_HAVE_AVX2_PATH 0
static int have_avx2(void) { return 0; }
static int alpha_cost32_avx2(const uint32_t *d, const uint32_t *p, int ns, int a, int64_t *cost) {
    (void)d, (void)p, (void)ns, (void)a, (void)cost;
    return 0;
}
static int alpha_cost32_avx512(const uint32_t *d, const uint32_t *p, int ns, int a, int64_t *cost) {
    (void)d, (void)p, (void)ns, (void)a, (void)cost;
    return 0;
}
static int64_t pack32_avx2(const uint32_t *enc, const uint16_t *key, const uint32_t *rawv, int64_t n, int pairs,
                           int ns, bw_t *bw, uint8_t *const *starts, uint64_t *first) {
    (void)starts, (void)first, (void)enc, (void)key, (void)rawv, (void)n, (void)pairs, (void)ns, (void)bw;
    return 0;
}
static int64_t pass1_values32_avx2(const uint32_t *src, uint32_t *mw, int64_t n, uint32_t *rawv, uint16_t *key,
                                   int *cv) {
    (void)src, (void)mw, (void)n, (void)rawv, (void)key, (void)cv;
    return 0;
}
static void prepass_delta32_avx2(const uint32_t *m1, const uint32_t *m2, int64_t n, int alpha, uint8_t *ctx,
                                 uint32_t *out) {
    (void)m1, (void)m2, (void)n, (void)alpha, (void)ctx, (void)out;
}
static int64_t pass1_delta32_avx2(const uint32_t *src, uint32_t *mw, const uint32_t *m1, const uint32_t *m2,
                                  int64_t n, int alpha, uint32_t *rawv, uint16_t *key, uint64_t *rawbits,
                                  uint32_t *anynz) {
    (void)src, (void)mw, (void)m1, (void)m2, (void)n, (void)alpha, (void)rawv, (void)key, (void)rawbits, (void)anynz;
    return 0;
}
static int have_avx512(void) { return 0; }
static int64_t pass1_delta32_z(const uint32_t *src, uint32_t *mw, const uint32_t *m1, const uint32_t *m2,
                               int64_t n, int alpha, uint32_t *rawv, uint16_t *key, uint64_t *rawbits,
                               uint32_t *anynz) {
    (void)src, (void)mw, (void)m1, (void)m2, (void)n, (void)alpha, (void)rawv, (void)key, (void)rawbits, (void)anynz;
    return 0;
}
static int have_pack32(void) { return 0; }
#endif

/* Ascending sort of n <= 512 distinct keys below 2^62 (huff_lengths' count << 9 | symbol). With AVX2 and up
 * to 256 keys, by rank: each key's place is the number of keys below it, n^2 / 4 comparisons without the
 * dependent loads of a merge (those bound the merge sort; a context has a few dozen symbols). */
#if NL_HAVE_AVX2_PATH
__attribute__((target("avx2"))) static void rank_sort_avx2(uint64_t *a, int n) {
    int64_t k[256 + 4];
    memcpy(k, a, (size_t)n * sizeof(uint64_t));
    int n4 = (n + 3) & ~3;
    for (int j = n; j < n4; j++) k[j] = INT64_MAX; /* above every key: counts no rank */
    for (int j = n4; j < n4 + 4; j++) k[j] = 0;
    for (int i = 0; i < n; i += 4) { /* four keys against all */
        __m256i k0 = _mm256_set1_epi64x(k[i]), k1 = _mm256_set1_epi64x(k[i + 1]);
        __m256i k2 = _mm256_set1_epi64x(k[i + 2]), k3 = _mm256_set1_epi64x(k[i + 3]);
        __m256i r0 = _mm256_setzero_si256(), r1 = r0, r2 = r0, r3 = r0;
        for (int j = 0; j < n4; j += 4) {
            __m256i kj = _mm256_loadu_si256((const __m256i *)(k + j));
            r0 = _mm256_sub_epi64(r0, _mm256_cmpgt_epi64(k0, kj));
            r1 = _mm256_sub_epi64(r1, _mm256_cmpgt_epi64(k1, kj));
            r2 = _mm256_sub_epi64(r2, _mm256_cmpgt_epi64(k2, kj));
            r3 = _mm256_sub_epi64(r3, _mm256_cmpgt_epi64(k3, kj));
        }
        /* horizontal sums: lanes (r0, r1, r2, r3) */
        __m256i s01 = _mm256_add_epi64(_mm256_unpacklo_epi64(r0, r1), _mm256_unpackhi_epi64(r0, r1));
        __m256i s23 = _mm256_add_epi64(_mm256_unpacklo_epi64(r2, r3), _mm256_unpackhi_epi64(r2, r3));
        __m256i t = _mm256_add_epi64(_mm256_permute2x128_si256(s01, s23, 0x20),
                                     _mm256_permute2x128_si256(s01, s23, 0x31));
        int64_t r[4];
        _mm256_storeu_si256((__m256i *)r, t);
        for (int q = 0; q < 4 && i + q < n; q++) a[r[q]] = (uint64_t)k[i + q];
    }
}
#endif

static void sort_keys(uint64_t *a, int n) {
#if NL_HAVE_AVX2_PATH
    if (n >= 8 && n <= 256 && have_avx2()) {
        rank_sort_avx2(a, n);
        return;
    }
#endif
    sort_u64(a, n);
}

/* ---- CRC-32 (zlib's: reflected, polynomial 0xEDB88320) ------------------------------------------------------
 * The container keeps a CRC-32 per chunk; computing it here, right after a chunk is coded and while it is still
 * in cache, is ~10x cheaper than zlib.crc32 over the whole segment later. Carry-less multiplication folds 64
 * bytes at a time (the constants and the final Barrett reduction are those of Intel's "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ", as in Linux's crc32-pclmul); a byte table does the rest and serves
 * CPUs without PCLMULQDQ. Tests check it against zlib.crc32 for every length 0..300 and large buffers. */

static uint32_t crc_table[256];

__attribute__((constructor)) static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_bytes(uint32_t c, const uint8_t *p, size_t n) { /* raw state in and out */
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("pclmul,sse4.1"))) static inline __m128i crc_fold(__m128i x, __m128i k, __m128i data) {
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), data);
}

/* The raw CRC state after n bytes (n >= 64, a multiple of 16). */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc_clmul(uint32_t c, const uint8_t *p, size_t n) {
    const __m128i k12 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4), k34 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x163cd6124), poly = _mm_set_epi64x(0x1F7011641, 0x1DB710641);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x1 = _mm_loadu_si128((const __m128i *)p), x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32)), x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)c));
    p += 64, n -= 64;
    for (; n >= 64; p += 64, n -= 64) {
        x1 = crc_fold(x1, k12, _mm_loadu_si128((const __m128i *)p));
        x2 = crc_fold(x2, k12, _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = crc_fold(x3, k12, _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = crc_fold(x4, k12, _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    x1 = crc_fold(crc_fold(crc_fold(x1, k34, x2), k34, x3), k34, x4);
    for (; n >= 16; p += 16, n -= 16) x1 = crc_fold(x1, k34, _mm_loadu_si128((const __m128i *)p));
    /* 128 -> 64 bits, then 64 -> 32 with the Barrett reduction */
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(k34, x1, 0x01));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 4), _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k5, 0x00));
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x10), mask32);
    x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, poly, 0x00));
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

/* The same with VPCLMULQDQ on 256-bit vectors: the four 16-byte lanes in two registers, two folds per
 * instruction (half the instructions of the loop above; the same state). */
__attribute__((target("avx2,pclmul,vpclmulqdq"))) static uint32_t crc_vclmul(uint32_t c, const uint8_t *p, size_t n) {
    const __m128i k12 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4), k34 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x163cd6124), poly = _mm_set_epi64x(0x1F7011641, 0x1DB710641);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    const __m256i kk = _mm256_broadcastsi128_si256(k12);
    __m256i y1 = _mm256_loadu_si256((const __m256i *)p), y2 = _mm256_loadu_si256((const __m256i *)(p + 32));
    y1 = _mm256_xor_si256(y1, _mm256_castsi128_si256(_mm_cvtsi32_si128((int)c)));
    p += 64, n -= 64;
    for (; n >= 64; p += 64, n -= 64) {
        __m256i d1 = _mm256_loadu_si256((const __m256i *)p), d2 = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i a1 = _mm256_clmulepi64_epi128(y1, kk, 0x00), b1 = _mm256_clmulepi64_epi128(y1, kk, 0x11);
        __m256i a2 = _mm256_clmulepi64_epi128(y2, kk, 0x00), b2 = _mm256_clmulepi64_epi128(y2, kk, 0x11);
        y1 = _mm256_xor_si256(_mm256_xor_si256(a1, b1), d1);
        y2 = _mm256_xor_si256(_mm256_xor_si256(a2, b2), d2);
    }
    __m128i x1 = _mm256_castsi256_si128(y1), x2 = _mm256_extracti128_si256(y1, 1);
    __m128i x3 = _mm256_castsi256_si128(y2), x4 = _mm256_extracti128_si256(y2, 1);
    x1 = crc_fold(crc_fold(crc_fold(x1, k34, x2), k34, x3), k34, x4);
    for (; n >= 16; p += 16, n -= 16) x1 = crc_fold(x1, k34, _mm_loadu_si128((const __m128i *)p));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(k34, x1, 0x01));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 4), _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k5, 0x00));
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x10), mask32);
    x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, poly, 0x00));
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

static int have_vclmul(void) {
#ifdef NL_FORCE_SCALAR
    return 0;
#else
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq") ? 1 : 0;
    return v;
#endif
}

static int have_clmul(void) {
#ifdef NL_FORCE_SCALAR
    return 0;
#else
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1") ? 1 : 0;
    return v;
#endif
}
#endif

/* zlib.crc32(data, crc): the CRC-32 of n bytes at p, continuing from crc (0 to start). */
uint32_t nl_crc32(uint32_t crc, const uint8_t *p, int64_t n) {
    uint32_t c = ~crc;
    size_t len = n > 0 ? (size_t)n : 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (len >= 64 && have_clmul()) {
        size_t body = len & ~(size_t)15;
        c = have_vclmul() ? crc_vclmul(c, p, body) : crc_clmul(c, p, body);
        p += body, len -= body;
    }
#endif
    return ~crc_bytes(c, p, len);
}

/* ---- the codec, per lane width ------------------------------------------------------------------------ */

/* Worst-case chunk size for n lanes of wb bytes. */
int64_t nl_bound(int wb, int64_t n) { return NL_HEAD + 8 + (int64_t)wb * n + 16; }

/* One element (index IDX) of stream J in the encoder's interleaved loop (names from encode_W's body): its
 * code and raw bits in one write (two for 64-bit lanes whose parts exceed 56 bits). */
#define NL_PUT(S, IDX, W, UT)                                                                                  \
    do {                                                                                                       \
        size_t ii = (size_t)(IDX);                                                                             \
        uint32_t e = enc[key[ii]];                                                                             \
        int l = (int)((e >> 12) & 15), nr = (int)(e >> 16);                                                    \
        uint64_t rv = (uint64_t)(rawv[ii] & (UT)(((UT)1 << nr) - 1));                                         \
        if (W == 64 && l + nr > 56) {                                                                          \
            bw_put(&(S), e & 0xFFF, l);                                                                      \
            bw_put_long(&(S), rv, nr);                                                                       \
        } else {                                                                                               \
            bw_put(&(S), (e & 0xFFF) | (rv << l), l + nr);                                                   \
        }                                                                                                      \
    } while (0)

/* The code and raw bits of element IDX (names from encode_W's body) as one value V of L bits (L <= 12 + W - 2). */
#define NL_BITS_OF(IDX, UT, V, L)                                                                              \
    do {                                                                                                       \
        size_t ii_ = (size_t)(IDX);                                                                            \
        uint32_t e_ = enc[key[ii_]];                                                                           \
        int l_ = (int)((e_ >> 12) & 15), nr_ = (int)(e_ >> 16);                                                \
        V = (uint64_t)(e_ & 0xFFF) | ((uint64_t)(rawv[ii_] & (UT)(((UT)1 << nr_) - 1)) << l_);                \
        L = l_ + nr_;                                                                                          \
    } while (0)

/* Elements IA then IB of stream S (lanes of <= 32 bits): one write when both fit in 56 bits, else two. */
#define NL_PUT2(S, IA, IB, UT)                                                                                 \
    do {                                                                                                       \
        uint64_t va_, vb_;                                                                                     \
        int la_, lb_;                                                                                          \
        NL_BITS_OF(IA, UT, va_, la_);                                                                          \
        NL_BITS_OF(IB, UT, vb_, lb_);                                                                          \
        if (__builtin_expect(la_ + lb_ <= 56, 1)) {                                                            \
            bw_put(&(S), va_ | (vb_ << la_), la_ + lb_);                                                       \
        } else {                                                                                               \
            bw_put(&(S), va_, la_);                                                                            \
            bw_put(&(S), vb_, lb_);                                                                            \
        }                                                                                                      \
    } while (0)

/* The next code of stream J in context index CI and the NR_FROM_E raw bits after it: sets e and raw; returns
 * from the decoder on an invalid code. */
#define NL_READ(S, CI, W, UT, NR_OF_E)                                                                         \
    br_refill(&(S));                                                                                         \
    uint32_t e = lookup(&dt, (CI), (S).buf);                                                                 \
    int l = (int)(e & 15);                                                                                     \
    if (!l) return NL_E_CODE;                                                                                  \
    int nr = (NR_OF_E);                                                                                        \
    UT raw;                                                                                                    \
    if (W == 64 && l + nr > 56) {                                                                              \
        br_get(&(S), l);                                                                                     \
        raw = (UT)br_get_long(&(S), nr);                                                                     \
    } else {                                                                                                   \
        raw = (UT)(((S).buf >> l) & ((1ull << nr) - 1));                                                     \
        br_get(&(S), l + nr);                                                                                \
    }

/* One values element (index IDX) from stream S in context chain C (names from decode_W's body). */
#define NL_VAL(S, C, IDX, W, UT)                                                                               \
    do {                                                                                                       \
        int ci_ = ctab[C];                                                                                     \
        if (ci_ < 0) return NL_E_CODE;                                                                         \
        NL_READ(S, ci_, W, UT, W - 8)                                                                          \
        int sy = (int)(e >> 4);                                                                                \
        UT v = (UT)(((UT)sy << (W - 8)) | raw);                                                                \
        out[IDX] = (UT)((v >> 1) ^ (UT)(0 - (v & 1)));                                                         \
        C = sy >> 5;                                                                                           \
    } while (0)

/* One delta element (index IDX, stream J) of the decoder's interleaved loop (names from decode_W's body). */
#define NL_GET(S, IDX, W, UT, ST)                                                                              \
    do {                                                                                                       \
        int64_t ii = (IDX);                                                                                    \
        UT pd = m2 ? (UT)(m1[ii] - m2[ii]) : 0;                                                                \
        UT pmask = (UT)((ST)pd >> (W - 1));                                                                    \
        UT pmag = (UT)((UT)(pd ^ pmask) - pmask);                                                              \
        int c = bitlen64(pmag) * 2 + (int)(pmask & 1);                                                         \
        if (ctab[c] < 0) return NL_E_CODE;                                                                     \
        NL_READ(S, ctab[c], W, UT, (int)((e >> 4) & 127))                                                      \
        UT neg = (UT)((e >> 13) & 1);                                                                          \
        UT mag = (UT)((UT)((UT)((e >> 11) & 3) << nr) | raw);                                                  \
        UT r = (UT)((UT)(mag ^ (UT)(0 - neg)) + neg);                                                          \
        out[ii] = (UT)(pred_##W(m1[ii], pd, alpha) + r);                                                       \
    } while (0)

/* One delta element (index IDX, stream J) after the pre-pass: context from ctx[], prediction already in out[]. */
#define NL_GET_PRE(S, IDX, W, UT)                                                                              \
    do {                                                                                                       \
        int64_t ii = (IDX);                                                                                    \
        int ci = ctab[cx[ii]];                                                                                 \
        if (ci < 0) return NL_E_CODE;                                                                          \
        NL_READ(S, ci, W, UT, (int)((e >> 4) & 127))                                                           \
        UT neg = (UT)((e >> 13) & 1);                                                                          \
        UT mag = (UT)((UT)((UT)((e >> 11) & 3) << nr) | raw);                                                  \
        out[ii] = (UT)(out[ii] + (UT)((UT)(mag ^ (UT)(0 - neg)) + neg));                                       \
    } while (0)

/* NL_GET_PRE for a stream whose state is in locals Q (position), B (bits), K (bit count) and which has at
 * least 16 bytes left: no end check, no overrun count (the caller bounds the elements; see below). */
#define NL_FAST_PRE(Q, B, K, IDX, UT)                                                                          \
    do {                                                                                                       \
        uint64_t x_;                                                                                           \
        memcpy(&x_, Q, 8);                                                                                     \
        B |= x_ << K;                                                                                          \
        Q += (63 - K) >> 3;                                                                                    \
        K |= 56;                                                                                               \
        int64_t ii = (IDX);                                                                                    \
        int ci = ctab[cx[ii]];                                                                                 \
        if (ci < 0) return NL_E_CODE;                                                                          \
        uint32_t e = lookup(&dt, ci, B);                                                                       \
        int l = (int)(e & 15);                                                                                 \
        if (!l) return NL_E_CODE;                                                                              \
        int nr = (int)((e >> 4) & 127), len_ = l + nr;                                                         \
        UT raw = (UT)((B >> l) & ((1ull << nr) - 1));                                                          \
        B >>= len_;                                                                                            \
        K -= len_;                                                                                             \
        UT neg = (UT)((e >> 13) & 1);                                                                          \
        UT mag = (UT)((UT)((UT)((e >> 11) & 3) << nr) | raw);                                                  \
        out[ii] = (UT)(out[ii] + (UT)((UT)(mag ^ (UT)(0 - neg)) + neg));                                       \
    } while (0)

/* The four streams' elements while every stream surely has 16 bytes left: an element takes <= 42 bits, so
 * after k more elements a stream's refill position is <= 5.25 k + 8 bytes further on; k = (left - 16) / 6
 * elements per stream cannot reach the end. The state lives in twelve scalars (the struct array spilled to
 * memory); the careful loop (NL_GET_PRE) finishes the last bytes. */
#define NL_FAST_STREAMS(UT)                                                                                    \
    do {                                                                                                       \
        for (;;) {                                                                                             \
            int64_t k = (n - i) / NS;                                                                          \
            for (int j = 0; j < NS; j++) {                                                                     \
                int64_t r = (br[j].end - br[j].p - 16) / 6;                                                    \
                if (r < k) k = r;                                                                              \
            }                                                                                                  \
            if (k <= 0) break;                                                                                 \
            const uint8_t *q0 = br[0].p, *q1 = br[1].p, *q2 = br[2].p, *q3 = br[3].p;                          \
            uint64_t b0 = br[0].buf, b1 = br[1].buf, b2 = br[2].buf, b3 = br[3].buf;                           \
            int k0 = br[0].n, k1 = br[1].n, k2 = br[2].n, k3 = br[3].n;                                        \
            for (int64_t t = 0; t < k; t++, i += NS) {                                                         \
                NL_FAST_PRE(q0, b0, k0, i, UT);                                                                \
                NL_FAST_PRE(q1, b1, k1, i + 1, UT);                                                            \
                NL_FAST_PRE(q2, b2, k2, i + 2, UT);                                                            \
                NL_FAST_PRE(q3, b3, k3, i + 3, UT);                                                            \
            }                                                                                                  \
            br[0].p = q0, br[1].p = q1, br[2].p = q2, br[3].p = q3;                                            \
            br[0].buf = b0, br[1].buf = b1, br[2].buf = b2, br[3].buf = b3;                                    \
            br[0].n = k0, br[1].n = k1, br[2].n = k2, br[3].n = k3;                                            \
            if (k < 64) break;                                                                                 \
        }                                                                                                      \
    } while (0)

/* Elements i..n-1 through ONE(stream, index, ...): four streams interleaved with their bit state in locals
 * (registers, not memory) while four elements remain, then element by element (stream i % ns). */
#define NL_FOR_STREAMS(ARR, T, ONE, ...)                                                                       \
    do {                                                                                                       \
        if (ns == NS) {                                                                                        \
            T s0 = ARR[0], s1 = ARR[1], s2 = ARR[2], s3 = ARR[3];                                              \
            for (; i + NS <= n; i += NS) {                                                                     \
                ONE(s0, i, __VA_ARGS__);                                                                       \
                ONE(s1, i + 1, __VA_ARGS__);                                                                   \
                ONE(s2, i + 2, __VA_ARGS__);                                                                   \
                ONE(s3, i + 3, __VA_ARGS__);                                                                   \
            }                                                                                                  \
            ARR[0] = s0, ARR[1] = s1, ARR[2] = s2, ARR[3] = s3;                                                \
        }                                                                                                      \
        for (; i < n; i++) ONE(ARR[i & (ns - 1)], i, __VA_ARGS__);                                             \
    } while (0)

#define DEFINE_CODEC(W, UT, ST, WT)                                                                          \
    static inline UT pred_##W(UT m1, UT p, int alpha) { /* alpha in 64ths */                                  \
        return (UT)(m1 + (UT)(ST)(((WT)alpha * (WT)(ST)p) >> 6));                                             \
    }                                                                                                          \
                                                                                                               \
    static inline UT mono_##W(UT x) { return (UT)(x ^ ((UT)((ST)x >> (W - 1)) & (UT)((UT)~(UT)0 >> 1))); }     \
                                                                                                               \
    /* mw[i0..n) = mono(bits[i0..n)); returns mw */                                                            \
    static UT *mono_rest_##W(const UT *bits, UT *mw, int64_t i0, int64_t n) {                                  \
        for (int64_t i = i0; i < n; i++) mw[i] = mono_##W(bits[i]);                                            \
        return mw;                                                                                             \
    }                                                                                                          \
                                                                                                               \
    /* The sum of the residuals' bit lengths over the sample (d = m - m1, p = m1 - m2) with weight a. */        \
    static int64_t alpha_cost_##W(const UT *d, const UT *p, int ns, int a) {                                  \
        int64_t c = 0;                                                                                         \
        int k = 0;                                                                                             \
        if (W == 32 && NL_HAVE_AVX2_PATH && have_avx2())                                                       \
            k = (have_avx512() ? alpha_cost32_avx512 : alpha_cost32_avx2)((const uint32_t *)d,                 \
                                                                          (const uint32_t *)p, ns, a, &c);     \
        for (; k < ns; k++) {                                                                                  \
            UT r = (UT)(d[k] - (UT)(ST)(((WT)a * (WT)(ST)p[k]) >> 6));                                         \
            c += bitlen64((ST)r < 0 ? (UT)(0 - r) : r);                                                        \
        }                                                                                                      \
        return c;                                                                                              \
    }                                                                                                          \
                                                                                                               \
    /* The predictor weight (64ths, 0..ALPHA_MAX) with the least residual bits on SAMPLE lanes: every 8th     \
     * weight, then halving steps around the best (ties: the first found). */                                 \
    static int choose_alpha_##W(const UT *m, int bits, const UT *m1, const UT *m2, int64_t n) {                \
        if (!m2 || n == 0) return 0;                                                                           \
        /* SAMPLE lanes in runs of SAMPLE_RUN, spread evenly over the block (the whole block when smaller) */   \
        UT d[SAMPLE], p[SAMPLE];                                                                               \
        int ns = 0;                                                                                            \
        int64_t runs = n <= SAMPLE ? 1 : SAMPLE / SAMPLE_RUN, len = n <= SAMPLE ? n : SAMPLE_RUN;              \
        for (int64_t r = 0; r < runs; r++) {                                                                   \
            int64_t i0 = runs == 1 ? 0 : r * ((n - SAMPLE_RUN) / (runs - 1));                                  \
            for (int64_t i = i0; i < i0 + len; i++, ns++) {                                                    \
                d[ns] = (UT)((bits ? mono_##W(m[i]) : m[i]) - m1[i]);                                          \
                p[ns] = (UT)(m1[i] - m2[i]);                                                                   \
            }                                                                                                  \
        }                                                                                                      \
        int best = 0;                                                                                          \
        int64_t bc = alpha_cost_##W(d, p, ns, 0);                                                              \
        for (int a = 8; a <= ALPHA_MAX; a += 8) {                                                              \
            int64_t c = alpha_cost_##W(d, p, ns, a);                                                           \
            if (c < bc) bc = c, best = a;                                                                      \
        }                                                                                                      \
        for (int step = 4; step >= 1; step /= 2) {                                                             \
            int center = best;                                                                                 \
            for (int sgn = -1; sgn <= 1; sgn += 2) {                                                           \
                int a = center + sgn * step;                                                                   \
                if (a < 0 || a > ALPHA_MAX) continue;                                                          \
                int64_t c = alpha_cost_##W(d, p, ns, a);                                                       \
                if (c < bc) bc = c, best = a;                                                                  \
            }                                                                                                  \
        }                                                                                                      \
        return best;                                                                                           \
    }                                                                                                          \
                                                                                                               \
    /* With mw, src holds float bits and the block's lanes m are their monotone map, which is also stored into \
     * mw (in the pass that reads them); else src is m. */                                                     \
    NL_CLONES static int64_t encode_##W(const UT *src, UT *mw, const UT *m1, const UT *m2, int64_t n, int values, \
                                        uint8_t *out, int64_t cap) {                                           \
        const int wb = W / 8;                                                                                 \
        const int nsym = values ? 256 : (W + 1) * 4;                                                          \
        const int nctx = values ? 8 : (W + 1) * 2;                                                            \
        const size_t nk = (size_t)nsym * nctx; /* keys: context * nsym + symbol, < 2^16 */                    \
        int alpha = values ? 0 : choose_alpha_##W(src, mw != NULL, m1, m2, n);                                 \
        /* scratch: raw parts [n] UT | keys [n] u16 | 4 histograms [4][nk] u32 | lens [nk] | codes [nk] u32 */ \
        size_t o_keys = (size_t)n * sizeof(UT);                                                               \
        size_t o_cnt = (o_keys + (size_t)n * 2 + 63) & ~(size_t)63;                                           \
        size_t o_len = o_cnt + 4 * nk * sizeof(uint32_t);                                                     \
        size_t o_code = (o_len + nk + 63) & ~(size_t)63;                                                      \
        uint8_t *sc = scratch(o_code + nk * sizeof(uint32_t) + 64);                                           \
        if (!sc) {                                                                                             \
            for (int64_t i = 0; mw && i < n; i++) mw[i] = mono_##W(src[i]);                                    \
            return NL_E_MEM;                                                                                   \
        }                                                                                                      \
        UT *rawv = (UT *)sc;                                                                                  \
        uint16_t *key = (uint16_t *)(sc + o_keys);                                                            \
        uint32_t *cnt = (uint32_t *)(sc + o_cnt);                                                             \
        uint8_t *lens = sc + o_len;                                                                           \
        uint32_t *enc = (uint32_t *)(sc + o_code);                                                            \
        uint32_t *c0 = cnt, *c1 = cnt + nk, *c2 = cnt + 2 * nk, *c3 = cnt + 3 * nk;                           \
        const int nh = n >= 65536 ? 4 : 1; /* histograms: four only where their clearing and merging pays */  \
        const int small = (size_t)n * 4 < nk; /* then only the ranges its keys use are cleared and scanned */  \
        int64_t counted4 = 0;                  /* lanes counted into the histogram of their stream (i % 4) */  \
        uint64_t rawbits = 0;                                                                                 \
        UT anynz = 0;                                                                                          \
        if (values) {                                                                                         \
            int cv[NS] = {0, 0, 0, 0}; /* context: the top bits of lane i - 4 (four independent chains) */    \
            int64_t i0 = 0;                                                                                    \
            if (W == 32 && NL_HAVE_AVX2_PATH && have_avx2())                                                   \
                i0 = pass1_values32_avx2((const uint32_t *)src, (uint32_t *)mw, n, (uint32_t *)rawv, key, cv); \
            const UT *sm = mw ? mono_rest_##W(src, mw, i0, n) : src; /* lanes i0.. */                          \
            for (int64_t i = i0; i < n; i++) {                                                                 \
                UT mi = sm[i];                                                                                 \
                UT v = (UT)((mi << 1) ^ (UT)((ST)mi >> (W - 1)));                                              \
                int y = (int)(v >> (W - 8));                                                                  \
                rawv[i] = v;                                                                                  \
                key[i] = (uint16_t)(cv[i & 3] * 256 + y);                                                     \
                cv[i & 3] = y >> 5;                                                                           \
            }                                                                                                 \
            rawbits = (uint64_t)n * (W - 8);                                                                  \
        } else {                                                                                              \
            int64_t i0 = 0;                                                                                   \
            if (W == 32 && NL_HAVE_AVX2_PATH && have_avx2()) {                                                \
                uint32_t nz32 = 0;                                                                            \
                i0 = (have_avx512() ? pass1_delta32_z : pass1_delta32_avx2)(                                   \
                    (const uint32_t *)src, (uint32_t *)mw, (const uint32_t *)m1, (const uint32_t *)m2, n, alpha, \
                    (uint32_t *)rawv, key, &rawbits, &nz32);                                                   \
                anynz |= (UT)nz32;                                                                            \
            }                                                                                                 \
            const UT *sm = mw ? mono_rest_##W(src, mw, i0, n) : src; /* lanes i0.. */                          \
            for (int64_t i = i0; i < n; i++) {                                                                \
                UT mi = sm[i];                                                                                 \
                UT p = m2 ? (UT)(m1[i] - m2[i]) : 0;                                                          \
                UT r = (UT)(mi - pred_##W(m1[i], p, alpha));                                                   \
                UT nmask = (UT)((ST)r >> (W - 1));                                                            \
                UT mag = (UT)((UT)(r ^ nmask) - nmask);                                                       \
                int s = bitlen64(mag);                                                                        \
                int sh = s >= 2 ? s - 2 : 0;                                                                  \
                int sb = (int)((mag >> sh) & 1) & (s >= 2);                                                   \
                UT pmask = (UT)((ST)p >> (W - 1));                                                            \
                UT pmag = (UT)((UT)(p ^ pmask) - pmask);                                                      \
                int c = bitlen64(pmag) * 2 + (int)(pmask & 1);                                                \
                rawv[i] = mag;                                                                                \
                anynz |= mag;                                                                                 \
                key[i] = (uint16_t)(c * nsym + s * 4 + (int)(nmask & 2) + sb);                                \
                rawbits += (uint64_t)sh;                                                                      \
            }                                                                                                 \
        }                                                                                                     \
        const UT *m = mw ? mw : src; /* written by now */                                                      \
        if (!values && anynz == 0) {                                                                           \
            out[0] = NL_TAG;                                                                                   \
            out[1] = (uint8_t)wb;                                                                              \
            out[2] = (uint8_t)(F_DELTA | F_ZERO | F_A64);                                                      \
            out[3] = (uint8_t)(int8_t)alpha;                                                                   \
            put_u32(out + 4, (uint32_t)n);                                                                     \
            return NL_HEAD;                                                                                    \
        }                                                                                                      \
        /* the symbols [clo[c], chi[c]) of context c that occur (none: clo >= chi) */                          \
        int16_t clo[260], chi[260];                                                                            \
        if (small) {                                                                                           \
            for (int c = 0; c < nctx; c++) clo[c] = (int16_t)nsym, chi[c] = 0;                                 \
            for (int64_t i = 0; i < n; i++) {                                                                  \
                int c = key[i] / nsym, k = key[i] - c * nsym;                                                  \
                if (k < clo[c]) clo[c] = (int16_t)k;                                                           \
                if (k >= chi[c]) chi[c] = (int16_t)(k + 1);                                                    \
            }                                                                                                  \
            for (int c = 0; c < nctx; c++)                                                                     \
                if (clo[c] < chi[c]) memset(c0 + (size_t)c * nsym + clo[c], 0, (size_t)(chi[c] - clo[c]) * 4); \
            for (int64_t i = 0; i < n; i++) c0[key[i]]++;                                                      \
        } else {                                                                                               \
            memset(cnt, 0, (size_t)nh * nk * sizeof(uint32_t));                                                \
            /* four histograms: consecutive equal keys do not wait on each other's increments */               \
            int64_t i4 = nh == 4 ? n & ~(int64_t)3 : 0;                                                        \
            counted4 = i4;                                                                                     \
            for (int64_t i = 0; i < i4; i += 4) {                                                              \
                c0[key[i]]++;                                                                                  \
                c1[key[i + 1]]++;                                                                              \
                c2[key[i + 2]]++;                                                                              \
                c3[key[i + 3]]++;                                                                              \
            }                                                                                                  \
            for (int64_t i = i4; i < n; i++) c0[key[i]]++;                                                     \
            for (int c = 0; c < nctx; c++) {                                                                   \
                uint32_t *cc = c0 + (size_t)c * nsym, any = 0;                                                 \
                if (nh == 4) {                                                                                 \
                    const uint32_t *d1 = c1 + (size_t)c * nsym, *d2 = c2 + (size_t)c * nsym;                   \
                    const uint32_t *d3 = c3 + (size_t)c * nsym;                                                \
                    for (int k = 0; k < nsym; k++) any |= cc[k] += d1[k] + d2[k] + d3[k];                      \
                } else {                                                                                       \
                    for (int k = 0; k < nsym; k++) any |= cc[k];                                               \
                }                                                                                              \
                int lo = 0, hi = 0;                                                                            \
                if (any) {                                                                                     \
                    hi = nsym;                                                                                 \
                    while (!cc[lo]) lo++;                                                                      \
                    while (!cc[hi - 1]) hi--;                                                                  \
                }                                                                                              \
                clo[c] = (int16_t)lo, chi[c] = (int16_t)hi;                                                    \
            }                                                                                                  \
        }                                                                                                     \
        uint64_t huffbits = 0;                                                                                \
        /* Four streams (pack32_avx2) can be written straight into out at their places, from their sizes, which \
         * the four histograms (one per stream) give: no copy. */                                              \
        int direct = W == 32 && NL_HAVE_AVX2_PATH && n >= NS_MIN_LANES && nh == 4 && !small && have_pack32();  \
        uint64_t sbits[NS] = {0, 0, 0, 0};                                                                     \
        for (int c = 0; c < nctx; c++) {                                                                      \
            const uint32_t *cc = c0 + (size_t)c * nsym;                                                       \
            uint8_t *l = lens + (size_t)c * nsym;                                                             \
            int lo = clo[c], hi = chi[c];                                                                      \
            if (lo >= hi) continue; /* absent */                                                               \
            uint16_t code[512];                                                                               \
            huff_lengths(cc + lo, hi - lo, l + lo); /* the same lengths as over all symbols (ties by symbol) */ \
            if (canon_codes(l + lo, hi - lo, code + lo) < 0) return NL_E_TABLE;                                \
            for (int k = lo; k < hi; k++) { /* (the keys of other symbols do not occur) */                     \
                huffbits += (uint64_t)cc[k] * l[k];                                                           \
                int sl = k >> 2;                                                                              \
                uint32_t nr = values ? (uint32_t)(W - 8) : (uint32_t)(sl >= 2 ? sl - 2 : 0);                  \
                enc[(size_t)c * nsym + k] = (l[k] ? code[k] : 0) | ((uint32_t)l[k] << 12) | (nr << 16);       \
            }                                                                                                 \
            if (direct) /* streams 1-3 have histograms of their own (c0 is the sum by now) */                  \
                for (int k = lo; k < hi; k++) {                                                                \
                    uint64_t len = l[k] + (enc[(size_t)c * nsym + k] >> 16);                                   \
                    size_t x = (size_t)c * nsym + k;                                                           \
                    sbits[1] += c1[x] * len, sbits[2] += c2[x] * len, sbits[3] += c3[x] * len;                 \
                }                                                                                              \
        }                                                                                                      \
        if (direct) {                                                                                          \
            for (int64_t i = counted4; i < n; i++) /* the last lanes went into c0, whatever their stream */    \
                if (i & 3) {                                                                                   \
                    uint32_t e = enc[key[i]];                                                                  \
                    sbits[i & 3] += ((e >> 12) & 15) + (e >> 16);                                              \
                }                                                                                              \
            sbits[0] = huffbits + rawbits - sbits[1] - sbits[2] - sbits[3];                                    \
        }                                                                                                     \
        size_t tsz = tables_size(nctx, clo, chi);                                                              \
        /* NS interleaved streams (element i in stream i % NS), each a Huffman part and a raw part: NS        \
         * independent bit chains for the CPU to run side by side when encoding and decoding. */              \
        const int ns = n >= NS_MIN_LANES ? NS : 1;                                                            \
        int64_t est = NL_HEAD + (int64_t)tsz + 4 * ns + (int64_t)((huffbits + rawbits) / 8) + 2 * ns;         \
        int64_t rawsize = NL_HEAD + (int64_t)wb * n;                                                          \
        out[0] = NL_TAG;                                                                                      \
        out[1] = (uint8_t)wb;                                                                                 \
        out[3] = (uint8_t)(int8_t)alpha;                                                                      \
        put_u32(out + 4, (uint32_t)n);                                                                        \
        if (est >= rawsize) {                                                                                 \
            if (rawsize > cap) return NL_E_ARG;                                                               \
            out[2] = (uint8_t)((values ? F_VALUES : F_DELTA | F_A64) | F_RAW);                                \
            if (values) {                                                                                     \
                memcpy(out + NL_HEAD, m, (size_t)n * sizeof(UT));                                             \
            } else {                                                                                          \
                for (int64_t i = 0; i < n; i++) {                                                             \
                    UT p = m2 ? (UT)(m1[i] - m2[i]) : 0;                                                      \
                    UT r = (UT)(m[i] - pred_##W(m1[i], p, alpha));                                            \
                    memcpy(out + NL_HEAD + (size_t)i * sizeof(UT), &r, sizeof(UT));                           \
                }                                                                                             \
            }                                                                                                 \
            return rawsize;                                                                                   \
        }                                                                                                     \
        int64_t coded = NL_HEAD + (int64_t)tsz + 4 * ns;                                                       \
        uint8_t *sp[NS]; /* where each stream goes */                                                          \
        if (direct) {                                                                                          \
            int64_t total = coded;                                                                             \
            for (int j = 0; j < NS; j++) total += (int64_t)((sbits[j] + 7) / 8);                               \
            if (total + 8 <= cap) /* (the last stream's writes reach 8 bytes past its end) */                  \
                coded = total;                                                                                 \
            else                                                                                               \
                direct = 0;                                                                                    \
        }                                                                                                      \
        size_t scap = 0;                                                                                       \
        if (direct) {                                                                                          \
            sp[0] = out + NL_HEAD + tsz + 4 * NS;                                                              \
            for (int j = 1; j < NS; j++) sp[j] = sp[j - 1] + (sbits[j - 1] + 7) / 8;                           \
        } else {                                                                                               \
            scap = (size_t)(n / ns + 1) * (MAXLEN + W) / 8 + 16;                                               \
            uint8_t *sbuf = scratch2(ns * scap);                                                               \
            if (!sbuf) return NL_E_MEM;                                                                        \
            for (int j = 0; j < NS; j++) sp[j] = sbuf + (size_t)(j < ns ? j : 0) * scap;                       \
        }                                                                                                      \
        bw_t bw[NS];                                                                                          \
        for (int j = 0; j < NS; j++) bw[j] = (bw_t){sp[j], 0, 0};                                              \
        uint64_t first[NS];                                                                                    \
        int64_t i = 0;                                                                                        \
        if (W == 32 && NL_HAVE_AVX2_PATH && have_pack32()) {                                                   \
            i = pack32_avx2(enc, key, (const uint32_t *)rawv, n, !values && ns == NS, ns, bw,                  \
                            direct ? (uint8_t *const *)sp : NULL, first);                                      \
        } else if (W <= 32 && ns == NS) { /* two elements of a stream per write where they fit (same bits) */  \
            bw_t s0 = bw[0], s1 = bw[1], s2 = bw[2], s3 = bw[3];                                              \
            for (; i + 2 * NS <= n; i += 2 * NS) {                                                            \
                NL_PUT2(s0, i, i + 4, UT);                                                                    \
                NL_PUT2(s1, i + 1, i + 5, UT);                                                                \
                NL_PUT2(s2, i + 2, i + 6, UT);                                                                \
                NL_PUT2(s3, i + 3, i + 7, UT);                                                                \
            }                                                                                                 \
            bw[0] = s0, bw[1] = s1, bw[2] = s2, bw[3] = s3;                                                   \
        }                                                                                                     \
        NL_FOR_STREAMS(bw, bw_t, NL_PUT, W, UT);                                                              \
        for (int j = 0; j < ns; j++) bw_flush(&bw[j]);                                                         \
        if (direct) {                                                                                          \
            for (int j = 0; j < NS; j++) /* (each stream ends where the next begins; never fails) */           \
                if (bw[j].p != sp[j] + (sbits[j] + 7) / 8) return NL_E_TABLE;                                  \
            /* a stream's last writes spill up to 8 bytes into the next one: its first 8 bytes are put back */ \
            for (int j = 1; j < NS; j++) memcpy(sp[j], &first[j], 8);                                          \
        } else {                                                                                               \
            for (int j = 0; j < ns; j++) coded += bw[j].p - sp[j];                                             \
            if (coded > cap) return NL_E_ARG;                                                                  \
        }                                                                                                     \
        out[2] = (uint8_t)((values ? F_VALUES : F_DELTA | F_A64) | (ns == NS ? F_STREAMS4 : 0));              \
        uint8_t *p = out + NL_HEAD;                                                                           \
        p += write_tables(p, lens, nsym, nctx, clo, chi);                                                      \
        uint8_t *sizes = p;                                                                                   \
        p += 4 * ns;                                                                                          \
        for (int j = 0; j < ns; j++) {                                                                        \
            size_t sb = (size_t)(bw[j].p - sp[j]);                                                             \
            put_u32(sizes + 4 * j, (uint32_t)sb);                                                             \
            if (!direct) memcpy(p, sp[j], sb);                                                                 \
            p += sb;                                                                                          \
        }                                                                                                     \
        (void)huffbits;                                                                                       \
        return coded;                                                                                         \
    }                                                                                                         \
                                                                                                              \
    NL_CLONES static int decode_##W(const uint8_t *chunk, int64_t len, int64_t n, const UT *m1, const UT *m2,          \
                          UT *out) {                                                                           \
        int flags = chunk[2];                                                                                  \
        int values = (flags & 0x0F) == F_VALUES;                                                               \
        if ((flags & 0x0F) > F_DELTA || (values && (flags & F_A64))) return NL_E_HEAD;                         \
        int alpha = (int8_t)chunk[3] * ((flags & F_A64) ? 1 : 4); /* 16ths -> 64ths: the same prediction */    \
        if (!values && !m1) return NL_E_STATE;                                                                 \
        const uint8_t *p = chunk + NL_HEAD, *end = chunk + len;                                                \
        if (flags & F_ZERO) {                                                                                  \
            if (values || (flags & F_RAW) || end != p) return NL_E_HEAD;                                      \
            for (int64_t i = 0; i < n; i++) {                                                                  \
                UT pd = m2 ? (UT)(m1[i] - m2[i]) : 0;                                                          \
                out[i] = pred_##W(m1[i], pd, alpha);                                                           \
            }                                                                                                  \
            return NL_OK;                                                                                      \
        }                                                                                                      \
        if (flags & F_RAW) {                                                                                   \
            if (end - p != (int64_t)sizeof(UT) * n) return NL_E_SHORT;                                        \
            if (values) {                                                                                      \
                memcpy(out, p, (size_t)n * sizeof(UT));                                                        \
            } else {                                                                                           \
                for (int64_t i = 0; i < n; i++) {                                                              \
                    UT r;                                                                                      \
                    memcpy(&r, p + (size_t)i * sizeof(UT), sizeof(UT));                                        \
                    UT pd = m2 ? (UT)(m1[i] - m2[i]) : 0;                                                      \
                    out[i] = (UT)(pred_##W(m1[i], pd, alpha) + r);                                             \
                }                                                                                              \
            }                                                                                                  \
            return NL_OK;                                                                                      \
        }                                                                                                      \
        const int nsym = values ? 256 : (W + 1) * 4;                                                          \
        const int nctx = values ? 8 : (W + 1) * 2;                                                            \
        int16_t ctab[260];                                                                                     \
        dtab_t dt;                                                                                             \
        int64_t used = read_tables(p, end, nsym, nctx, ctab, &dt, values);                                     \
        if (used < 0) return (int)used;                                                                        \
        p += used;                                                                                             \
        const int ns = (flags & F_STREAMS4) ? NS : 1;                                                         \
        if (end - p < 4 * ns) return NL_E_SHORT;                                                              \
        br_t br[NS];                                                                                          \
        uint64_t total = 0;                                                                                   \
        for (int j = 0; j < ns; j++) total += get_u32(p + 4 * j);                                             \
        if ((uint64_t)(end - p - 4 * ns) != total) return (uint64_t)(end - p - 4 * ns) < total ? NL_E_SHORT : NL_E_TRAIL; \
        const uint8_t *q = p + 4 * ns;                                                                        \
        for (int j = 0; j < ns; j++) {                                                                        \
            uint32_t sz = get_u32(p + 4 * j);                                                                 \
            br[j] = (br_t){q, q + sz, 0, 0, 0};                                                               \
            q += sz;                                                                                          \
        }                                                                                                     \
        int64_t i = 0;                                                                                        \
        if (values) {                                                                                         \
            int cv[NS] = {0, 0, 0, 0};                                                                        \
            if (ns == NS) { /* four streams and four context chains side by side */                           \
                br_t s0 = br[0], s1 = br[1], s2 = br[2], s3 = br[3];                                          \
                int c0 = 0, c1 = 0, c2 = 0, c3 = 0;                                                           \
                for (; i + NS <= n; i += NS) {                                                                \
                    NL_VAL(s0, c0, i, W, UT);                                                                 \
                    NL_VAL(s1, c1, i + 1, W, UT);                                                             \
                    NL_VAL(s2, c2, i + 2, W, UT);                                                             \
                    NL_VAL(s3, c3, i + 3, W, UT);                                                             \
                }                                                                                             \
                br[0] = s0, br[1] = s1, br[2] = s2, br[3] = s3;                                               \
                cv[0] = c0, cv[1] = c1, cv[2] = c2, cv[3] = c3;                                               \
            }                                                                                                 \
            for (; i < n; i++) {                                                                              \
                int j = (int)(i & (ns - 1));                                                                  \
                NL_VAL(br[j], cv[i & 3], i, W, UT);                                                           \
            }                                                                                                 \
        } else if (W == 32 && NL_HAVE_AVX2_PATH && have_avx2()) {                                             \
            uint8_t *cx = scratch2((size_t)n + 16);                                                           \
            if (!cx) return NL_E_MEM;                                                                         \
            prepass_delta32_avx2((const uint32_t *)m1, (const uint32_t *)m2, n, alpha, cx, (uint32_t *)out);  \
            if (ns == NS) NL_FAST_STREAMS(UT);                                                                \
            NL_FOR_STREAMS(br, br_t, NL_GET_PRE, W, UT);                                                      \
        } else {                                                                                              \
            NL_FOR_STREAMS(br, br_t, NL_GET, W, UT, ST);                                                      \
        }                                                                                                     \
        for (int j = 0; j < ns; j++)                                                                          \
            if (br[j].over > br[j].n) return NL_E_OVERRUN;                                                    \
        return NL_OK;                                                                                          \
    }

DEFINE_CODEC(16, uint16_t, int16_t, int64_t)
DEFINE_CODEC(32, uint32_t, int32_t, int64_t)
DEFINE_CODEC(64, uint64_t, int64_t, __int128)

void nl_mono(int wb, int64_t n, const void *src, void *dst);

/* nl_encode, and with mw: m holds float bit lanes whose monotone map (the lanes coded) goes into mw. */
static int64_t encode_any(int wb, int64_t n, const void *m, void *mw, const void *m1, const void *m2, int values,
                          uint8_t *out, int64_t cap, uint32_t *crc) {
    if (n < 0 || n > 0xFFFFFFFFll || cap < NL_HEAD || (!values && !m1)) {
        if (mw && n > 0) nl_mono(wb, n, m, mw);
        return NL_E_ARG;
    }
    int64_t size = NL_E_ARG;
    switch (wb) {
    case 2:
        size = encode_16((const uint16_t *)m, (uint16_t *)mw, (const uint16_t *)m1, (const uint16_t *)m2, n, values,
                         out, cap);
        break;
    case 4:
        size = encode_32((const uint32_t *)m, (uint32_t *)mw, (const uint32_t *)m1, (const uint32_t *)m2, n, values,
                         out, cap);
        break;
    case 8:
        size = encode_64((const uint64_t *)m, (uint64_t *)mw, (const uint64_t *)m1, (const uint64_t *)m2, n, values,
                         out, cap);
        break;
    }
    if (crc && size >= 0) *crc = nl_crc32(0, out, size);
    return size;
}

/* Encode n lanes of wb bytes (2, 4, 8) into out (cap bytes, >= nl_bound). values != 0: a values chunk of m
 * (m1, m2 unused); else a delta chunk against m1 (required) and m2 (NULL: prediction m1). Returns the chunk
 * size or a negative error; *crc (when not NULL) gets the chunk's CRC-32. */
int64_t nl_encode(int wb, int64_t n, const void *m, const void *m1, const void *m2, int values, uint8_t *out,
                  int64_t cap, uint32_t *crc) {
    return encode_any(wb, n, m, NULL, m1, m2, values, out, cap, crc);
}

/* Decode a chunk of n lanes of wb bytes into out; m1/m2 as at encoding (a delta chunk needs m1; m2 when the
 * encoder had it). Returns 0 or a negative error. */
int nl_decode(const uint8_t *chunk, int64_t len, int wb, int64_t n, const void *m1, const void *m2,
              void *out) {
    if (len < NL_HEAD || chunk[0] != NL_TAG || chunk[1] != wb || get_u32(chunk + 4) != (uint32_t)n)
        return NL_E_HEAD;
    switch (wb) {
    case 2:
        return decode_16(chunk, len, n, (const uint16_t *)m1, (const uint16_t *)m2, (uint16_t *)out);
    case 4:
        return decode_32(chunk, len, n, (const uint32_t *)m1, (const uint32_t *)m2, (uint32_t *)out);
    case 8:
        return decode_64(chunk, len, n, (const uint64_t *)m1, (const uint64_t *)m2, (uint64_t *)out);
    }
    return NL_E_HEAD;
}

/* The order-preserving ("monotone") map of float bit patterns to signed lanes, dst = src ^ ((src >> (W-1)) &
 * MAX): one pass (numpy needs three). Its own inverse. */
NL_CLONES void nl_mono(int wb, int64_t n, const void *src, void *dst) {
    if (wb == 2) {
        const int16_t *a = (const int16_t *)src;
        int16_t *b = (int16_t *)dst;
        for (int64_t i = 0; i < n; i++) b[i] = (int16_t)(a[i] ^ ((a[i] >> 15) & 0x7FFF));
    } else if (wb == 4) {
        const int32_t *a = (const int32_t *)src;
        int32_t *b = (int32_t *)dst;
        for (int64_t i = 0; i < n; i++) b[i] = a[i] ^ ((a[i] >> 31) & 0x7FFFFFFF);
    } else if (wb == 8) {
        const int64_t *a = (const int64_t *)src;
        int64_t *b = (int64_t *)dst;
        for (int64_t i = 0; i < n; i++) b[i] = a[i] ^ ((a[i] >> 63) & 0x7FFFFFFFFFFFFFFFll);
    }
}

/* nl_encode of the monotone map of float bit lanes ``bits``, which it also writes into m_out (the lanes the
 * writer keeps for the next steps): one call per block instead of a separate pass over the whole tensor. */
int64_t nl_encode_bits(int wb, int64_t n, const void *bits, void *m_out, const void *m1, const void *m2, int values,
                       uint8_t *out, int64_t cap, uint32_t *crc) {
    if (n < 0) return NL_E_ARG;
    return encode_any(wb, n, bits, m_out, m1, m2, values, out, cap, crc);
}

/* nl_encode_bits for nb blocks in one call (the tape writer's per-snapshot path: one ctypes call instead of one
 * per block). Row k of jobs is seven int64s: wb, n, bits, m_out, m1, m2, values (addresses as integers, 0 =
 * none). Block k's chunk is written at out + the sum of the chunks before it; sizes[k] and crcs[k] get its size
 * and CRC-32. Each block needs nl_bound(wb, n) bytes of cap left when it starts. Returns the total size, or a
 * negative error with sizes[k] set to it for the block that failed (the blocks before it are written). */
int64_t nl_encode_bits_many(int64_t nb, const int64_t *jobs, uint8_t *out, int64_t cap, int64_t *sizes,
                            uint32_t *crcs) {
    int64_t off = 0;
    for (int64_t k = 0; k < nb; k++) {
        const int64_t *j = jobs + 7 * k;
        int wb = (int)j[0];
        int64_t n = j[1], r = NL_E_ARG;
        if (n >= 0 && (wb == 2 || wb == 4 || wb == 8) && j[2] && (n == 0 || j[3]) && cap - off >= nl_bound(wb, n))
            r = encode_any(wb, n, (const void *)(intptr_t)j[2], (void *)(intptr_t)j[3], (const void *)(intptr_t)j[4],
                           (const void *)(intptr_t)j[5], (int)j[6], out + off, cap - off, crcs + k);
        sizes[k] = r;
        if (r < 0) return r;
        off += r;
    }
    return off;
}

/* nl_encode_bits_many on the calling thread's OpenMP team: the blocks are split into as many contiguous runs
 * as the team has threads (balanced by bytes), each coded by one thread — the first straight into out, the
 * others into a buffer of their thread's — and then, after a barrier, each moved into place behind the runs
 * before it. The same bytes, sizes and CRCs as nl_encode_bits_many; out needs the sum of the blocks' bounds.
 * *helper_cpu_ns (when not NULL) gets the CPU time the other threads of the team spent on it added.
 *
 * The OpenMP runtime is the one the caller is already using (torch's libgomp, found by the Python side):
 * fns[0] GOMP_parallel, fns[1] omp_get_thread_num, fns[2] omp_get_num_threads, fns[3] GOMP_barrier. Called
 * from the thread that runs torch's parallel regions (the training thread), the region is taken by the same
 * team as torch's own, whose workers are spinning for their next region: the snapshot is coded on every core
 * at once, in the time the loop would otherwise wait for one thread to do it all. */
typedef void (*nl_gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*nl_omp_int_t)(void);
typedef void (*nl_gomp_barrier_t)(void);
#define NL_TEAM_MAX 64

typedef struct {
    int64_t nb;
    const int64_t *jobs;
    uint8_t *out;
    int64_t *sizes;
    uint32_t *crcs;
    nl_omp_int_t thread_num, num_threads;
    nl_gomp_barrier_t barrier;
    int64_t first[NL_TEAM_MAX + 1]; /* run t: blocks [first[t], first[t + 1]) */
    int64_t total[NL_TEAM_MAX];     /* bytes coded by run t, or a negative error */
    int64_t cpu_ns[NL_TEAM_MAX];    /* CPU time of thread t in the region (t > 0) */
    int team;
} team_job_t;

static __thread scratch_t tl_team = {NULL, 0};

static int64_t job_bound(const int64_t *j) {
    int wb = (int)j[0];
    int64_t n = j[1];
    return (wb == 2 || wb == 4 || wb == 8) && n >= 0 ? nl_bound(wb, n) : 0;
}

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    return clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0 ? (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec : 0;
}

static void team_place(team_job_t *tj, int t, int team) {
    if (t == 0 || t >= team || tj->total[t] <= 0) return;
    int64_t off = 0;
    for (int u = 0; u < team; u++) {
        if (tj->total[u] < 0) return; /* the call fails: nothing to place */
        if (u < t) off += tj->total[u];
    }
    memcpy(tj->out + off, tl_team.buf, (size_t)tj->total[t]);
}

static void team_body(void *arg) {
    team_job_t *tj = (team_job_t *)arg;
    int t = tj->thread_num(), team = tj->num_threads();
    int64_t c0 = t > 0 ? thread_cpu_ns() : 0;
    if (t == 0) { /* the runs, fixed here once the team's size is known */
        if (team > NL_TEAM_MAX) team = NL_TEAM_MAX;
        int64_t all = 0, acc = 0;
        for (int64_t k = 0; k < tj->nb; k++) all += job_bound(tj->jobs + 7 * k);
        int r = 1;
        tj->first[0] = 0;
        for (int64_t k = 0; k < tj->nb && r < team; k++) {
            int64_t before = acc;
            acc += job_bound(tj->jobs + 7 * k);
            for (; r < team && acc * team >= all * r; r++) /* run r starts before or after block k: the nearer */
                tj->first[r] = k > tj->first[r - 1] && all * r - before * team < acc * team - all * r ? k : k + 1;
        }
        for (; r <= team; r++) tj->first[r] = tj->nb;
        tj->team = team;
    }
    tj->barrier();
    team = tj->team;
    if (t < team) {
        int64_t b0 = tj->first[t], b1 = tj->first[t + 1], r = 0;
        if (b1 > b0) {
            int64_t need = 0;
            for (int64_t k = b0; k < b1; k++) need += job_bound(tj->jobs + 7 * k);
            uint8_t *dst = t == 0 ? tj->out : grow(&tl_team, (size_t)need);
            r = dst ? nl_encode_bits_many(b1 - b0, tj->jobs + 7 * b0, dst, need, tj->sizes + b0, tj->crcs + b0)
                    : NL_E_MEM;
        }
        tj->total[t] = r;
    }
    tj->barrier();
    team_place(tj, t, team);
    if (t > 0 && t < NL_TEAM_MAX) tj->cpu_ns[t] = thread_cpu_ns() - c0;
}

int64_t nl_encode_bits_team(int64_t nb, const int64_t *jobs, uint8_t *out, int64_t cap, int64_t *sizes,
                            uint32_t *crcs, void *const *fns, int threads, int64_t *helper_cpu_ns) {
    int64_t need = 0;
    for (int64_t k = 0; k < nb; k++) need += job_bound(jobs + 7 * k);
    if (nb < 0 || cap < need || !fns || !fns[0] || !fns[1] || !fns[2] || !fns[3]) return NL_E_ARG;
    if (threads > NL_TEAM_MAX) threads = NL_TEAM_MAX;
    if (threads < 2 || nb < 2) return nl_encode_bits_many(nb, jobs, out, cap, sizes, crcs);
    team_job_t tj;
    memset(&tj, 0, sizeof tj);
    tj.nb = nb, tj.jobs = jobs, tj.out = out, tj.sizes = sizes, tj.crcs = crcs;
    tj.thread_num = (nl_omp_int_t)fns[1], tj.num_threads = (nl_omp_int_t)fns[2];
    tj.barrier = (nl_gomp_barrier_t)fns[3];
    ((nl_gomp_parallel_t)fns[0])(team_body, &tj, (unsigned)threads, 0);
    int64_t total = 0, err = 0;
    for (int t = 0; t < tj.team; t++) {
        if (helper_cpu_ns) *helper_cpu_ns += tj.cpu_ns[t];
        if (tj.total[t] < 0 && !err) err = tj.total[t];
        total += tj.total[t];
    }
    return err ? err : total;
}

/* The chunk's kind: 0 values, 1 delta (bit 7: stored raw); alpha in *alpha. Negative when not a chunk. */
int nl_info(const uint8_t *chunk, int64_t len, int *alpha) {
    if (len < NL_HEAD || chunk[0] != NL_TAG) return NL_E_HEAD;
    *alpha = (int8_t)chunk[3];
    return chunk[2];
}

static struct PyModuleDef nlcodec_module = {PyModuleDef_HEAD_INIT, "_nlcodec", "netlapse native lane codec (used through ctypes)", -1, NULL};

PyMODINIT_FUNC PyInit__nlcodec(void) { return PyModule_Create(&nlcodec_module); }
