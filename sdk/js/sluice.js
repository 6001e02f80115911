// Write Sluice stages in JavaScript: records in, records out, without the
// columnar batch encoding of the WIT contract (`wit/plugin.wit`).
//
// A stage is a class whose constructor takes the config and which has either
// `processRecord(record, out)`, called for each input record, or
// `process(records, out)`, called once per batch with the array of records.
// Export it as the world's `processor` from the module componentize-js
// builds (`app.js`, beside a copy of this file):
//
//     import * as sluice from './sluice.js';
//
//     class Shout {
//       constructor(config) { config.allowOnly([]); }
//       processRecord(record, out) { out.emit(record.text.toUpperCase()); }
//     }
//
//     export const processor = sluice.processor(Shout);
//
// and build it with `sluice plugin build DIR` (or `componentize-js app.js -w
// wit -n stage -d http fetch-event -o shout.wasm`).
//
// Three ways to fail, as in the Rust SDK:
// - throw a `ConfigError` from the constructor: the pipeline does not start,
//   and the message is shown as is (name the key and the value);
// - throw a `RecordError` (or call `out.fail`) for one record: it alone goes
//   to the dead letters with the message; `record.text` throws one for a
//   value that is not UTF-8;
// - throw anything else: the whole batch fails and the stage's `on_error`
//   policy applies to it.
//
// Timestamps are numbers of milliseconds since the Unix epoch (exact below
// 2^53, some 285,000 years).

import { log as hostLog } from 'sluice:plugin/log@0.1.0';
import * as hostState from 'sluice:plugin/state@0.1.0';

/** The constructor rejects the stage's config; the message names the key. */
export class ConfigError extends Error {}

/** One record cannot be processed; the message says why, for a human. */
export class RecordError extends Error {}

const encoder = new TextEncoder();
// `ignoreBOM`: a leading U+FEFF is part of the text, as in Rust.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const EMPTY = new Uint8Array(0);
// Rust's `f64` decimal syntax.
const DECIMAL = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

/** The stage's `config` table from the pipeline file: text keys and values
 * (numbers and booleans arrive as their text). */
export class Config {
  constructor(pairs) {
    this.map = new Map(pairs);
  }

  has(key) {
    return this.map.has(key);
  }

  /** The value of `key`, or `fallback` when it is absent. */
  get(key, fallback = undefined) {
    return this.map.has(key) ? this.map.get(key) : fallback;
  }

  /** The value of `key`; a `ConfigError` when it is absent. */
  require(key) {
    if (!this.map.has(key)) throw new ConfigError(`missing required config key \`${key}\``);
    return this.map.get(key);
  }

  /** `key` as `true` or `false` (the Rust SDK's message otherwise). */
  bool(key, fallback = false) {
    if (!this.map.has(key)) return fallback;
    const value = this.map.get(key);
    if (value !== 'true' && value !== 'false') {
      throw new ConfigError(
        `\`${key}\`: \`${value}\` is not a valid boolean (provided string was not \`true\` or \`false\`)`,
      );
    }
    return value === 'true';
  }

  /** `key` as a finite number in Rust's decimal syntax (`Number()` alone
   * would also read `0x10` and blanks); a `ConfigError` naming it
   * otherwise. */
  number(key, fallback = undefined) {
    if (!this.map.has(key)) return fallback;
    const value = this.map.get(key);
    const number = DECIMAL.test(value) ? Number(value) : NaN;
    if (!Number.isFinite(number)) {
      throw new ConfigError(`\`${key}\`: \`${value}\` is not a valid number (invalid float literal)`);
    }
    return number;
  }

  /** Rejects any key not in `allowed`, naming it and the allowed ones. */
  allowOnly(allowed) {
    const unknown = [...this.map.keys()].sort().find((key) => !allowed.includes(key));
    if (unknown === undefined) return;
    const hint = allowed.length
      ? `allowed keys: ${allowed.map((k) => `\`${k}\``).join(', ')}`
      : 'this plugin takes no config keys';
    throw new ConfigError(`unknown config key \`${unknown}\` (${hint})`);
  }
}

/** A `state` call failed: the entry is too large (`tooLarge`; fail that
 * record alone), or the store is unavailable. */
export class StateError extends Error {
  constructor(message, tooLarge) {
    super(message);
    this.tooLarge = tooLarge;
  }
}

