// average in C: the mean of numeric values per key, within one batch, as
// `plugins/average` (Rust) computes and prints it. Each record's value is a
// number in decimal text, surrounding whitespace ignored; records without a
// key are grouped under the empty key. One output record per key, in order
// of first appearance: key = the key, value = the mean printed as Rust
// prints an `f64` (shortest text that reads back the same, never an
// exponent: "2.5", "3", "0.0000001"), timestamp = the latest of the group.
// A value that is not a finite number fails that record alone, with the
// Rust plugin's message.
//
// Unlike the Rust plugin, it has no `field` setting (JSON values).
//
// The bindings (`stage.h`) are in `../bindings`, made by `wit-bindgen c`;
// `grow.h` and `utf8.h`, shared with the other C plugins, in `../common`.

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "stage.h"
#include "utf8.h"

typedef exports_sluice_plugin_processor_error_t stage_error_t;

// A byte string that grows (malloc'ed, so it can be handed to the bindings).
struct bytes {
    uint8_t *ptr;
    size_t len, cap;
};

static void append(struct bytes *b, const void *data, size_t n) {
    GROW(b->ptr, b->cap, b->len + n);
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void append_str(struct bytes *b, const char *s) { append(b, s, strlen(s)); }

// ---- reading a number as Rust's `str::trim` + `f64::from_str` do ----

// The next character of `s[*i..n)`, as `String::from_utf8_lossy` reads it.
static uint32_t next_char(const uint8_t *s, size_t n, size_t *i) {
    uint32_t c;
    utf8_next(s, n, i, &c); // U+FFFD for each invalid part
    return c;
}

// Whether `s[0..n)` is a decimal number in Rust's `f64` syntax: an optional
// sign, digits with at most one `.` (at least one digit), an optional
// exponent `e`/`E`, optional sign, digits. (Rust also reads `inf`, `infinity`
// and `nan`, which are not finite and so not numbers here.)
static bool is_decimal(const char *s, size_t n) {
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    }
    if (digits == 0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t exp_digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, exp_digits++;
        if (exp_digits == 0) return false;
    }
    return i == n;
}

// Reads record value `v[0..n)` into `*number`, or writes the failure
// message ("value `x` is not a number", the value cut to 64 characters).
static bool read_number(const uint8_t *v, size_t n, double *number, struct bytes *message) {
    // Trim whitespace at both ends (by characters, as `str::trim`).
    size_t start = 0, end = 0, i = 0;
    bool seen = false;
    while (i < n) {
        size_t at = i;
        uint32_t c = next_char(v, n, &i);
        if (!is_whitespace(c)) {
            if (!seen) start = at;
            seen = true;
            end = i;
        }
    }
    if (seen) {
        bool ascii = true;
        for (size_t k = start; k < end; k++) ascii &= v[k] < 0x80;
        char *text = ascii ? malloc(end - start + 1) : NULL;
        if (text) {
            memcpy(text, v + start, end - start);
            text[end - start] = 0;
            bool ok = is_decimal(text, end - start);
            if (ok) *number = strtod(text, NULL); // correctly rounded, as Rust's
            free(text);
            if (ok && isfinite(*number)) return true;
        }
    }
    // The message quotes the untrimmed value, read lossily, as Rust does.
    append_str(message, "value `");
    size_t chars = 0;
    for (i = 0; i < n && chars < 64; chars++) {
        uint8_t utf8[4];
        append(message, utf8, utf8_encode(next_char(v, n, &i), utf8));
    }
    if (i < n) append_str(message, "\xE2\x80\xA6"); // …
    append_str(message, "` is not a number");
    return false;
}

// ---- printing an f64 as Rust's `{}` does ----

