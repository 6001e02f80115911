// `{{name}}`: a Sluice stage in C. Each record's value with the config's
// `suffix` (default `!`) appended, with its timestamp (keys are not kept);
// a value that is not UTF-8 goes to the dead letters on its own.
//
// `stage.h` is the binding to the WIT world `sluice:plugin/stage`, made by
// `wit-bindgen c`; `sluice plugin build` supplies it (its own copy, matching
// the engine). Lists handed to the bindings as output must come from
// malloc/realloc: the bindings free them after the call.

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage.h"

typedef exports_sluice_plugin_processor_error_t stage_error_t;

static char *suffix = NULL;

// Makes room for `need` elements in the realloc'ed array `ptr` of capacity
// `cap`, doubling; aborts when memory runs out.
#define GROW(ptr, cap, need)                                                 \
    do {                                                                     \
        if ((need) > (cap)) {                                                \
            size_t new_cap = (cap) ? (cap) * 2 : 64;                         \
            while (new_cap < (need)) new_cap *= 2;                           \
            (ptr) = realloc((ptr), new_cap * sizeof *(ptr));                 \
            if (!(ptr)) abort();                                             \
            (cap) = new_cap;                                                 \
        }                                                                    \
    } while (0)

// The offset of the first byte of `s[0..n)` that does not start a valid
// UTF-8 sequence, or -1 when all of it is valid (as Rust's `valid_up_to`).
static long invalid_utf8_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t more;
        uint8_t lo = 0x80, hi = 0xbf;
        if (b < 0x80) { i++; continue; }
        else if (b >= 0xc2 && b <= 0xdf) more = 1;
        else if (b >= 0xe0 && b <= 0xef) {
            more = 2;
            if (b == 0xe0) lo = 0xa0; // no overlong encodings
            if (b == 0xed) hi = 0x9f; // no surrogates
        } else if (b >= 0xf0 && b <= 0xf4) {
            more = 3;
            if (b == 0xf0) lo = 0x90;
            if (b == 0xf4) hi = 0x8f; // nothing past U+10FFFF
        } else return (long)i;
        for (size_t k = 1; k <= more; k++) {
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return (long)i;
            lo = 0x80, hi = 0xbf;
        }
        i += more + 1;
    }
    return -1;
}

static void fail_config(stage_error_t *err, const char *message) {
    err->tag = SLUICE_PLUGIN_TYPES_ERROR_INVALID_CONFIG;
    stage_string_dup(&err->val.invalid_config, message);
}

bool exports_sluice_plugin_processor_init(stage_list_tuple2_string_string_t *config, stage_error_t *err) {
    bool ok = true;
    free(suffix);
    suffix = strdup("!");
    for (size_t i = 0; i < config->len && ok; i++) {
        stage_string_t *key = &config->ptr[i].f0, *value = &config->ptr[i].f1;
        if (key->len == 6 && memcmp(key->ptr, "suffix", 6) == 0) {
            free(suffix);
            suffix = strndup((const char *)value->ptr, value->len);
        } else {
            char message[256];
            snprintf(message, sizeof message, "unknown config key `%.*s` (allowed keys: `suffix`)",
                     (int)key->len, (const char *)key->ptr);
            fail_config(err, message);
            ok = false;
        }
    }
    stage_list_tuple2_string_string_free(config);
    return ok;
}

bool exports_sluice_plugin_processor_process(exports_sluice_plugin_processor_batch_info_t *info,
                                             exports_sluice_plugin_processor_batch_t *input,
                                             exports_sluice_plugin_processor_output_t *ret,
                                             stage_error_t *err) {
    (void)err; // never fails as a whole: a bad record fails alone
    uint8_t *data = NULL;
    uint32_t *offsets = NULL;
    uint64_t *timestamps = NULL;
    size_t data_len = 0, data_cap = 0, offsets_cap = 0, records = 0, timestamps_cap = 0;
    sluice_plugin_types_record_failure_t *failures = NULL;
    size_t failures_len = 0, failures_cap = 0;
    size_t suffix_len = strlen(suffix);

    GROW(offsets, offsets_cap, 1);
    offsets[0] = 0;
    const uint8_t *in = input->values.data.ptr;
    const uint32_t *in_offsets = input->values.offsets.ptr;
    for (size_t r = 0; r < input->timestamps.len; r++) {
        const uint8_t *value = in + in_offsets[r];
        size_t len = in_offsets[r + 1] - in_offsets[r];
        long bad = invalid_utf8_at(value, len);
        if (bad >= 0) {
            char message[64];
            snprintf(message, sizeof message, "value is not valid UTF-8 at byte %ld", bad);
            GROW(failures, failures_cap, failures_len + 1);
            failures[failures_len].index = (uint32_t)r;
            stage_string_dup(&failures[failures_len].message, message);
            failures_len++;
            continue;
        }
        GROW(data, data_cap, data_len + len + suffix_len);
        memcpy(data + data_len, value, len);
        memcpy(data + data_len + len, suffix, suffix_len);
        data_len += len + suffix_len;
        GROW(offsets, offsets_cap, records + 2);
        offsets[records + 1] = (uint32_t)data_len;
        GROW(timestamps, timestamps_cap, records + 1);
        timestamps[records++] = input->timestamps.ptr[r];
    }
    exports_sluice_plugin_processor_batch_info_free(info);
    exports_sluice_plugin_processor_batch_free(input);

    memset(ret, 0, sizeof *ret); // every other column empty
    if (records > 0) {
        ret->batch.timestamps = (stage_list_u64_t){timestamps, records};
        ret->batch.values.data = (stage_list_u8_t){data, data_len};
        ret->batch.values.offsets = (stage_list_u32_t){offsets, records + 1};
    } else {
        free(data);
        free(offsets);
        free(timestamps);
    }
    ret->failures = (sluice_plugin_types_list_record_failure_t){failures, failures_len};
    return true;
}
