// `{{name}}`: a Sluice stage. Each record's value with the config's `suffix`
// (default `!`) appended, keeping its key and timestamp; a value that is not
// UTF-8 goes to the dead letters on its own (`record.text` throws a
// `RecordError` for it).
//
// `sluice.js` (the helper that hides the batch encoding) is added by
// `sluice plugin build`; a copy of your own beside this file takes its place.

import * as sluice from './sluice.js';

class Stage {
  constructor(config) {
    // First, so that a typo in a key is an error, not a default.
    config.allowOnly(['suffix']);
    this.suffix = config.get('suffix', '!');
  }

  processRecord(record, out) {
    out.emit(record.text + this.suffix, { key: record.key });
  }
}

export const processor = sluice.processor(Stage);
