/* Winograd F(4x4, 3x3) convolution kernels for superscale's CPU engine (fp32, NHWC).
 *
 * A 3x3 stride-1 conv over an H x W image (H, W multiples of 4) becomes, per 4x4 output
 * block (a "tile"): V = Bt d B on the 6x6 input patch d, then 36 GEMMs M[k] = V[k] U[k],
 * then y = At M A. The transforms are memory-bound: each reads its input once, writes its
 * output once, and vectorises over channels (contiguous in NHWC). Two ways to run a conv:
 * the transforms alone, with the GEMMs done by the caller (torch.bmm: best for many
 * channels), or wino_conv_f43, all three steps per cache-sized chunk of tiles with the GEMM
 * below (best for few channels, whose small GEMMs BLAS runs poorly and whose transformed
 * data would otherwise go through memory).
 *
 * Layouts: x, y are (N, H, W, C) contiguous; tile t = (n * H/4 + i) * W/4 + j. V and M
 * hold a chunk of `rows` tiles starting at tile `base`: (36, rows, C), tile t in row t - base.
 * Each call handles tiles [t0, t1) of that chunk: the caller splits the range over threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CB 64 /* channels per block: 2 x 36 x 64 floats of scratch stay in L1 */

void wino_input_f43(const float *x, int n_img, int h, int w, int c, float *v, long base,
                    long rows, long t0, long t1) {
    const long th = h / 4, tw = w / 4;
    float d[6][6][CB], t[6][6][CB];
    (void)n_img;
    for (long tile = t0; tile < t1; tile++) {
        const long n = tile / (th * tw), i = (tile / tw) % th, j = tile % tw;
        for (int c0 = 0; c0 < c; c0 += CB) {
            const int cb = c - c0 < CB ? c - c0 : CB;
            for (int a = 0; a < 6; a++) {
                const long row = i * 4 - 1 + a;
                for (int b = 0; b < 6; b++) {
                    const long col = j * 4 - 1 + b;
                    if (row < 0 || row >= h || col < 0 || col >= w) {
                        memset(d[a][b], 0, sizeof(float) * cb);
                    } else {
                        memcpy(d[a][b], x + ((n * h + row) * w + col) * c + c0,
                               sizeof(float) * cb);
                    }
                }
            }
            /* t = Bt d (over rows a) */
            for (int b = 0; b < 6; b++) {
                const float *d0 = d[0][b], *d1 = d[1][b], *d2 = d[2][b], *d3 = d[3][b],
                            *d4 = d[4][b], *d5 = d[5][b];
                for (int k = 0; k < cb; k++) {
                    t[0][b][k] = 4 * d0[k] - 5 * d2[k] + d4[k];
                    t[1][b][k] = -4 * d1[k] - 4 * d2[k] + d3[k] + d4[k];
                    t[2][b][k] = 4 * d1[k] - 4 * d2[k] - d3[k] + d4[k];
                    t[3][b][k] = -2 * d1[k] - d2[k] + 2 * d3[k] + d4[k];
                    t[4][b][k] = 2 * d1[k] - d2[k] - 2 * d3[k] + d4[k];
                    t[5][b][k] = 4 * d1[k] - 5 * d3[k] + d5[k];
                }
            }
            /* V = t B (over columns b), written to V[a*6+b][tile][c0 + k] */
            for (int a = 0; a < 6; a++) {
                const float *s0 = t[a][0], *s1 = t[a][1], *s2 = t[a][2], *s3 = t[a][3],
                            *s4 = t[a][4], *s5 = t[a][5];
                float *o = v + ((long)(a * 6) * rows + tile - base) * c + c0;
                const long step = rows * c;
                for (int k = 0; k < cb; k++) {
                    o[k] = 4 * s0[k] - 5 * s2[k] + s4[k];
                    o[step + k] = -4 * s1[k] - 4 * s2[k] + s3[k] + s4[k];
                    o[2 * step + k] = 4 * s1[k] - 4 * s2[k] - s3[k] + s4[k];
                    o[3 * step + k] = -2 * s1[k] - s2[k] + 2 * s3[k] + s4[k];
                    o[4 * step + k] = 2 * s1[k] - s2[k] - 2 * s3[k] + s4[k];
                    o[5 * step + k] = 4 * s1[k] - 5 * s3[k] + s5[k];
                }
            }
        }
    }
}

