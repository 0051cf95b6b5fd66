/* Winograd F(4x4, 3x3) transforms for superscale's CPU engine (fp32, NHWC).
 *
 * A 3x3 stride-1 conv over an H x W image (H, W multiples of 4) becomes, per 4x4 output
 * block (a "tile"): V = Bt d B on the 6x6 input patch d, then 36 GEMMs M[k] = V[k] U[k]
 * (done by the caller, with torch.bmm), then y = At M A. These two functions are the
 * transforms; they are memory-bound, so each reads its input once and writes its output
 * once, and vectorises over channels (contiguous in NHWC).
 *
 * Layouts: x, y are (N, H, W, C) contiguous; tile t = (n * H/4 + i) * W/4 + j. V and M
 * hold a chunk of `rows` tiles starting at tile `base`: (36, rows, C), tile t in row t - base.
 * Each call handles tiles [t0, t1) of that chunk: the caller splits the range over threads.
 */
#include <math.h>
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