/** The stage's keyed state, kept by the engine across batches, traps,
 * restarts and new versions (see `wit/plugin.wit`, interface `state`). Keys
 * and values are bytes (strings are encoded as UTF-8); a batch's writes
 * count only when its `process` succeeds. */
export const state = {
  /** The value under `key` (a `Uint8Array`), or `undefined`. */
  get(key) {
    return callState(() => hostState.get(toBytes(key)));
  },
  /** Stores `value` under `key`. */
  put(key, value) {
    callState(() => hostState.put(toBytes(key), toBytes(value)));
  },
  /** Removes `key`, if present. */
  delete(key) {
    hostState.delete(toBytes(key));
  },
};

function callState(call) {
  try {
    return call();
  } catch (e) {
    // componentize-js throws a `result`'s error as an Error whose `payload`
    // is the variant.
    const variant = e && e.payload !== undefined ? e.payload : e;
    if (variant && typeof variant.tag === 'string') {
      throw new StateError(variant.val, variant.tag === 'too-large');
    }
    throw e;
  }
}

/** One input record: `value` and `key` are `Uint8Array`s (`key` is `null`
 * without one), `headers` an array of `[name, value]` byte pairs,
 * `timestamp` its event time and `index` its position in the batch. */
export class Record {
  constructor(index, value, key, timestamp, headers) {
    this.index = index;
    this.value = value;
    this.key = key;
    this.timestamp = timestamp;
    this.headers = headers;
  }

  /** The value as text; a `RecordError` when it is not UTF-8. */
  get text() {
    return decodeText(this.value, 'value');
  }

  /** The key as text (`null` without a key); a `RecordError` when it is
   * not UTF-8. */
  get keyText() {
    return this.key === null ? null : decodeText(this.key, 'key');
  }
}

/** What the stage emits for a batch, and the records that failed. `info`
 * describes the batch: `pipeline`, `stage`, `id`, `time` (the start of its
 * interval, in milliseconds) and `interval`. */
export class Output {
  constructor(info) {
    this.info = { ...info, id: Number(info.id), time: Number(info.time), interval: Number(info.interval) };
    this.values = [];
    this.keys = [];
    this.timestamps = [];
    this.headers = [];
    this.failures = [];
    this.current = null;
  }

  /** Emits a record. `value` and `key` are strings (encoded as UTF-8) or
   * `Uint8Array`s; `timestamp` defaults to that of the record being
   * processed (`processRecord`), else to the batch's time; `headers` is an
   * array of `[name, value]` pairs. */
  emit(value, { key = null, timestamp, headers = null } = {}) {
    if (timestamp === undefined) timestamp = this.current ? this.current.timestamp : this.info.time;
    this.values.push(toBytes(value));
    this.keys.push(key === null ? null : toBytes(key));
    this.timestamps.push(timestamp);
    this.headers.push(headers && headers.length ? headers.map(([n, v]) => [toBytes(n), toBytes(v)]) : null);
  }

  /** Emits `record` as it came in. */
  forward(record) {
    this.values.push(record.value);
    this.keys.push(record.key);
    this.timestamps.push(record.timestamp);
    this.headers.push(record.headers.length ? record.headers : null);
  }

  /** Sends one input record (a `Record` or its index) to the dead letters
   * with `message`; the rest of the batch goes on. */
  fail(record, message) {
    const index = record instanceof Record ? record.index : record;
    this.failures.push({ index, message: String(message) });
  }

  get length() {
    return this.values.length;
  }

  encode() {
    const n = this.values.length;
    let keys = emptyColumn();
    let keysAbsent = EMPTY;
    if (this.keys.some((k) => k !== null)) {
      keys = column(this.keys.map((k) => (k === null ? EMPTY : k)));
      const bits = new Uint8Array((n + 7) >> 3);
      this.keys.forEach((k, i) => {
        if (k === null) bits[i >> 3] |= 1 << (i & 7);
      });
      keysAbsent = bits;
    }
    let headerOffsets = new Uint32Array(0);
    let headerNames = emptyColumn();
    let headerValues = emptyColumn();
    if (this.headers.some((h) => h !== null)) {
      headerOffsets = new Uint32Array(n + 1);
      const flat = [];
      this.headers.forEach((h, i) => {
        if (h) flat.push(...h);
        headerOffsets[i + 1] = flat.length;
      });
      headerNames = column(flat.map(([name]) => name));
      headerValues = column(flat.map(([, value]) => value));
    }
    return {
      batch: {
        timestamps: BigUint64Array.from(this.timestamps, (t) => BigInt(t)),
        values: column(this.values),
        keys,
        keysAbsent,
        headerOffsets,
        headerNames,
        headerValues,
      },
      failures: this.failures,
    };
  }
}