// The `p` significant digits of `x` (> 0) nearest to it, or their neighbour
// `step` (±1) units of the last digit away, when that reads back as `x`:
// digits to `digits`, decimal exponent of the first to `*exp10`.
static bool digits_that_read_back(double x, int p, int step, char *digits, int *exp10) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.*e", p - 1, x); // "d.ddde±XX"
    int k = 0;
    for (const char *c = buf; *c != 'e'; c++)
        if (*c != '.') digits[k++] = *c;
    digits[k] = 0;
    *exp10 = atoi(strchr(buf, 'e') + 1);
    if (step > 0) { // add one unit in the last place
        int j = p - 1;
        while (j >= 0 && digits[j] == '9') digits[j--] = '0';
        if (j < 0) return false; // 10^p: fewer digits, tried before
        digits[j]++;
    } else if (step < 0) { // take one away
        if (digits[0] == '1' && strspn(digits + 1, "0") == (size_t)(p - 1)) return false;
        int j = p - 1;
        while (digits[j] == '0') digits[j--] = '9';
        digits[j]--;
    }
    char back[48];
    snprintf(back, sizeof back, "%c.%se%d", digits[0], digits + 1, *exp10);
    return strtod(back, NULL) == x;
}

// Appends `x` as Rust's `Display` for `f64` prints it: the fewest
// significant digits that read back as `x` (the nearest such, as Rust's
// Grisu/Dragon shortest mode), in positional notation.
static void append_f64(struct bytes *out, double x) {
    if (isnan(x)) { append_str(out, "NaN"); return; }
    if (signbit(x)) { append_str(out, "-"); x = -x; }
    if (isinf(x)) { append_str(out, "inf"); return; }
    if (x == 0) { append_str(out, "0"); return; }
    char digits[24];
    int exp10 = 0, p;
    for (p = 1; p < 17; p++) {
        if (digits_that_read_back(x, p, 0, digits, &exp10) ||
            digits_that_read_back(x, p, 1, digits, &exp10) ||
            digits_that_read_back(x, p, -1, digits, &exp10))
            break;
    }
    if (p == 17) digits_that_read_back(x, 17, 0, digits, &exp10);
    int n = (int)strlen(digits);
    while (n > 1 && digits[n - 1] == '0') n--; // 1.500e3 → 15e2
    if (exp10 < 0) { // 0.000ddd
        append_str(out, "0.");
        for (int z = -1; z > exp10; z--) append_str(out, "0");
        append(out, digits, n);
    } else if (exp10 + 1 >= n) { // ddd000
        append(out, digits, n);
        for (int z = n; z <= exp10; z++) append_str(out, "0");
    } else { // dd.ddd
        append(out, digits, exp10 + 1);
        append_str(out, ".");
        append(out, digits + exp10 + 1, n - exp10 - 1);
    }
}

// ---- the stage ----

bool exports_sluice_plugin_processor_init(stage_list_tuple2_string_string_t *config, stage_error_t *err) {
    bool ok = config->len == 0;
    if (!ok) {
        const stage_string_t *key = &config->ptr[0].f0;
        struct bytes message = {0};
        bool field = key->len == 5 && memcmp(key->ptr, "field", 5) == 0;
        append_str(&message, field ? "`field` (a JSON field) is not supported by the C average: "
                                     "use the Rust `average`"
                                   : "unknown config key `");
        if (!field) {
            append(&message, key->ptr, key->len);
            append_str(&message, "` (this plugin takes no config keys)");
        }
        err->tag = SLUICE_PLUGIN_TYPES_ERROR_INVALID_CONFIG;
        err->val.invalid_config = (stage_string_t){message.ptr, message.len};
    }
    stage_list_tuple2_string_string_free(config);
    return ok;
}

// One key's running sum.
struct group {
    const uint8_t *key; // into the input batch
    size_t key_len;
    double sum;
    uint64_t count, latest;
};

