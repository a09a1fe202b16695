/* One unit's gate at batch 1, fused into one call: see gate_program.py for the formula and compiled_gate.py
 * for why it is compiled. opened[j] = (b2_j + sum_h W2t[h][j] * ReLU(b1_h + sum_c W1t[c][h] * sum_p x[c][p])) > 0,
 * with W1t already divided by the area (the average pool) and the standardisation folded in.
 * x is read through its strides: channel_stride between channels, pixel_stride between the pixels of the
 * flattened H x W plane (1 in NCHW, the channel count in channels-last). */

static float contiguous_sum(const float *values, long count) {
    /* Sixteen independent partial sums: a single running sum would wait on each addition in turn. */
    float lanes[16] = {0.0f};
    long i = 0;
    for (; i + 16 <= count; i += 16)
        for (int k = 0; k < 16; ++k) lanes[k] += values[i + k];
    float total = 0.0f;
    for (int k = 0; k < 16; ++k) total += lanes[k];
    for (; i < count; ++i) total += values[i];
    return total;
}

void filterscope_gate(const float *x, long channels, long area, long channel_stride, long pixel_stride,
                      const float *squeeze_t, const float *squeeze_bias, long hidden_size,
                      const float *expand_t, const float *expand_bias, long decided, unsigned char *opened) {
    float pooled[channels > 0 ? channels : 1]; /* a unit may read no channel at all: then g = the biases' path */
    float hidden[hidden_size > 0 ? hidden_size : 1];
    if (pixel_stride == 1) {
        for (long c = 0; c < channels; ++c) pooled[c] = contiguous_sum(x + c * channel_stride, area);
    } else {
        for (long c = 0; c < channels; ++c) pooled[c] = 0.0f;
        for (long p = 0; p < area; ++p) {
            const float *pixel = x + p * pixel_stride;
            for (long c = 0; c < channels; ++c) pooled[c] += pixel[c * channel_stride];
        }
    }
    for (long h = 0; h < hidden_size; ++h) hidden[h] = squeeze_bias[h];
    for (long c = 0; c < channels; ++c) {
        const float *row = squeeze_t + c * hidden_size;
        for (long h = 0; h < hidden_size; ++h) hidden[h] += pooled[c] * row[h];
    }
    for (long j = 0; j < decided; ++j) {
        float logit = expand_bias[j];
        for (long h = 0; h < hidden_size; ++h)
            if (hidden[h] > 0.0f) logit += hidden[h] * expand_t[h * decided + j];
        opened[j] = logit > 0.0f;
    }
}
