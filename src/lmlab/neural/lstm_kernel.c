/* The compiled part of lmlab's LSTM cell (every Greff et al. variant), float32.
 *
 * lmlab.neural.cells._LSTMLayer calls, per time step, lstm_forward_step / lstm_backward_step for
 * the step's elementwise work (instead of about ten torch elementwise ops, each a Python call and
 * a pass over memory), with the step's matrix product in torch; or, on CPUs with AVX2 and FMA,
 * lstm_forward_seq / lstm_backward_seq, the whole time loop with its products in one call (see
 * there). Also a tiled transpose for the weight gradients. Compiled on first use by
 * lmlab.neural.kernel (cc -O3, with OpenMP and glibc's vector math library libmvec where they
 * exist, so the work is split over torch's threads and the exp calls are vectorised); when no
 * compiler is available lmlab uses the torch-op path, which computes the same thing.
 *
 * Layout (all row-major, contiguous): A [T, B, G*H] holds the gate activations of every step in
 * packed order (o, i, f, z minus absent gates); C [T+1, B, H] the cells (C[0] = c0); S [T, B, H]
 * sigma(-2 c_t), so tanh(c_t) = 1 - 2 S (absent for noaf); OUT [T, B, H] the outputs h_t,
 * preceded in memory by h0 [B, H] (for the backward pass); DG [T, B, G*H] the gradients of the
 * pre-activations. The equations are those of the module docstring of lmlab/neural/cells.py;
 * tanh(u) is computed as 1 - 2 / (1 + exp(2u)), which is exact in real arithmetic and saturates
 * correctly at +-inf.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#define OMP(directive) _Pragma(#directive)
#else
#define OMP(directive)
#endif

#ifdef LMLAB_LIBMVEC
/* Let the vectoriser call glibc's SIMD expf (libmvec); math.h declares it only under
 * -ffast-math, which would also drop NaN/Inf semantics the trainer's NaN rollback relies on. */
__attribute__((simd("notinbranch"))) extern float expf(float);
#endif

enum {
    HAS_I = 1, HAS_F = 2, HAS_O = 4, CIFG = 8, Z_TANH = 16, H_TANH = 32, PEEP = 64, HAS_DA = 128
};

typedef struct {
    int B, H, G, flags;          /* flags: the variant (HAS_DA is per call) */
    int co, ci, cf, cz;          /* column offset of each gate in a row of A / DG, -1 if absent */
    float *A, *C, *S, *OUT, *DG;
    const float *p_o, *p_i, *p_f; /* peephole vectors [H], NULL if absent */
    float *dc;                   /* [B, H]: gradient w.r.t. the cell, carried backwards */
    float *db;                   /* [G*H]: backwards, the bias gradient is accumulated here */
    float *dp_o, *dp_i, *dp_f;   /* [H] each (NULL if absent): the peephole gradients, likewise */
    const float *Wgg, *a0;       /* fgr (else NULL), for the sequence loop: W_gg [3H, 3H] and the
                                  * gate activations o, i, f before step 0 [B, 3H] (NULL: none) */
    float *da;                   /* fgr, backwards: [B, 3H] gradient w.r.t. the previous step's
                                  * o, i, f (carried between steps like dc) */
} lstm_plan;

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float tanh_(float x) { return 1.0f - 2.0f / (1.0f + expf(2.0f * x)); }

/* One step forward, units [j0, j1) of every row, for a fixed variant: F is a compile-time
 * constant in every instantiation, so the branches fold away and the loop over j vectorises. */