static uint64_t hash(const uint8_t *p, size_t n) { // FNV-1a
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

bool exports_sluice_plugin_processor_process(exports_sluice_plugin_processor_batch_info_t *info,
                                             exports_sluice_plugin_processor_batch_t *input,
                                             exports_sluice_plugin_processor_output_t *ret,
                                             stage_error_t *err) {
    (void)err; // never fails as a whole: a bad record fails alone
    size_t n = input->timestamps.len;
    const sluice_plugin_types_column_t *values = &input->values, *keys = &input->keys;
    bool has_keys = keys->offsets.len > 1;

    struct group *groups = NULL;
    size_t groups_len = 0, groups_cap = 0;
    // Open addressing, at most half full: slot = group index + 1, 0 = free.
    size_t slots_len = 16;
    while (slots_len < 2 * n) slots_len *= 2;
    size_t *slots = calloc(slots_len, sizeof *slots);
    sluice_plugin_types_record_failure_t *failures = NULL;
    size_t failures_len = 0, failures_cap = 0;
    if (!slots) abort();

    for (size_t r = 0; r < n; r++) {
        double number;
        struct bytes message = {0};
        const uint8_t *v = values->data.ptr + values->offsets.ptr[r];
        if (!read_number(v, values->offsets.ptr[r + 1] - values->offsets.ptr[r], &number, &message)) {
            GROW(failures, failures_cap, failures_len + 1);
            failures[failures_len++] = (sluice_plugin_types_record_failure_t){
                (uint32_t)r, {message.ptr, message.len}};
            continue;
        }
        const uint8_t *key = (const uint8_t *)"";
        size_t key_len = 0;
        bool absent = !has_keys ||
                      (r / 8 < input->keys_absent.len && input->keys_absent.ptr[r / 8] >> (r % 8) & 1);
        if (!absent) {
            key = keys->data.ptr + keys->offsets.ptr[r];
            key_len = keys->offsets.ptr[r + 1] - keys->offsets.ptr[r];
        }
        size_t s = hash(key, key_len) & (slots_len - 1);
        while (slots[s] && !(groups[slots[s] - 1].key_len == key_len &&
                             memcmp(groups[slots[s] - 1].key, key, key_len) == 0))
            s = (s + 1) & (slots_len - 1);
        uint64_t timestamp = input->timestamps.ptr[r];
        if (!slots[s]) {
            GROW(groups, groups_cap, groups_len + 1);
            groups[groups_len++] = (struct group){key, key_len, 0.0, 0, timestamp};
            slots[s] = groups_len;
        }
        struct group *g = &groups[slots[s] - 1];
        g->sum += number;
        g->count++;
        if (timestamp > g->latest) g->latest = timestamp;
    }
    free(slots);

    // One record per group, every one with a key.
    struct bytes out_values = {0}, out_keys = {0};
    uint32_t *value_offsets = malloc((groups_len + 1) * sizeof(uint32_t));
    uint32_t *key_offsets = malloc((groups_len + 1) * sizeof(uint32_t));
    uint64_t *timestamps = malloc((groups_len + 1) * sizeof(uint64_t));
    if (!value_offsets || !key_offsets || !timestamps) abort();
    value_offsets[0] = key_offsets[0] = 0;
    for (size_t g = 0; g < groups_len; g++) {
        append_f64(&out_values, groups[g].sum / (double)groups[g].count);
        append(&out_keys, groups[g].key, groups[g].key_len);
        value_offsets[g + 1] = (uint32_t)out_values.len;
        key_offsets[g + 1] = (uint32_t)out_keys.len;
        timestamps[g] = groups[g].latest;
    }
    free(groups);
    exports_sluice_plugin_processor_batch_info_free(info);
    exports_sluice_plugin_processor_batch_free(input); // the groups' keys pointed into it

    memset(ret, 0, sizeof *ret);
    size_t offsets_len = groups_len + 1;
    if (groups_len == 0) { // the bindings free only lists that are not empty
        free(value_offsets), free(key_offsets), free(timestamps);
        value_offsets = key_offsets = NULL;
        timestamps = NULL;
        offsets_len = 0;
    }
    ret->batch.timestamps = (stage_list_u64_t){timestamps, groups_len};
    ret->batch.values = (sluice_plugin_types_column_t){{out_values.ptr, out_values.len},
                                                       {value_offsets, offsets_len}};
    ret->batch.keys = (sluice_plugin_types_column_t){{out_keys.ptr, out_keys.len},
                                                     {key_offsets, offsets_len}};
    ret->failures = (sluice_plugin_types_list_record_failure_t){failures, failures_len};
    return true;
}
