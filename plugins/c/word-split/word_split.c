// word-split in C: the same stage as `plugins/word-split` (Rust). One record
// per word of each value, split on Unicode whitespace, with the input's
// timestamp and no key; `lowercase = "true"` lowercases the words exactly as
// Rust's `str::to_lowercase` does; a value that is not UTF-8 fails that
// record alone (it is dead-lettered).
//
// The bindings (`stage.h`) are in `../bindings`, made by `wit-bindgen c`;
// `grow.h` and `utf8.h`, shared with the other C plugins, in `../common`.

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "stage.h"
#include "unicode.h"
#include "utf8.h"

typedef exports_sluice_plugin_processor_error_t stage_error_t;

static bool lowercase = false;

// ---- Unicode ----

static uint32_t lower_char(uint32_t c) {
    size_t lo = 0, hi = sizeof LOWER / sizeof LOWER[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (LOWER[mid].first <= c) lo = mid + 1; else hi = mid;
    }
    if (lo == 0) return c;
    const struct lower_run *run = &LOWER[lo - 1];
    if (c <= run->last && (c - run->first) % run->stride == 0) return c + run->delta;
    return c;
}

static int sigma_class(uint32_t c) {
    size_t lo = 0, hi = sizeof SIGMA / sizeof SIGMA[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (SIGMA[mid].first <= c) lo = mid + 1; else hi = mid;
    }
    return lo > 0 && c <= SIGMA[lo - 1].last ? SIGMA[lo - 1].class : 0;
}

// Whether, skipping case-ignorable characters of `chars[0..n)` from `at` in
// steps of `step`, the next character is cased.
static bool ignorable_then_cased(const uint32_t *chars, size_t n, size_t at, int step) {
    for (; at < n; at += step) { // `at` wraps past 0 to SIZE_MAX when going back
        int class = sigma_class(chars[at]);
        if (class != SIGMA_IGNORABLE) return class == SIGMA_CASED;
    }
    return false;
}

// The offset of the first byte that does not start a valid UTF-8 sequence
// (Rust's `Utf8Error::valid_up_to`), or -1 when all of `s[0..n)` is valid;
// the code points go to `chars`, which has room for `n`.
static long decode_utf8(const uint8_t *s, size_t n, uint32_t *chars, size_t *count) {
    size_t i = 0, k = 0;
    while (i < n) {
        size_t at = i;
        if (!utf8_next(s, n, &i, &chars[k++])) return (long)at;
    }
    *count = k;
    return -1;
}

// ---- the stage ----

// An `invalid-config` error whose message is `before`, `value`, `after`.
static void invalid_config(stage_error_t *err, const char *before, const stage_string_t *value,
                           const char *after) {
    size_t a = strlen(before), b = value->len, c = strlen(after);
    uint8_t *message = malloc(a + b + c);
    if (!message) abort();
    memcpy(message, before, a);
    memcpy(message + a, value->ptr, b);
    memcpy(message + a + b, after, c);
    err->tag = SLUICE_PLUGIN_TYPES_ERROR_INVALID_CONFIG;
    err->val.invalid_config = (stage_string_t){message, a + b + c};
}

static bool equals(const stage_string_t *s, const char *text) {
    return s->len == strlen(text) && memcmp(s->ptr, text, s->len) == 0;
}

bool exports_sluice_plugin_processor_init(stage_list_tuple2_string_string_t *config, stage_error_t *err) {
    bool ok = true;
    lowercase = false;
    // As the Rust SDK: unknown keys first, then the values.
    for (size_t i = 0; i < config->len && ok; i++) {
        const stage_string_t *key = &config->ptr[i].f0;
        if (!equals(key, "lowercase")) {
            invalid_config(err, "unknown config key `", key, "` (allowed keys: `lowercase`)");
            ok = false;
        }
    }
    for (size_t i = 0; i < config->len && ok; i++) {
        const stage_string_t *value = &config->ptr[i].f1;
        if (equals(value, "true") || equals(value, "false")) {
            lowercase = equals(value, "true");
        } else {
            invalid_config(err, "`lowercase`: `", value,
                           "` is not a valid boolean (provided string was not `true` or `false`)");
            ok = false;
        }
    }
    stage_list_tuple2_string_string_free(config);
    return ok;
}