static inline __attribute__((always_inline)) void
forward_rows(const lstm_plan *P, int t, const float *g, int b0, int b1, int j0, int j1,
             const int F)
{
    const int B = P->B, H = P->H, GH = P->G * H;
    for (int b = b0; b < b1; b++) {
        const float *gb = g + (size_t)b * GH;
        float *a = P->A + ((size_t)t * B + b) * GH;
        const float *cp = P->C + ((size_t)t * B + b) * H;
        float *cn = P->C + ((size_t)(t + 1) * B + b) * H;
        float *s = (F & H_TANH) ? P->S + ((size_t)t * B + b) * H : NULL;
        float *h = P->OUT + ((size_t)t * B + b) * H;
        const float *p_o = P->p_o, *p_i = P->p_i, *p_f = P->p_f;
        const int co = P->co, ci = P->ci, cf = P->cf, cz = P->cz;
#pragma GCC ivdep
        for (int j = j0; j < j1; j++) {
            float i = 1.0f, f = 1.0f, z, c, tc, o = 1.0f;
            if (F & HAS_I) {
                float u = gb[ci + j];
                if (F & PEEP) u += p_i[j] * cp[j];
                i = sigm(u);
                a[ci + j] = i;
            }
            if (F & HAS_F) {
                float u = gb[cf + j];
                if (F & PEEP) u += p_f[j] * cp[j];
                f = sigm(u);
                a[cf + j] = f;
            }
            z = (F & Z_TANH) ? tanh_(gb[cz + j]) : gb[cz + j];
            a[cz + j] = z;
            if (F & CIFG)
                c = cp[j] + i * (z - cp[j]);
            else
                c = f * cp[j] + i * z;
            cn[j] = c;
            if (F & H_TANH) {
                float sv = 1.0f / (1.0f + expf(2.0f * c));
                s[j] = sv;
                tc = 1.0f - 2.0f * sv;
            } else {
                tc = c;
            }
            if (F & HAS_O) {
                float u = gb[co + j];
                if (F & PEEP) u += p_o[j] * c;
                o = sigm(u);
                a[co + j] = o;
            }
            h[j] = o * tc;
        }
    }
}

/* A sigmoid gate's share backwards: d is the gradient w.r.t. its activation g; the gradient
 * w.r.t. its pre-activation goes to *dg and is added to the bias gradient *db, and returned. */
static inline __attribute__((always_inline)) float
sigmoid_grad(float d, float g, float *dg, float *db)
{
    d *= g * (1.0f - g);
    *dg = d;
    *db += d;
    return d;
}

/* One step backward, units [j0, j1): dh [B, H] is the whole gradient w.r.t. h_t; da [B, 3H]
 * (fgr, HAS_DA) the gradient w.r.t. the gate activations (o, i, f) of this step from the next
 * step's gate recurrence. Writes DG[t], replaces P->dc (w.r.t. c_t) by the gradient w.r.t.
 * c_{t-1}, and adds this step's share of the bias and peephole gradients to P->db, P->dp_*
 * (summing them here saves two more passes over DG afterwards). */
static inline __attribute__((always_inline)) void
backward_rows(const lstm_plan *P, int t, const float *dh, const float *da, int b0, int b1,
              int j0, int j1, const int F)
{
    const int B = P->B, H = P->H, GH = P->G * H;
    for (int b = b0; b < b1; b++) {
        const float *a = P->A + ((size_t)t * B + b) * GH;
        const float *cp = P->C + ((size_t)t * B + b) * H;
        const float *cn = P->C + ((size_t)(t + 1) * B + b) * H;
        const float *s = (F & H_TANH) ? P->S + ((size_t)t * B + b) * H : NULL;
        const float *dhb = dh + (size_t)b * H;
        const float *dab = (F & HAS_DA) ? da + (size_t)b * 3 * H : NULL;
        float *dg = P->DG + ((size_t)t * B + b) * GH;
        float *dc = P->dc + (size_t)b * H;
        float *db = P->db, *dp_o = P->dp_o, *dp_i = P->dp_i, *dp_f = P->dp_f;
        const float *p_o = P->p_o, *p_i = P->p_i, *p_f = P->p_f;
        const int co = P->co, ci = P->ci, cf = P->cf, cz = P->cz;
#pragma GCC ivdep
        for (int j = j0; j < j1; j++) {
            const float tc = (F & H_TANH) ? 1.0f - 2.0f * s[j] : cn[j];
            const float o = (F & HAS_O) ? a[co + j] : 1.0f;
            const float i = (F & HAS_I) ? a[ci + j] : 1.0f;
            const float z = a[cz + j];
            float dct = dc[j] + dhb[j] * o * ((F & H_TANH) ? 1.0f - tc * tc : 1.0f);
            if (F & HAS_O) {
                const float d = sigmoid_grad(dhb[j] * tc + ((F & HAS_DA) ? dab[j] : 0.0f), o,
                                             dg + co + j, db + co + j);
                if (F & PEEP) {
                    dct += d * p_o[j];
                    dp_o[j] += d * cn[j];
                }
            }
            float dcp;
            if (F & HAS_F) {
                const float f = a[cf + j];
                dcp = dct * f;
            } else if (F & CIFG) {
                dcp = dct * (1.0f - i);
            } else {
                dcp = dct;
            }
            if (F & HAS_I) {
                const float d = sigmoid_grad(dct * ((F & CIFG) ? z - cp[j] : z)
                                             + ((F & HAS_DA) ? dab[H + j] : 0.0f),
                                             i, dg + ci + j, db + ci + j);
                if (F & PEEP) {
                    dcp += d * p_i[j];
                    dp_i[j] += d * cp[j];
                }
            }
            if (F & HAS_F) {
                const float d = sigmoid_grad(dct * cp[j] + ((F & HAS_DA) ? dab[2 * H + j] : 0.0f),
                                             a[cf + j], dg + cf + j, db + cf + j);
                if (F & PEEP) {
                    dcp += d * p_f[j];
                    dp_f[j] += d * cp[j];
                }
            }
            const float dz = dct * i, dzb = (F & Z_TANH) ? dz * (1.0f - z * z) : dz;
            dg[cz + j] = dzb;
            db[cz + j] += dzb;
            dc[j] = dcp;
        }
    }
}

