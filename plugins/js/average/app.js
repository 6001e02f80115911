// average in JavaScript: the mean of numeric values per key, within one
// batch, as `plugins/average` (Rust) computes and prints it. Each value is a
// number in decimal text; records without a key are grouped under the empty
// key. One record per key, in order of first appearance: key = the key,
// value = the mean as Rust prints an f64, timestamp = the latest of the
// group. A value that is not a number is dead-lettered with the Rust
// plugin's message.

import * as sluice from './sluice.js';

// Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim`
// strips; JS's `trim` also strips U+FEFF and keeps U+0085.
const TRIM = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
// Rust's `f64` decimal syntax (`Number()` also reads `0x1f`, `Infinity`
// and the empty string). `inf` and `nan` are not finite, so not numbers.
const DECIMAL = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
// The longest excerpt of a bad value in a message, in characters.
const EXCERPT_CHARS = 64;
// Reads bytes as Rust's `String::from_utf8_lossy` does (U+FFFD for each
// invalid part).
const lossy = new TextDecoder('utf-8', { ignoreBOM: true });

/** The finite number in `value` (bytes), or a `RecordError`. */
function readNumber(value) {
  const text = lossy.decode(value);
  const trimmed = text.replace(TRIM, '');
  if (DECIMAL.test(trimmed)) {
    const number = Number(trimmed);
    if (Number.isFinite(number)) return number;
  }
  const chars = [...text];
  const excerpt = chars.length > EXCERPT_CHARS ? chars.slice(0, EXCERPT_CHARS).join('') + '…' : text;
  throw new sluice.RecordError(`value \`${excerpt}\` is not a number`);
}

/** `x` as Rust's `{}` prints an f64: the shortest digits that read back as
 * `x` (which `String` finds), laid out without an exponent; `inf` and
 * `-inf` as Rust spells them (a sum can overflow). */
function rustDisplay(x) {
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  const [mantissa, exp = '0'] = String(Math.abs(x)).split('e');
  const [whole, frac = ''] = mantissa.split('.');
  const digits = (whole + frac).replace(/0+$/, '');
  const significant = digits.replace(/^0+/, '');
  const point = whole.length + Number(exp) - (digits.length - significant.length);
  if (!significant) return sign + '0';
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${significant}`;
  if (point >= significant.length) return sign + significant + '0'.repeat(point - significant.length);
  return `${sign}${significant.slice(0, point)}.${significant.slice(point)}`;
}

class Average {
  constructor(config) {
    if (config.has('field')) {
      throw new sluice.ConfigError(
        '`field` (a JSON field) is not supported by the JavaScript average: use the Rust `average`',
      );
    }
    config.allowOnly([]);
  }

  process(records, out) {
    // Keys as text (lossless: one char per byte) so that a Map compares them.
    const groups = new Map();
    for (const record of records) {
      let number;
      try {
        number = readNumber(record.value);
      } catch (e) {
        out.fail(record, e.message);
        continue;
      }
      const key = record.key ? String.fromCharCode(...record.key) : '';
      const group = groups.get(key);
      if (group === undefined) {
        // From +0, as Rust's sum: -0 alone averages to 0.
        groups.set(key, { key: record.key ?? new Uint8Array(0), sum: 0 + number, count: 1, latest: record.timestamp });
      } else {
        group.sum += number;
        group.count += 1;
        group.latest = Math.max(group.latest, record.timestamp);
      }
    }
    for (const { key, sum, count, latest } of groups.values()) {
      out.emit(rustDisplay(sum / count), { key, timestamp: latest });
    }
  }
}

export const processor = sluice.processor(Average);