/** Lines in the engine's log, tagged with pipeline, stage and plugin. Each
 * is a call across the boundary: log per batch, not per record. */
export const log = {
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

/** The world's `processor` export running `Stage`: export it as
 * `processor` from the app module. */
export function processor(Stage) {
  const perRecord = typeof Stage.prototype.processRecord === 'function';
  if (!perRecord && typeof Stage.prototype.process !== 'function') {
    throw new TypeError(`${Stage.name} has neither processRecord nor process`);
  }
  let stage = null;
  return {
    init(config) {
      try {
        stage = new Stage(new Config(config));
      } catch (e) {
        if (e instanceof ConfigError) throw { tag: 'invalid-config', val: e.message };
        throw failed(e);
      }
    },

    process(info, batch) {
      if (stage === null) throw { tag: 'failed', val: 'process called before init' };
      const out = new Output(info);
      try {
        const records = decode(batch);
        if (perRecord) {
          for (const record of records) {
            out.current = record;
            try {
              stage.processRecord(record, out);
            } catch (e) {
              if (!(e instanceof RecordError)) throw e;
              out.fail(record, e.message);
            }
          }
          out.current = null;
        } else {
          stage.process(records, out);
        }
      } catch (e) {
        throw failed(e);
      }
      return out.encode();
    },
  };
}

function failed(e) {
  return { tag: 'failed', val: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
}

function decode(batch) {
  const n = batch.timestamps.length;
  const values = entries(batch.values, n);
  let keys = null;
  // A column with no entries has offsets `[]` or `[0]`.
  if (batch.keys.offsets.length > 1) {
    keys = entries(batch.keys, n);
    const absent = batch.keysAbsent;
    for (let i = 0; i < n; i++) {
      if ((i >> 3) < absent.length && (absent[i >> 3] >> (i & 7)) & 1) keys[i] = null;
    }
  }
  let headers = null;
  const at = batch.headerOffsets;
  if (at.length > 1) {
    const names = entries(batch.headerNames, at[n]);
    const hvalues = entries(batch.headerValues, at[n]);
    headers = [];
    for (let i = 0; i < n; i++) {
      const pairs = [];
      for (let h = at[i]; h < at[i + 1]; h++) pairs.push([names[h], hvalues[h]]);
      headers.push(pairs);
    }
  }
  const records = new Array(n);
  for (let i = 0; i < n; i++) {
    records[i] = new Record(i, values[i], keys ? keys[i] : null, Number(batch.timestamps[i]), headers ? headers[i] : []);
  }
  return records;
}

function entries({ data, offsets }, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = data.subarray(offsets[i], offsets[i + 1]);
  return out;
}

function emptyColumn() {
  return { data: EMPTY, offsets: new Uint32Array(0) };
}

function column(parts) {
  if (!parts.length) return emptyColumn();
  const offsets = new Uint32Array(parts.length + 1);
  let length = 0;
  parts.forEach((p, i) => {
    length += p.length;
    offsets[i + 1] = length;
  });
  const data = new Uint8Array(length);
  parts.forEach((p, i) => data.set(p, offsets[i]));
  return { data, offsets };
}

function toBytes(value) {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

function decodeText(bytes, what) {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new RecordError(`${what} is not valid UTF-8 at byte ${invalidUtf8At(bytes)}`);
  }
}

/** The offset of the first byte of `bytes` that does not start a valid UTF-8
 * sequence (Rust's `Utf8Error::valid_up_to`), or -1 when all of it is valid.
 * (A fatal `TextDecoder` rejects exactly the same byte strings.) */
export function invalidUtf8At(bytes) {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let n;
    let lo = 0x80;
    let hi = 0xbf;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      if (b === 0xe0) lo = 0xa0; // no overlong encodings
      if (b === 0xed) hi = 0x9f; // no surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f; // nothing past U+10FFFF
    } else return i;
    for (let k = 1; k <= n; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < lo || c > hi) return i;
      lo = 0x80;
      hi = 0xbf;
    }
    i += n + 1;
  }
  return -1;
}