/* The flags of the nine variants (lmlab.neural.cells.VARIANTS); fgr adds HAS_DA when carrying. */
#define V_VANILLA (HAS_I | HAS_F | HAS_O | Z_TANH | H_TANH | PEEP)
#define V_NIG (V_VANILLA & ~HAS_I)
#define V_NFG (V_VANILLA & ~HAS_F)
#define V_NOG (V_VANILLA & ~HAS_O)
#define V_NIAF (V_VANILLA & ~Z_TANH)
#define V_NOAF (V_VANILLA & ~H_TANH)
#define V_NP (V_VANILLA & ~PEEP)
#define V_CIFG ((V_VANILLA & ~HAS_F) | CIFG)

#define DISPATCH(CALL, flags)                                                   \
    switch (flags) {                                                          \
    case V_VANILLA: CALL(V_VANILLA); break;                                   \
    case V_VANILLA | HAS_DA: CALL(V_VANILLA | HAS_DA); break;                 \
    case V_NIG: CALL(V_NIG); break;                                           \
    case V_NFG: CALL(V_NFG); break;                                           \
    case V_NOG: CALL(V_NOG); break;                                           \
    case V_NIAF: CALL(V_NIAF); break;                                         \
    case V_NOAF: CALL(V_NOAF); break;                                         \
    case V_NP: CALL(V_NP); break;                                             \
    case V_CIFG: CALL(V_CIFG); break;                                         \
    default: break;                                                           \
    }

static int known(int flags)
{
    switch (flags) {
    case V_VANILLA: case V_VANILLA | HAS_DA: case V_NIG: case V_NFG: case V_NOG: case V_NIAF:
    case V_NOAF: case V_NP: case V_CIFG: return 1;
    default: return 0;
    }
}

/* Thread k of nt owns units [c0, c1) of H, the same in every step and loop: an equal share of the
 * groups of 8 (maybe none). (Shares of whole 16-unit tiles left one thread with up to a tile more
 * than the other: 7 of 13 tiles at H = 200.) */
static void own_columns(int H, int nt, int k, int *c0, int *c1)
{
    const long groups = (H + 7) / 8;
    const int a = (int)(8 * (groups * k / nt)), b = (int)(8 * (groups * (k + 1) / nt));
    *c0 = a < H ? a : H;
    *c1 = b < H ? b : H;
}
#ifdef _OPENMP
#define OWN_COLUMNS(H, c0, c1) own_columns(H, omp_get_num_threads(), omp_get_thread_num(), &c0, &c1)
#else
#define OWN_COLUMNS(H, c0, c1) own_columns(H, 1, 0, &c0, &c1)
#endif

/* One step, its units split over nthreads threads (worth it from B*H ~ 10^4: the parallel region
 * costs a few microseconds). Returns 0, or -1 for a flag combination this file does not know. */
int lstm_forward_step(const lstm_plan *P, int t, const float *g, int nthreads)
{
    if (!known(P->flags) || nthreads < 1) return -1;
    OMP(omp parallel num_threads(nthreads) if (nthreads > 1))
    {
        int j0, j1;
        OWN_COLUMNS(P->H, j0, j1);
#define FWD(F) forward_rows(P, t, g, 0, P->B, j0, j1, F)
        if (j1 > j0) DISPATCH(FWD, P->flags)
#undef FWD
    }
    return 0;
}

int lstm_backward_step(const lstm_plan *P, int t, const float *dh, const float *da, int nthreads)
{
    const int flags = P->flags | (da ? HAS_DA : 0);
    if (!known(flags) || nthreads < 1) return -1;
    OMP(omp parallel num_threads(nthreads) if (nthreads > 1))
    {
        int j0, j1;
        OWN_COLUMNS(P->H, j0, j1);
#define BWD(F) backward_rows(P, t, dh, da, 0, P->B, j0, j1, F)
        if (j1 > j0) DISPATCH(BWD, flags)
#undef BWD
    }
    return 0;
}