/* act: 0 none, 1 SiLU. bias may be NULL. */
void wino_output_f43(const float *m, int n_img, int h, int w, int c, long base, long rows,
                     const float *bias, int act, float *y, long t0, long t1) {
    const long th = h / 4, tw = w / 4;
    float t[6][4][CB];
    (void)n_img;
    for (long tile = t0; tile < t1; tile++) {
        const long n = tile / (th * tw), i = (tile / tw) % th, j = tile % tw;
        for (int c0 = 0; c0 < c; c0 += CB) {
            const int cb = c - c0 < CB ? c - c0 : CB;
            const long step = rows * c;
            /* t = M A (over columns b) */
            for (int a = 0; a < 6; a++) {
                const float *s = m + ((long)(a * 6) * rows + tile - base) * c + c0;
                for (int k = 0; k < cb; k++) {
                    const float m0 = s[k], m1 = s[step + k], m2 = s[2 * step + k],
                                m3 = s[3 * step + k], m4 = s[4 * step + k],
                                m5 = s[5 * step + k];
                    t[a][0][k] = m0 + m1 + m2 + m3 + m4;
                    t[a][1][k] = m1 - m2 + 2 * m3 - 2 * m4;
                    t[a][2][k] = m1 + m2 + 4 * m3 + 4 * m4;
                    t[a][3][k] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
                }
            }
            /* y = At t (over rows a), plus bias, then the activation */
            for (int b = 0; b < 4; b++) {
                float r[4][CB];
                for (int k = 0; k < cb; k++) {
                    const float b0 = bias ? bias[c0 + k] : 0.0f;
                    const float u0 = t[0][b][k], u1 = t[1][b][k], u2 = t[2][b][k],
                                u3 = t[3][b][k], u4 = t[4][b][k], u5 = t[5][b][k];
                    r[0][k] = u0 + u1 + u2 + u3 + u4 + b0;
                    r[1][k] = u1 - u2 + 2 * u3 - 2 * u4 + b0;
                    r[2][k] = u1 + u2 + 4 * u3 + 4 * u4 + b0;
                    r[3][k] = u1 - u2 + 8 * u3 - 8 * u4 + u5 + b0;
                }
                for (int a = 0; a < 4; a++) {
                    float *o = y + ((n * h + i * 4 + a) * w + j * 4 + b) * c + c0;
                    if (act == 1) {
                        for (int k = 0; k < cb; k++) o[k] = r[a][k] / (1.0f + expf(-r[a][k]));
                    } else {
                        memcpy(o, r[a], sizeof(float) * cb);
                    }
                }
            }
        }
    }
}

typedef float v8f __attribute__((vector_size(32))); /* gcc/clang vector extension */

static inline v8f load8(const float *p) {
    v8f r;
    memcpy(&r, p, sizeof r);
    return r;
}

/* rows_ rows of c (rows_ <= 6, a constant once inlined) at columns [j, j + 16). */
static inline __attribute__((always_inline)) void gemm_tile(const float *a, const float *b,
                                                            float *c, int rows_, int n_in,
                                                            int n_out, int j) {
    v8f acc[6][2] = {{{0}}};
    const float *bk = b + j;
    for (int k = 0; k < n_in; k++, bk += n_out) {
        const v8f b0 = load8(bk), b1 = load8(bk + 8);
        for (int q = 0; q < rows_; q++) {
            const float aq = a[q * n_in + k];
            acc[q][0] += aq * b0;
            acc[q][1] += aq * b1;
        }
    }
    for (int q = 0; q < rows_; q++) {
        memcpy(c + q * n_out + j, &acc[q][0], 32);
        memcpy(c + q * n_out + j + 8, &acc[q][1], 32);
    }
}

static void gemm_block(const float *a, const float *b, float *c, long rows, int n_in,
                       int n_out) {
    /* c (rows, n_out) = a (rows, n_in) . b (n_in, n_out), through register tiles of up to 6
     * rows x 16 columns (12 vector accumulators, enough to hide the FMA latency); columns
     * past the last multiple of 16 go through a plain loop. */
    const int wide = n_out - n_out % 16;
    for (long r = 0; r < rows; r += 6) {
        const int n = rows - r < 6 ? (int)(rows - r) : 6;
        const float *ar = a + r * n_in;
        float *cr = c + r * n_out;
        for (int j = 0; j < wide; j += 16) {
            switch (n) {
                case 6: gemm_tile(ar, b, cr, 6, n_in, n_out, j); break;
                case 5: gemm_tile(ar, b, cr, 5, n_in, n_out, j); break;
                case 4: gemm_tile(ar, b, cr, 4, n_in, n_out, j); break;
                case 3: gemm_tile(ar, b, cr, 3, n_in, n_out, j); break;
                case 2: gemm_tile(ar, b, cr, 2, n_in, n_out, j); break;
                default: gemm_tile(ar, b, cr, 1, n_in, n_out, j); break;
            }
        }
        for (int q = 0; q < n; q++) {
            for (int j = wide; j < n_out; j++) {
                float s = 0;
                for (int k = 0; k < n_in; k++) s += ar[q * n_in + k] * b[(long)k * n_out + j];
                cr[q * n_out + j] = s;
            }
        }
    }
}

/* The whole conv for tiles [t0, t1), `rows` tiles at a time so that a chunk's transformed
 * input and output (36 x rows x (C + K) floats) stay in this core's cache: input transform,
 * the 36 products with u (36, C, K), output transform into y. Returns -1 if out of memory. */
int wino_conv_f43(const float *x, int n_img, int h, int w, int c, const float *u, int k_out,
                  const float *bias, int act, float *y, long rows, long t0, long t1) {
    float *v = malloc(sizeof(float) * 36 * rows * c);
    float *m = malloc(sizeof(float) * 36 * rows * k_out);
    if (v == NULL || m == NULL) {
        free(v);
        free(m);
        return -1;
    }
    for (long base = t0; base < t1; base += rows) {
        const long count = t1 - base < rows ? t1 - base : rows;
        wino_input_f43(x, n_img, h, w, c, v, base, count, base, base + count);
        for (int e = 0; e < 36; e++) {
            gemm_block(v + (long)e * count * c, u + (long)e * c * k_out,
                       m + (long)e * count * k_out, count, c, k_out);
        }
        wino_output_f43(m, n_img, h, w, k_out, base, count, bias, act, y, base, base + count);
    }
    free(v);
    free(m);
    return 0;
}
