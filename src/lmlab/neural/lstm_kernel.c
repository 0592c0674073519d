/* Per-step elementwise work of lmlab's LSTM cell (every Greff et al. variant), float32.
 *
 * lmlab.neural.cells._LSTMLayer keeps the matrix products in torch and calls one of these two
 * functions per time step, instead of about ten torch elementwise ops (each a Python call and a
 * pass over memory). Compiled on first use by lmlab.neural.kernel (cc -O3, plus glibc's vector
 * math library libmvec where it exists so that the exp calls are vectorised); when no compiler is
 * available lmlab uses the torch-op path, which computes the same thing.
 *
 * Layout (all row-major, contiguous): A [T, B, G*H] holds the gate activations of every step in
 * packed order (o, i, f, z minus absent gates); C [T+1, B, H] the cells (C[0] = c0); S [T, B, H]
 * sigma(-2 c_t), so tanh(c_t) = 1 - 2 S (absent for noaf); OUT [T, B, H] the outputs h_t;
 * DG [T, B, G*H] the gradients of the pre-activations. The equations are those of the module
 * docstring of lmlab/neural/cells.py; tanh(u) is computed as 1 - 2 / (1 + exp(2u)), which is
 * exact in real arithmetic and saturates correctly at +-inf.
 */
#include <math.h>
#include <stddef.h>

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
} lstm_plan;

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float tanh_(float x) { return 1.0f - 2.0f / (1.0f + expf(2.0f * x)); }

/* One step forward for a fixed variant: F is a compile-time constant in every instantiation,
 * so the branches fold away and the loop over j vectorises. */
static inline __attribute__((always_inline)) void
forward_rows(const lstm_plan *P, int t, const float *g, const int F)
{
    const int B = P->B, H = P->H, GH = P->G * H;
    for (int b = 0; b < B; b++) {
        const float *gb = g + (size_t)b * GH;
        float *a = P->A + ((size_t)t * B + b) * GH;
        const float *cp = P->C + ((size_t)t * B + b) * H;
        float *cn = P->C + ((size_t)(t + 1) * B + b) * H;
        float *s = (F & H_TANH) ? P->S + ((size_t)t * B + b) * H : NULL;
        float *h = P->OUT + ((size_t)t * B + b) * H;
        const float *p_o = P->p_o, *p_i = P->p_i, *p_f = P->p_f;
        const int co = P->co, ci = P->ci, cf = P->cf, cz = P->cz;
#pragma GCC ivdep
        for (int j = 0; j < H; j++) {
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

/* One step backward: dh [B, H] is the whole gradient w.r.t. h_t; da [B, 3H] (fgr, HAS_DA) the
 * gradient w.r.t. the gate activations (o, i, f) of this step from the next step's gate
 * recurrence. Writes DG[t] and replaces P->dc (w.r.t. c_t) by the gradient w.r.t. c_{t-1}. */
static inline __attribute__((always_inline)) void
backward_rows(const lstm_plan *P, int t, const float *dh, const float *da, const int F)
{
    const int B = P->B, H = P->H, GH = P->G * H;
    for (int b = 0; b < B; b++) {
        const float *a = P->A + ((size_t)t * B + b) * GH;
        const float *cp = P->C + ((size_t)t * B + b) * H;
        const float *cn = P->C + ((size_t)(t + 1) * B + b) * H;
        const float *s = (F & H_TANH) ? P->S + ((size_t)t * B + b) * H : NULL;
        const float *dhb = dh + (size_t)b * H;
        const float *dab = (F & HAS_DA) ? da + (size_t)b * 3 * H : NULL;
        float *dg = P->DG + ((size_t)t * B + b) * GH;
        float *dc = P->dc + (size_t)b * H;
        const float *p_o = P->p_o, *p_i = P->p_i, *p_f = P->p_f;
        const int co = P->co, ci = P->ci, cf = P->cf, cz = P->cz;
#pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            const float tc = (F & H_TANH) ? 1.0f - 2.0f * s[j] : cn[j];
            const float o = (F & HAS_O) ? a[co + j] : 1.0f;
            const float i = (F & HAS_I) ? a[ci + j] : 1.0f;
            const float z = a[cz + j];
            float dct = dc[j] + dhb[j] * o * ((F & H_TANH) ? 1.0f - tc * tc : 1.0f);
            if (F & HAS_O) {
                float d = dhb[j] * tc;
                if (F & HAS_DA) d += dab[j];
                d *= o * (1.0f - o);
                dg[co + j] = d;
                if (F & PEEP) dct += d * p_o[j];
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
                float d = dct * ((F & CIFG) ? z - cp[j] : z);
                if (F & HAS_DA) d += dab[H + j];
                d *= i * (1.0f - i);
                dg[ci + j] = d;
                if (F & PEEP) dcp += d * p_i[j];
            }
            if (F & HAS_F) {
                const float f = a[cf + j];
                float d = dct * cp[j];
                if (F & HAS_DA) d += dab[2 * H + j];
                d *= f * (1.0f - f);
                dg[cf + j] = d;
                if (F & PEEP) dcp += d * p_f[j];
            }
            const float dz = dct * i;
            dg[cz + j] = (F & Z_TANH) ? dz * (1.0f - z * z) : dz;
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
    default: return -1;                                                       \
    }

/* Returns 0, or -1 for a flag combination this file does not know. */
int lstm_forward_step(const lstm_plan *P, int t, const float *g)
{
#define FWD(F) forward_rows(P, t, g, F)
    DISPATCH(FWD, P->flags)
#undef FWD
    return 0;
}

int lstm_backward_step(const lstm_plan *P, int t, const float *dh, const float *da)
{
    const int flags = P->flags | (da ? HAS_DA : 0);
#define BWD(F) backward_rows(P, t, dh, da, F)
    DISPATCH(BWD, flags)
#undef BWD
    return 0;
}

int lstm_kernel_version(void) { return 1; }