/* ---- The whole time loop in one call ------------------------------------------------------
 * Why: the per-step products of a word-level LM are small ([B, H] x [H, G*H] with B = 20): a
 * BLAS call splitting one of them over the threads spends much of its time synchronising, and
 * driving each step from Python adds a few microseconds per call on top. Here each thread owns a
 * fixed part of every step (thread_share, below): rows of the batch of its own with all their
 * units where the packed weight fits in L2, else a contiguous block of units (own_columns) of
 * every row with one barrier per step, which hands the complete h_t (forward) or dG[t]
 * (backward) to the next products. It cuts its units into tiles of 16 and for each tile does
 * the product for the tile's columns of every gate block and then the tile's elementwise work.
 * (Tiles handed out dynamically measured slower: panels moving between the cores' caches, and a
 * second barrier per step backwards.) The recurrent weight is packed once per
 * call (work: G * H8 * H floats, from the caller) into panels of 16 columns (8 for a last tile of
 * at most 8), [K][16] each, that a step streams in order; the products use register tiles of up
 * to MAX_ROWS x 16 (below). In benchmarks/lstm_cells.py's setting this is 25-30% faster per step
 * than MKL's sgemm called on the same slices. The vector code needs AVX2 + FMA (-march=native on
 * such a CPU); elsewhere lstm_loop_available() is 0 and lmlab drives the per-step functions above
 * from Python instead. fgr adds its gate recurrence to the same loop (W_gg packed the same way).
 * Without OpenMP the loop runs on one thread. */
#if defined(__AVX2__) && defined(__FMA__)
#define LMLAB_LOOP 1

typedef float v8 __attribute__((vector_size(32)));

/* Rows per register tile: R x NV accumulators plus NV panel vectors and a broadcast must fit the
 * vector registers: 16 with AVX2 (R <= 5 at NV = 2), 32 where AVX-512VL lets this 256-bit code
 * use ymm16-31 (R <= 10). Taller tiles stream each panel fewer times per step: at B = 20, two
 * tiles of 10 instead of four of 5 made the loop 4-9% faster at H = 200 and 14% at H = 650. */
#ifdef __AVX512VL__
#define MAX_ROWS 10
#else
#define MAX_ROWS 5
#endif

/* How far ahead, in rows k of a panel, tile() asks for the panel's memory (6 KB at 16 columns).
 * Where the packed weights do not fit in L2 they stream from L3 or memory at every step (fgr's
 * W_gg, 15 MB at H = 650; W_hh from H = 400 on), and the loop waited for them. Measured at
 * H = 650, B = 20 on 2 threads, prefetching 96 rows ahead made fgr's time loop alone 1.35-1.5x
 * faster, forward and backward (24 rows: 1.3x; 128 or 192: no better than 96), and fgr's whole
 * training step 1.09x faster; vanilla's loop alone 0-4%, its training step not measurably. Where
 * the weights sit in L2 (H = 200) neither changed measurably. The address is computed as an
 * integer: it runs past the panel near its end, which is harmless for a prefetch but not for C
 * pointer arithmetic. */
#define PREFETCH_ROWS 96

/* C[R, ncols] += X[R, K] Pt[K, 8 NV] (its first ncols columns), R <= MAX_ROWS, NV = 1 or 2
 * vectors; X rows ldx apart. */
