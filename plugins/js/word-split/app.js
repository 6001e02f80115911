// word-split in JavaScript: the same stage as `plugins/word-split` (Rust).
// One record per word of each value, split on Unicode whitespace, with the
// input's timestamp and no key; `lowercase = "true"` lowercases the words;
// a value that is not UTF-8 fails that record alone (it is dead-lettered).

import { invalidUtf8At } from './sluice.js';
import { LOWER, SIGMA, SIGMA_CASED, SIGMA_IGNORABLE } from './unicode.js';

// `char::is_whitespace` in Rust: the Unicode White_Space property. (A JS
// regex `\s` differs: it also matches U+FEFF and misses U+0085.)
const WHITESPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const ASCII = /^[\x00-\x7f]*$/;

const encoder = new TextEncoder();
// Native, so much faster than a check in JS; `invalidUtf8At` says where.
// `ignoreBOM`: a leading U+FEFF is part of the word, as in Rust.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
let lowercase = false;

/** The index of the last entry of `table` (entries of `width`) whose first
 * element is at most `c`, or -1. */
function findRun(table, width, c) {
  let lo = 0, hi = table.length / width;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (table[mid * width] <= c) lo = mid + 1; else hi = mid;
  }
  return lo - 1;
}

// The tables spread out over the Basic Multilingual Plane, for a look-up
// without a search: built when the component is made (componentize-js runs
// the module's top level then and keeps the result).
const BMP_DELTA = new Int32Array(0x10000);
for (let i = 0; i < LOWER.length; i += 4) {
  for (let c = LOWER[i]; c <= LOWER[i + 1] && c < 0x10000; c += LOWER[i + 2]) BMP_DELTA[c] = LOWER[i + 3];
}
const BMP_CLASS = new Uint8Array(0x10000);
for (let i = 0; i < SIGMA.length; i += 3) {
  for (let c = SIGMA[i]; c <= SIGMA[i + 1] && c < 0x10000; c++) BMP_CLASS[c] = SIGMA[i + 2];
}

function lowerChar(c) {
  if (c < 0x10000) return c + BMP_DELTA[c];
  const i = findRun(LOWER, 4, c) * 4;
  if (i >= 0 && c <= LOWER[i + 1] && (c - LOWER[i]) % LOWER[i + 2] === 0) return c + LOWER[i + 3];
  return c;
}

function sigmaClass(c) {
  if (c < 0x10000) return BMP_CLASS[c];
  const i = findRun(SIGMA, 3, c) * 3;
  return i >= 0 && c <= SIGMA[i + 1] ? SIGMA[i + 2] : 0;
}

/** Whether, skipping case-ignorable characters of `chars[0..n)` from `at`
 * in steps of `step`, the next character is cased. */
function ignorableThenCased(chars, n, at, step) {
  for (; at >= 0 && at < n; at += step) {
    const cls = sigmaClass(chars[at]);
    if (cls !== SIGMA_IGNORABLE) return cls === SIGMA_CASED;
  }
  return false;
}

// Scratch space for `toLowercase`: the word's code points, then the UTF-16
// code units of its lowercase (at most two per code point).
let chars = new Uint32Array(256);
let units = new Uint16Array(512);

/**
 * `word` lowercased exactly as Rust's `str::to_lowercase` does it, with the
 * Unicode tables of the Rust toolchain (`String.prototype.toLowerCase` in
 * this engine has another Unicode version and no final-sigma rule). Typed
 * arrays rather than strings and callbacks: the engine interprets this
 * code, and each call or string costs.
 */
function toLowercase(word) {
  if (ASCII.test(word)) return word.toLowerCase();
  if (chars.length < word.length) {
    chars = new Uint32Array(word.length);
    units = new Uint16Array(2 * word.length);
  }
  let n = 0;
  for (let i = 0; i < word.length; i++) {
    let c = word.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00) c = 0x10000 + ((c - 0xd800) << 10) + (word.charCodeAt(++i) - 0xdc00);
    chars[n++] = c;
  }
  let m = 0;
  for (let i = 0; i < n; i++) {
    let c = chars[i];
    if (c === 0x3a3) {
      // Σ: final (ς) after a cased letter and not before one, else σ.
      const final = ignorableThenCased(chars, n, i - 1, -1) && !ignorableThenCased(chars, n, i + 1, 1);
      c = final ? 0x3c2 : 0x3c3;
    } else if (c === 0x130) {
      units[m++] = 0x69; // İ: i + combining dot above
      c = 0x307;
    } else {
      c = lowerChar(c);
    }
    if (c < 0x10000) {
      units[m++] = c;
    } else {
      units[m++] = 0xd800 + ((c - 0x10000) >> 10);
      units[m++] = 0xdc00 + ((c - 0x10000) & 0x3ff);
    }
  }
  let out = '';
  for (let at = 0; at < m; at += 8192) {
    out += String.fromCharCode.apply(null, units.subarray(at, Math.min(m, at + 8192)));
  }
  return out;
}

/** An `error` variant of the WIT, thrown to return it as the `result`'s error. */
const invalidConfig = (message) => ({ tag: 'invalid-config', val: message });

export const processor = {
  init(config) {
    // As the Rust SDK: unknown keys first, then the values.
    const unknown = config.find(([key]) => key !== 'lowercase');
    if (unknown) {
      throw invalidConfig(`unknown config key \`${unknown[0]}\` (allowed keys: \`lowercase\`)`);
    }
    lowercase = false;
    for (const [, value] of config) {
      if (value !== 'true' && value !== 'false') {
        throw invalidConfig(
          `\`lowercase\`: \`${value}\` is not a valid boolean (provided string was not \`true\` or \`false\`)`,
        );
      }
      lowercase = value === 'true';
    }
  },

  process(info, input) {
    const { data, offsets } = input.values;
    const chunks = [];
    const outOffsets = [0];
    const timestamps = [];
    const failures = [];
    let length = 0;
    for (let i = 0; i < input.timestamps.length; i++) {
      const value = data.subarray(offsets[i], offsets[i + 1]);
      let text;
      try {
        text = decoder.decode(value);
      } catch {
        const at = invalidUtf8At(value);
        failures.push({ index: i, message: `value is not valid UTF-8 at byte ${at}` });
        continue;
      }
      for (let word of text.split(WHITESPACE)) {
        if (word === '') continue;
        if (lowercase) word = toLowercase(word);
        const bytes = encoder.encode(word);
        chunks.push(bytes);
        length += bytes.length;
        outOffsets.push(length);
        timestamps.push(input.timestamps[i]);
      }
    }
    const out = new Uint8Array(length);
    let at = 0;
    for (const bytes of chunks) {
      out.set(bytes, at);
      at += bytes.length;
    }
    const empty = { data: new Uint8Array(0), offsets: new Uint32Array(0) };
    return {
      batch: {
        timestamps: BigUint64Array.from(timestamps),
        values: { data: out, offsets: timestamps.length ? Uint32Array.from(outOffsets) : new Uint32Array(0) },
        keys: empty,
        keysAbsent: new Uint8Array(0),
        headerOffsets: new Uint32Array(0),
        headerNames: empty,
        headerValues: empty,
      },
      failures,
    };
  },
};