// The output batch being built.
struct out {
    uint8_t *data;
    size_t data_len, data_cap;
    uint32_t *offsets;
    size_t offsets_len, offsets_cap;
    uint64_t *timestamps;
    size_t timestamps_len, timestamps_cap;
};

// Appends word `chars[0..n)`, lowercased if asked, as one record.
static void emit_word(struct out *out, const uint32_t *chars, size_t n, uint64_t timestamp) {
    GROW(out->data, out->data_cap, out->data_len + 4 * n); // ≤ 4 bytes a char, also for İ
    for (size_t i = 0; i < n; i++) {
        uint32_t c = chars[i];
        if (lowercase) {
            if (c == 0x3A3) { // Σ: ς at the end of a word, else σ
                bool final = ignorable_then_cased(chars, n, i - 1, -1) &&
                             !ignorable_then_cased(chars, n, i + 1, 1);
                c = final ? 0x3C2 : 0x3C3;
            } else if (c == 0x130) { // İ: i + combining dot above
                out->data[out->data_len++] = 'i';
                c = 0x307;
            } else {
                c = lower_char(c);
            }
        }
        out->data_len += utf8_encode(c, out->data + out->data_len);
    }
    GROW(out->offsets, out->offsets_cap, out->offsets_len + 1);
    out->offsets[out->offsets_len++] = (uint32_t)out->data_len;
    GROW(out->timestamps, out->timestamps_cap, out->timestamps_len + 1);
    out->timestamps[out->timestamps_len++] = timestamp;
}

bool exports_sluice_plugin_processor_process(exports_sluice_plugin_processor_batch_info_t *info,
                                             exports_sluice_plugin_processor_batch_t *input,
                                             exports_sluice_plugin_processor_output_t *ret,
                                             stage_error_t *err) {
    (void)err; // never fails as a whole: a bad record fails alone
    struct out out = {0};
    GROW(out.offsets, out.offsets_cap, 1);
    out.offsets[out.offsets_len++] = 0;
    sluice_plugin_types_record_failure_t *failures = NULL;
    size_t failures_len = 0, failures_cap = 0;
    uint32_t *chars = NULL;
    size_t chars_cap = 0;

    const uint8_t *data = input->values.data.ptr;
    const uint32_t *offsets = input->values.offsets.ptr;
    for (size_t r = 0; r < input->timestamps.len; r++) {
        const uint8_t *value = data + offsets[r];
        size_t len = offsets[r + 1] - offsets[r], n = 0;
        GROW(chars, chars_cap, len + 1);
        long bad = decode_utf8(value, len, chars, &n);
        if (bad >= 0) {
            char message[64];
            snprintf(message, sizeof message, "value is not valid UTF-8 at byte %ld", bad);
            GROW(failures, failures_cap, failures_len + 1);
            failures[failures_len].index = (uint32_t)r;
            stage_string_dup(&failures[failures_len].message, message);
            failures_len++;
            continue;
        }
        for (size_t i = 0; i < n;) {
            while (i < n && is_whitespace(chars[i])) i++;
            size_t start = i;
            while (i < n && !is_whitespace(chars[i])) i++;
            if (i > start) emit_word(&out, chars + start, i - start, input->timestamps.ptr[r]);
        }
    }
    free(chars);
    exports_sluice_plugin_processor_batch_info_free(info);
    exports_sluice_plugin_processor_batch_free(input);

    memset(ret, 0, sizeof *ret);
    if (out.timestamps_len > 0) {
        ret->batch.timestamps = (stage_list_u64_t){out.timestamps, out.timestamps_len};
        ret->batch.values.data = (stage_list_u8_t){out.data, out.data_len};
        ret->batch.values.offsets = (stage_list_u32_t){out.offsets, out.offsets_len};
    } else {
        free(out.data);
        free(out.offsets);
        free(out.timestamps);
    }
    ret->failures = (sluice_plugin_types_list_record_failure_t){failures, failures_len};
    return true;
}