static inline __attribute__((always_inline)) void
tile(int K, const float *X, int ldx, const float *Pt, float *C, int ldc, int ncols, const int R,
     const int NV)
{
    v8 acc[MAX_ROWS][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = (v8){0};
    for (int k = 0; k < K; k++) {
        v8 y[2];
        for (int v = 0; v < NV; v++) memcpy(&y[v], Pt + (size_t)8 * NV * k + 8 * v, sizeof y[v]);
        __builtin_prefetch((const void *)((uintptr_t)Pt
                                          + sizeof(float) * 8 * NV * (size_t)(k + PREFETCH_ROWS)));
        for (int r = 0; r < R; r++) {
            const float x = X[(size_t)r * ldx + k];
            for (int v = 0; v < NV; v++) acc[r][v] += x * y[v];
        }
    }
    for (int r = 0; r < R; r++) {
        float row[16];
        memcpy(row, acc[r], (size_t)NV * sizeof acc[r][0]);
        for (int c = 0; c < ncols; c++) C[(size_t)r * ldc + c] += row[c];
    }
}

/* C[B, ncols] += X[B, K] Pt for one panel Pt [K][8 NV], in as few row tiles as MAX_ROWS allows,
 * of equal height within one (B = 20: 10 + 10; B = 16: 8 + 8). */
static inline __attribute__((always_inline)) void
panel_rows(int B, int ncols, int K, const float *X, int ldx, const float *Pt, float *C, int ldc,
           const int NV)
{
    for (int b = 0; b < B;) {
        const int left = B - b, tiles = (left + MAX_ROWS - 1) / MAX_ROWS;
        const int R = (left + tiles - 1) / tiles;
        const float *x = X + (size_t)b * ldx;
        float *c = C + (size_t)b * ldc;
        switch (R) {
#if MAX_ROWS > 5
        case 10: tile(K, x, ldx, Pt, c, ldc, ncols, 10, NV); break;
        case 9: tile(K, x, ldx, Pt, c, ldc, ncols, 9, NV); break;
        case 8: tile(K, x, ldx, Pt, c, ldc, ncols, 8, NV); break;
        case 7: tile(K, x, ldx, Pt, c, ldc, ncols, 7, NV); break;
        case 6: tile(K, x, ldx, Pt, c, ldc, ncols, 6, NV); break;
#endif
        case 5: tile(K, x, ldx, Pt, c, ldc, ncols, 5, NV); break;
        case 4: tile(K, x, ldx, Pt, c, ldc, ncols, 4, NV); break;
        case 3: tile(K, x, ldx, Pt, c, ldc, ncols, 3, NV); break;
        case 2: tile(K, x, ldx, Pt, c, ldc, ncols, 2, NV); break;
        default: tile(K, x, ldx, Pt, c, ldc, ncols, 1, NV); break;
        }
        b += R;
    }
}

/* Panels are 16 columns wide, or 8 where at most 8 columns are left (panel_width). */
static inline int panel_width(int ncols) { return ncols > 8 ? 16 : 8; }

/* C[B, ncols] += X[B, K] Pt, Pt the panel [K][panel_width(ncols)] of those columns. */
static void panel_product(int B, int ncols, int K, const float *X, int ldx, const float *Pt,
                          float *C, int ldc)
{
    if (ncols > 8)
        panel_rows(B, ncols, K, X, ldx, Pt, C, ldc, 2);
    else
        panel_rows(B, ncols, K, X, ldx, Pt, C, ldc, 1);
}

/* Pack columns [j0, j0 + w) (zero from n on), w = panel_width(ncols), of a K-row matrix into the
 * panel Pt[K][w], where column c of row k is at Y[k * row_step + c * col_step]: (H, 1) for W,
 * (1, H) for W^T. */
static void pack_panel(const float *Y, size_t row_step, size_t col_step, int K, int n, int j0,
                       int ncols, float *Pt)
{
    const int w = panel_width(ncols);
    for (int k = 0; k < K; k++)
        for (int c = 0; c < w; c++) {
            const int col = j0 + c;
            Pt[(size_t)k * w + c] = col < n ? Y[(size_t)k * row_step + (size_t)col * col_step]
                                            : 0.0f;
        }
}

/* A thread walks its units [c0, c1) (own_columns) in tiles of 16, the last maybe 8 or fewer. */
#define TILES(j0, n, c0, c1) \
    for (int j0 = c0, n = c1 - c0 < 16 ? c1 - c0 : 16; j0 < c1; \
         j0 += 16, n = c1 - j0 < 16 ? c1 - j0 : 16)
#else
#define LMLAB_LOOP 0
#endif

int lstm_loop_available(void) { return LMLAB_LOOP; }

#if LMLAB_LOOP
/* How the threads share a sequence loop. Rows of the batch are independent through the whole
 * sequence (a row's h_t, c_t and gradients depend only on that row's earlier steps), so each
 * thread can take rows [b0, b1) of its own, with all units [c0, c1) = [0, H), and run its steps
 * without waiting for the others: no barrier per step, and equal shares (at H = 200 units split
 * 96 : 104). But then every thread streams all of W_hh each step instead of its own part, which
 * pays only while W_hh stays in each core's L2 cache: measured at B = 20 on 2 threads (1 MB L2),
 * the loop was 4-7% faster at H = 200 (W_hh 0.64 MB), and slower from H = 400 on (2.6 MB: 7%
 * forwards; 650: 5-10%, fgr 20-25%). So rows are split where W_hh (packed) takes at most 3/4 of
 * L2 and the batch has at least MIN_SPLIT_ROWS rows per thread; otherwise every thread takes every
 * row and units [c0, c1) of them (own_columns), and a barrier per step hands on the complete h_t
 * (dG[t] backwards). The threads pack the weights together, each the panels of its units
 * [p0, p1): its own units where it alone uses them, else an equal share of the 16-unit tiles
 * (panels must start where the steps' tiles do), and then wait for each other once. */
#define MIN_SPLIT_ROWS 4

typedef struct {
    int b0, b1, c0, c1, p0, p1;
    int thread, group, groups; /* this thread, its row group, and how many groups there are */
} share;

/* The L2 cache of one core in bytes (512 KB where the C library does not say). */
static long l2_bytes(void)
{
    static long bytes; /* 0: not asked yet (asking twice does no harm) */
    if (!bytes) {
        bytes = 512L * 1024;
#ifdef _SC_LEVEL2_CACHE_SIZE
        const long n = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (n > 0) bytes = n;
#endif
    }
    return bytes;
}

/* Whether nt threads split the B rows (else the units) of a loop over packed weights of that
 * many floats. */
static int split_rows(int B, int nt, size_t weight_floats)
{
    return nt > 1 && B >= MIN_SPLIT_ROWS * nt
        && weight_floats * sizeof(float) <= (size_t)l2_bytes() / 4 * 3;
}

static share thread_share(int B, int H, int nt, int k, int rows)
{
    share s;
    s.thread = k;
    s.groups = rows ? nt : 1;
    if (rows) {
        const int tiles = (H + 15) / 16, t0 = tiles * k / nt, t1 = tiles * (k + 1) / nt;
        s.group = k;
        s.b0 = (int)((long)B * k / nt);
        s.b1 = (int)((long)B * (k + 1) / nt);
        s.c0 = 0;
        s.c1 = H;
        s.p0 = 16 * t0 < H ? 16 * t0 : H;
        s.p1 = 16 * t1 < H ? 16 * t1 : H;
    } else {
        s.group = 0;
        s.b0 = 0;
        s.b1 = B;
        own_columns(H, nt, k, &s.c0, &s.c1);
        s.p0 = s.c0;
        s.p1 = s.c1;
    }
    return s;
}
#ifdef _OPENMP
#define THREAD_SHARE(B, H, rows) \
    thread_share(B, H, omp_get_num_threads(), omp_get_thread_num(), rows)
#else
#define THREAD_SHARE(B, H, rows) thread_share(B, H, 1, 0, rows)
#endif
#endif

/* Forward through T steps. A[t] holds the input projections (x_t W_ih^T + b) on entry and the
 * activations on return; W: W_hh [G*H, H] row-major; h0, c0 [B, H], which it also copies to
 * their places before OUT and at C[0] (here, rather than as two more torch calls); work:
 * (G + 9 fgr) * H8 * H floats, H8 = H rounded up to a multiple of 8. Returns 0, or -1 for
 * unknown flags or no vector code. */
int lstm_forward_seq(const lstm_plan *P, int T, const float *h0, const float *c0, const float *W,
                     float *work, int nthreads)
{
    if (!known(P->flags) || nthreads < 1 || !LMLAB_LOOP) return -1;
#if LMLAB_LOOP
    const int B = P->B, H = P->H, G = P->G, GH = G * H, H3 = 3 * H, H8 = (H + 7) / 8 * 8;
    /* The panel of gate g's units [j0, j0 + 16) is at work + (g * H8 + j0) * H (H rows), so a
     * thread's panels lie together; fgr: W_gg^T's at gg + (g * H8 + j0) * 3H (3H rows). */
    float *gg = work + (size_t)G * H8 * H;
    const int rows = split_rows(B, nthreads, (size_t)G * H8 * H);
    OMP(omp parallel num_threads(nthreads))
    {
        const share s = THREAD_SHARE(B, H, rows);
        /* Gate g's column j of W^T is W's row g*H + j. Each thread packs its share of the
         * panels (they then stay in its cache where it alone uses them). */
        TILES(j0, n, s.p0, s.p1) {
            for (int g = 0; g < G; g++)
                pack_panel(W + (size_t)g * H * H, 1, H, H, H, j0, n,
                           work + ((size_t)g * H8 + j0) * H);
            for (int g = 0; P->Wgg && g < 3; g++)
                pack_panel(P->Wgg + (size_t)g * H * H3, 1, H3, H3, H, j0, n,
                           gg + ((size_t)g * H8 + j0) * H3);
        }
        if (s.groups > 1) {
            OMP(omp barrier)
        }
        const int b0 = s.b0, nb = s.b1 - s.b0;
        for (int b = b0; b < s.b1; b++) { /* this thread's part of h0 and c0, the part it reads */
            const size_t at = (size_t)b * H + s.c0, n = (size_t)(s.c1 - s.c0) * sizeof(float);
            memcpy(P->OUT - (size_t)B * H + at, h0 + at, n);
            memcpy(P->C + at, c0 + at, n);
        }
        for (int t = 0; t < T; t++) {
            const float *h = (t ? P->OUT + (size_t)(t - 1) * B * H : h0) + (size_t)b0 * H;
            float *a = P->A + (size_t)t * B * GH;
            /* fgr: the previous step's activations o, i, f (complete after the last barrier) */
            const float *prev = !P->Wgg ? NULL : t ? a - (size_t)B * GH : P->a0;
            const int ld_prev = t ? GH : H3;
            TILES(j0, n, s.c0, s.c1) {
                float *ab = a + (size_t)b0 * GH + j0;
                for (int g = 0; g < G; g++)
                    panel_product(nb, n, H, h, H, work + ((size_t)g * H8 + j0) * H, ab + g * H,
                                  GH);
                for (int g = 0; prev && g < 3; g++)
                    panel_product(nb, n, H3, prev + (size_t)b0 * ld_prev, ld_prev,
                                  gg + ((size_t)g * H8 + j0) * H3, ab + g * H, GH);
                /* a whole tile's loop has a constant trip count: vectorised without remainder */
#define FWD(F) forward_rows(P, t, a, s.b0, s.b1, j0, j0 + n, F)
#define FWD16(F) forward_rows(P, t, a, s.b0, s.b1, j0, j0 + 16, F)
                if (n == 16) {
                    DISPATCH(FWD16, P->flags)
                } else {
                    DISPATCH(FWD, P->flags)
                }
#undef FWD
#undef FWD16
            }
            if (s.groups == 1) {
                OMP(omp barrier) /* h_t is complete */
            }
        }
    }
#else
    (void)P; (void)T; (void)h0; (void)c0; (void)W; (void)work;
#endif
    return 0;
}

/* Backward through T steps: dh [B, H] holds the gradient w.r.t. h_{T-1} on entry (d_out[T-1]
 * plus what came from later chunks) and, if need_dh0, the gradient w.r.t. h0 on return; d_out
 * [T, B, H] the gradients w.r.t. the outputs; P->dc the gradient w.r.t. c_{T-1} on entry and c0 on
 * return; work as for the forward. fgr: P->da holds the gradient w.r.t. the last step's o, i, f
 * on entry if da_in, and w.r.t. a0 on return if need_da0. Per step: dG[t] tile by tile, then
 * (once it is complete) dh_{t-1} = d_out[t-1] + dG[t] W (and, fgr, da_{t-1} = dG[t][:, :3H] W_gg)
 * tile by tile. Returns as lstm_forward_seq, or -2 when memory for the bias and peephole
 * gradients of the row groups runs out. */
int lstm_backward_seq(const lstm_plan *P, int T, float *dh, const float *d_out, const float *W,
                      float *work, int nthreads, int need_dh0, int da_in, int need_da0)
{
    if (!known(P->flags) || nthreads < 1 || !LMLAB_LOOP) return -1;
    if (P->Wgg && !known(P->flags | HAS_DA)) return -1;
#if LMLAB_LOOP
    const int B = P->B, H = P->H, GH = P->G * H, H3 = 3 * H, H8 = (H + 7) / 8 * 8;
    /* the panel of dh's units [j0, j0 + 16), W[:, j0 : j0 + 16], is at work + j0 * GH; fgr:
     * W_gg's columns g*H + j0 ... at gg + (g * H8 + j0) * 3H */
    float *gg = work + (size_t)H8 * GH;
    const int need_da0_ = P->Wgg && need_da0;
    /* Row groups other than the first add up their bias and peephole gradients apart (GH + 3H
     * floats each), into P->db and P->dp_* at the end: no two threads add to the same sums. */
    const int rows = split_rows(B, nthreads, (size_t)H8 * GH);
    const size_t acc_len = (size_t)GH + 3 * (size_t)H;
    float *acc = rows ? calloc((size_t)(nthreads - 1) * acc_len, sizeof(float)) : NULL;
    if (rows && !acc) return -2;
    int groups = 1;
    OMP(omp parallel num_threads(nthreads))
    {
        const share s = THREAD_SHARE(B, H, rows);
        lstm_plan Q = *P; /* this thread's view: its row group's own gradient sums */
        if (s.group > 0) {
            float *mine = acc + (size_t)(s.group - 1) * acc_len;
            Q.db = mine;
            Q.dp_o = P->dp_o ? mine + GH : NULL;
            Q.dp_i = P->dp_i ? mine + GH + H : NULL;
            Q.dp_f = P->dp_f ? mine + GH + 2 * H : NULL;
        }
        if (s.thread == 0) groups = s.groups;
        TILES(j0, n, s.p0, s.p1) {
            pack_panel(W, H, 1, GH, H, j0, n, work + (size_t)j0 * GH);
            for (int g = 0; P->Wgg && g < 3; g++)
                pack_panel(P->Wgg + (size_t)g * H, H3, 1, H3, H, j0, n,
                           gg + ((size_t)g * H8 + j0) * H3);
        }
        if (s.groups > 1) {
            OMP(omp barrier)
        }
        const int b0 = s.b0, b1 = s.b1, nb = b1 - b0;
        for (int t = T - 1; t >= 0; t--) {
            const float *da = P->Wgg && (t < T - 1 || da_in) ? P->da : NULL;
            const int flags = P->flags | (da ? HAS_DA : 0);
            TILES(j0, n, s.c0, s.c1) {
#define BWD(F) backward_rows(&Q, t, dh, da, b0, b1, j0, j0 + n, F)
#define BWD16(F) backward_rows(&Q, t, dh, da, b0, b1, j0, j0 + 16, F)
                if (n == 16) {
                    DISPATCH(BWD16, flags)
                } else {
                    DISPATCH(BWD, flags)
                }
#undef BWD
#undef BWD16
            }
            if (s.groups == 1) {
                OMP(omp barrier) /* dG[t] is complete */
            }
            if (t == 0 && !need_dh0 && !need_da0_) break;
            const float *dg = P->DG + ((size_t)t * B + b0) * GH;
            TILES(j0, n, s.c0, s.c1) {
                for (int b = b0; t > 0 || need_dh0 ? b < b1 : 0; b++) {
                    float *row = dh + (size_t)b * H + j0;
                    if (t > 0)
                        memcpy(row, d_out + ((size_t)(t - 1) * B + b) * H + j0,
                               (size_t)n * sizeof(float));
                    else
                        memset(row, 0, (size_t)n * sizeof(float));
                }
                if (t > 0 || need_dh0)
                    panel_product(nb, n, GH, dg, GH, work + (size_t)j0 * GH,
                                  dh + (size_t)b0 * H + j0, H);
                for (int g = 0; P->Wgg && (t > 0 || need_da0_) && g < 3; g++) {
                    for (int b = b0; b < b1; b++)
                        memset(P->da + (size_t)b * H3 + g * H + j0, 0, (size_t)n * sizeof(float));
                    panel_product(nb, n, H3, dg, GH, gg + ((size_t)g * H8 + j0) * H3,
                                  P->da + (size_t)b0 * H3 + g * H + j0, H3);
                }
            }  /* no barrier: the next step reads only this thread's own part of dh and da */
        }
    }
    for (int r = 1; r < groups; r++) {
        const float *mine = acc + (size_t)(r - 1) * acc_len;
        for (int k = 0; k < GH; k++) P->db[k] += mine[k];
        float *dp[3] = {P->dp_o, P->dp_i, P->dp_f};
        for (int q = 0; q < 3; q++)
            for (int j = 0; dp[q] && j < H; j++) dp[q][j] += mine[GH + q * H + j];
    }
    free(acc);
#else
    (void)P; (void)T; (void)dh; (void)d_out; (void)W; (void)work; (void)need_dh0; (void)da_in;
    (void)need_da0;
#endif
    return 0;
}

/* dst [cols, rows] = src [rows, cols]^T, in 32 x 32 tiles (4 KB each way: both sides stay in L1).
 * The weight gradients need dG^T contiguous (oneDNN's product wants it so); torch's strided copy
 * of a transpose that size is several times slower (5 ms for [700, 2600] here). */
void transpose(const float *src, int rows, int cols, float *dst, int nthreads)
{
    const int nr = (rows + 31) / 32, nc = (cols + 31) / 32;
    OMP(omp parallel for num_threads(nthreads) schedule(static))
    for (int tile = 0; tile < nr * nc; tile++) {
        const int r0 = tile / nc * 32, c0 = tile % nc * 32;
        const int r1 = r0 + 32 < rows ? r0 + 32 : rows, c1 = c0 + 32 < cols ? c0 + 32 : cols;
        for (int c = c0; c < c1; c++)
            for (int r = r0; r < r1; r++)
                dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
    }
    (void)nthreads;
}

int lstm_kernel_version(void) { return 12; }
